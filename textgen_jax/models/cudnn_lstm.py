"""cuDNN's LSTM (`jax.experimental.rnn`) for teacher-forced passes on a GPU, on our parameters.

Shape key: B batch, T time, E input features, H hidden units, G = 4H gates, D directions.

Parameters stay in textgen-jax's layout (per layer and direction: input_projection kernel
[E, G] and bias [G], recurrent_kernel [H, G]; gates i, f, g, o, which is cuDNN's order too), so
checkpoints move between backends; they are packed into cuDNN's flat weight vector at each
call, differentiably, so gradients reach them unchanged. Our single bias is cuDNN's b_ih; its
b_hh is zero.

Limits of the installed jax's `jax/experimental/rnn.py` (read for jax 0.10): float32 only (no
bfloat16 path), lowered for CUDA and ROCm only, reverse-mode gradients only, no batching rule
(no `jax.vmap`), int32 `seq_lengths`, dropout only inside cuDNN (unused: ours runs between
layers, one cuDNN call per layer, so both backends drop the same units). cuDNN zeroes outputs
past each sequence's length where the scan holds the last state; nothing reads them.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.experimental import rnn

from textgen_jax.errors import TextgenError
from textgen_jax.models.recurrence import Carry

BACKENDS = ("auto", "scan", "cudnn")
LayerWeights = tuple[jax.Array, jax.Array, jax.Array]  # (kernel_ExG, bias_G, recurrent_HxG)

# The kernel a cuDNN layer calls; tests put `reference_lstm` here to run the same path on CPU.
lstm_kernel = rnn.lstm


def cudnn_available() -> bool:
  """Whether this JAX runs on a GPU whose LSTM lowering (cuDNN, or MIOpen on ROCm) is built."""
  return getattr(rnn, "gpu_rnn", None) is not None and jax.default_backend() == "gpu"


def resolve_backend(name: str, dtype: str, cell: str = "lstm") -> str:
  """ "auto" -> "cudnn" on a GPU for float32 LSTMs, else "scan"; "cudnn" where it cannot run
  is a one-line error naming the flag."""
  if name not in BACKENDS:
    raise TextgenError(f"--config.model.lstm_backend={name!r}: choose auto, scan or cudnn")
  if name == "cudnn":
    if cell != "lstm":
      raise TextgenError(
        f"--config.model.lstm_backend=cudnn: jax.experimental.rnn has cuDNN's LSTM only, not "
        f"the {cell.upper()} (--config.model.cell={cell}); use auto or scan"
      )
    if not cudnn_available():
      raise TextgenError(
        "--config.model.lstm_backend=cudnn: cuDNN's LSTM needs a CUDA GPU and "
        f"this JAX runs on {jax.default_backend()}; use auto or scan"
      )
    if dtype != "float32":
      raise TextgenError(
        f"--config.model.lstm_backend=cudnn: cuDNN's LSTM in JAX is float32 "
        f"only (--config.model.dtype={dtype}); use auto or scan"
      )
  if name == "auto":
    return "cudnn" if cell == "lstm" and cudnn_available() and dtype == "float32" else "scan"
  return name


def pack_weights(layers: Sequence[LayerWeights]) -> jax.Array:
  """cuDNN's flat weights for these pseudo-layers (forward, then backward, per layer):
  W_ih [G, E] and W_hh [G, H] of each in turn, then b_ih and b_hh of each in turn."""
  linear = [w.T for kernel_ExG, _, recurrent_HxG in layers for w in (kernel_ExG, recurrent_HxG)]
  biases = [b for _, bias_G, _ in layers for b in (bias_G, jnp.zeros_like(bias_G))]
  return jnp.concatenate([w.reshape(-1) for w in linear + biases]).astype(jnp.float32)


def lstm_layer(
  x_BxTxE: jax.Array,
  carries: Sequence[Carry],
  lengths_B: jax.Array | None,
  weights: Sequence[LayerWeights],
) -> tuple[list[Carry], jax.Array]:
  """One layer, one direction per entry of weights (forward, backward); returns each
  direction's final carry (at each sequence's true end) and outputs y_BxTx(D*H)."""
  batch_size, time_steps, input_size = x_BxTxE.shape
  hidden_size = weights[0][2].shape[0]
  if lengths_B is None:
    lengths_B = jnp.full((batch_size,), time_steps, jnp.int32)
  # A sequence of length 0 (a filler row) keeps its initial state, as in the scan; cuDNN is
  # given length 1 for it and its result discarded.
  empty_B = lengths_B == 0
  c0_DxBxH = jnp.stack([c for c, _ in carries])
  h0_DxBxH = jnp.stack([h for _, h in carries])
  y_BxTxDH, h_DxBxH, c_DxBxH = lstm_kernel(
    x_BxTxE.astype(jnp.float32),
    h0_DxBxH,
    c0_DxBxH,
    pack_weights(weights),
    jnp.maximum(lengths_B, 1).astype(jnp.int32),
    input_size=input_size,
    hidden_size=hidden_size,
    num_layers=1,
    dropout=0.0,
    bidirectional=len(weights) == 2,
  )
  keep = lambda new, old: jnp.where(empty_B[:, None], old, new)
  finals = [
    (keep(c_DxBxH[d], c0_DxBxH[d]), keep(h_DxBxH[d], h0_DxBxH[d])) for d in range(len(weights))
  ]
  return finals, y_BxTxDH


def reference_lstm(
  x,
  h_0,
  c_0,
  weights,
  seq_lengths,
  input_size,
  hidden_size,
  num_layers,
  dropout,
  bidirectional,
  precision=None,
):
  """`rnn.lstm` computed by its pure-JAX reference `rnn.lstm_ref` (runs anywhere): the packed
  weights unpacked by jax's own `unpack_lstm_weights`, so a test of our packing against it
  checks the layout cuDNN reads."""
  del precision
  w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(
    weights, input_size, hidden_size, num_layers, bidirectional
  )
  return rnn.lstm_ref(
    x,
    h_0,
    c_0,
    w_ih,
    w_hh,
    b_ih,
    b_hh,
    seq_lengths,
    input_size,
    hidden_size,
    num_layers,
    dropout,
    bidirectional,
  )
