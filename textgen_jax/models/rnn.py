"""Recurrent layers (LSTM and GRU) for teacher-forced passes and for one-token decoding steps.

Shape key: T time, B batch, E input features, H hidden units, V vocabulary, G fused gates (4H
for the LSTM, 3H for the GRU).

A layer's carry is a tuple whose last entry is its output h: (c, h) for the LSTM, (h,) for the
GRU; code outside this file reads `carry[-1]` and maps over the rest.

Teacher-forced passes are time-major ([T, B, ...]), the layout `lax.scan` walks: models
transpose token ids (cheap) rather than activations. The input projection of every timestep is
one [T*B, E] x [E, G] matmul hoisted out of the time loop; only the recurrent [B, H] x [H, G]
matmul runs inside it (textgen_jax/models/recurrence.py, with its hand-written backward pass).
A first layer whose inputs are token embeddings without dropout may instead look its input
gates up in a [V, G] table (see `uses_input_table`). Matmuls may run in bfloat16 while the
cell state stays float32.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from textgen_jax.models import cudnn_lstm
from textgen_jax.models.dropout import Dropout
from textgen_jax.models.recurrence import (
  Carry,
  gru_recurrence,
  gru_step,
  lstm_recurrence,
  lstm_step,
)

CELLS = ("lstm", "gru")  # What model.cell may be.


# Plain autodiff's matmul with float32 accumulation and result (the models used it before
# dense_dot_general; experiments/bench/projection_ab.py compares the two).
dot_general_float32 = functools.partial(jax.lax.dot_general, preferred_element_type=jnp.float32)


def transposed(a_MxN: jax.Array) -> jax.Array:
  """a.T laid out row-major. XLA lays a plain transpose out column-major, and XLA:CPU's matmul
  library (YNNPACK) takes row-major operands only: a bfloat16 matmul with a transposed operand
  was computed in float32 instead, both operands converted, at half the bfloat16 rate (the PTB
  VAE's two vocabulary-gradient matmuls: 61 ms each of a 220 ms step). Transposed through a
  unit axis, the result is an ordinary row-major array."""
  return jax.lax.transpose(a_MxN[:, :, None], (1, 0, 2)).reshape(a_MxN.shape[::-1])


@jax.custom_vjp
def _matmul(x_MxK: jax.Array, kernel_KxN: jax.Array) -> jax.Array:
  return jnp.dot(x_MxK, kernel_KxN, preferred_element_type=jnp.float32)


def _matmul_fwd(x_MxK, kernel_KxN):
  return _matmul(x_MxK, kernel_KxN), (x_MxK, kernel_KxN)


def _matmul_bwd(residuals, dy_MxN):
  x_MxK, kernel_KxN = residuals
  # The transposes are materialised (the barrier stops XLA folding them into the dots), so
  # both gradient matmuls are plain [M, K] x [K, N] ones, also when vmapped over a population's
  # members: folded, XLA:CPU made batched dots with transposed operands and copied the
  # [M, V] logits' gradient into two more layouts (profiled at the PTB VAE's shape, N = 2).
  kernel_NxK, x_KxM = jax.lax.optimization_barrier((transposed(kernel_KxN), transposed(x_MxK)))
  # In the inputs' dtype, as the forward matmul: bfloat16 matmuls accumulating in float32 (the
  # gradient of a float32 result rounded once to bfloat16, as PyTorch's autocast does).
  dy_MxN = dy_MxN.astype(x_MxK.dtype)
  dx_MxK = jnp.dot(dy_MxN, kernel_NxK, preferred_element_type=jnp.float32)
  dkernel_KxN = jnp.dot(x_KxM, dy_MxN, preferred_element_type=jnp.float32)
  return dx_MxK.astype(x_MxK.dtype), dkernel_KxN.astype(kernel_KxN.dtype)


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def dense_dot_general(
  lhs: jax.Array, rhs: jax.Array, dimension_numbers: Any, precision: Any = None
) -> jax.Array:
  """nn.Dense's dot_general for the layers that run in the model's dtype (input, feed and
  vocabulary projections): inputs in that dtype, products accumulated and returned in float32,
  so that in bfloat16 no activation is converted around the matmul (a no-op in float32), and
  gradients computed by the same row-major bfloat16 matmuls (_matmul_bwd)."""
  del precision
  if dimension_numbers != (((lhs.ndim - 1,), (0,)), ((), ())):
    raise ValueError(f"dense_dot_general: not nn.Dense's contraction {dimension_numbers}")
  y_MxN = _matmul(lhs.reshape(-1, lhs.shape[-1]), rhs)
  return y_MxN.reshape(lhs.shape[:-1] + rhs.shape[-1:])


def forget_bias_init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
  """Zero biases except +1 on the forget gate, so early training remembers (Jozefowicz 2015)."""
  del key
  hidden_size = shape[-1] // 4
  return jnp.zeros(shape, dtype).at[hidden_size : 2 * hidden_size].set(1.0)


def zero_carry(batch_size: int, hidden_size: int, cell: str = "lstm") -> Carry:
  zeros_BxH = jnp.zeros((batch_size, hidden_size), jnp.float32)
  return (zeros_BxH, zeros_BxH) if cell == "lstm" else (zeros_BxH,)


def gate_count(cell: str) -> int:
  """Fused gates per hidden unit: the width of a layer's input projection is this times H."""
  return {"lstm": 4, "gru": 3}[cell]


def reverse_padded(x_TxBx_: jax.Array, lengths_B: jax.Array) -> jax.Array:
  """Reverses each sequence (time-major) within its length; padding stays at the end."""
  time_steps = x_TxBx_.shape[0]
  t_T = jnp.arange(time_steps)
  source_TxB = jnp.where(
    t_T[:, None] < lengths_B[None, :], lengths_B[None, :] - 1 - t_T[:, None], t_T[:, None]
  )
  return jnp.take_along_axis(
    x_TxBx_, source_TxB.reshape(source_TxB.shape + (1,) * (x_TxBx_.ndim - 2)), axis=0
  )


def uses_input_table(vocab_size: int, num_tokens: int) -> bool:
  """Whether a teacher-forced pass should gather its first-layer input gates from a [V, G]
  table rather than project each of num_tokens (= T*B) embeddings.

  The table costs V*E*G multiply-adds (and as much again twice in the backward pass) where the
  projection costs T*B*E*G; the gather and its scatter-add gradient are memory-bound and cheap.
  So: when the vocabulary is smaller than the batch's token count (a character-level model).
  """
  return vocab_size < num_tokens


class LSTMLayer(nn.Module):
  """One LSTM layer with a hoisted input projection and a fused-gate recurrent kernel."""

  hidden_size: int
  dtype: Any = jnp.float32  # matmul dtype; the cell state is float32 regardless.
  scan_unroll: int = 1  # Timesteps per iteration of the compiled time loop.

  def setup(self):
    self.input_projection = nn.Dense(
      4 * self.hidden_size,
      dtype=self.dtype,
      bias_init=forget_bias_init,
      dot_general=dense_dot_general,
      name="input_projection",
    )
    self.recurrent_kernel = self.param(
      "recurrent_kernel", nn.initializers.orthogonal(), (self.hidden_size, 4 * self.hidden_size)
    )

  def __call__(
    self,
    x_TxBxE: jax.Array | None,
    carry: Carry,
    mask_TxB: jax.Array | None = None,
    gates_x_TxBxG: jax.Array | None = None,
  ) -> tuple[Carry, jax.Array]:
    """Runs over all timesteps; where mask is False the carry is held, not updated.

    Holding the carry makes the final carry the state after each sequence's last real token.
    gates_x, if given, replaces input_projection(x) (see `input_table`).
    Returns (final carry, hidden states h_TxBxH).
    """
    if gates_x_TxBxG is None:
      gates_x_TxBxG = self.input_projection(x_TxBxE)
    return lstm_recurrence(
      jnp.dtype(self.dtype), self.scan_unroll, gates_x_TxBxG, self.recurrent_kernel, carry, mask_TxB
    )

  def weights(self, input_size: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(input kernel [E, G], bias [G], recurrent kernel [H, G]), for cuDNN's LSTM."""
    if self.is_initializing():  # Creates them; cuDNN's path never calls the projection.
      self.input_projection(jnp.zeros((1, input_size), self.dtype))
    projection = self.input_projection.variables["params"]
    return projection["kernel"], projection["bias"], self.recurrent_kernel

  def input_table(self, inputs_VxE: jax.Array) -> jax.Array:
    """input_projection of every row of inputs_VxE (the embedding table): [V, G]."""
    return self.input_projection(inputs_VxE)

  def step(
    self, carry: Carry, x_BxE: jax.Array | None = None, gates_x_BxG: jax.Array | None = None
  ) -> Carry:
    """One timestep, for decoding; returns the new carry (its h is the output).

    Takes the input x, or its projection gates_x = input_projection(x) when the caller has
    precomputed it (a decoder whose inputs come from a small vocabulary looks it up in a table).
    """
    if gates_x_BxG is None:
      gates_x_BxG = self.input_projection(x_BxE)
    c_BxH, h_BxH, _ = lstm_step(jnp.dtype(self.dtype), gates_x_BxG, self.recurrent_kernel, carry)
    return c_BxH, h_BxH


class GRULayer(nn.Module):
  """One GRU layer, laid out as LSTMLayer: a hoisted input projection [E, 3H] (gates r, z, n),
  a fused recurrent kernel [H, 3H] and the candidate's recurrent bias b_hn [H]."""

  hidden_size: int
  dtype: Any = jnp.float32
  scan_unroll: int = 1

  def setup(self):
    self.input_projection = nn.Dense(
      3 * self.hidden_size, dtype=self.dtype, dot_general=dense_dot_general, name="input_projection"
    )
    self.recurrent_kernel = self.param(
      "recurrent_kernel", nn.initializers.orthogonal(), (self.hidden_size, 3 * self.hidden_size)
    )
    self.recurrent_bias = self.param("recurrent_bias", nn.initializers.zeros, (self.hidden_size,))

  def __call__(
    self,
    x_TxBxE: jax.Array | None,
    carry: Carry,
    mask_TxB: jax.Array | None = None,
    gates_x_TxBxG: jax.Array | None = None,
  ) -> tuple[Carry, jax.Array]:
    """As LSTMLayer.__call__: (final carry, h_TxBxH), the carry held where mask is False."""
    if gates_x_TxBxG is None:
      gates_x_TxBxG = self.input_projection(x_TxBxE)
    return gru_recurrence(
      jnp.dtype(self.dtype),
      self.scan_unroll,
      gates_x_TxBxG,
      self.recurrent_kernel,
      self.recurrent_bias,
      carry,
      mask_TxB,
    )

  def input_table(self, inputs_VxE: jax.Array) -> jax.Array:
    """input_projection of every row of inputs_VxE (the embedding table): [V, G]."""
    return self.input_projection(inputs_VxE)

  def step(
    self, carry: Carry, x_BxE: jax.Array | None = None, gates_x_BxG: jax.Array | None = None
  ) -> Carry:
    """One timestep, for decoding, as LSTMLayer.step."""
    if gates_x_BxG is None:
      gates_x_BxG = self.input_projection(x_BxE)
    h_BxH = gru_step(
      jnp.dtype(self.dtype), gates_x_BxG, self.recurrent_kernel, self.recurrent_bias, carry
    )[0]
    return (h_BxH,)


LAYERS = {"lstm": LSTMLayer, "gru": GRULayer}


class StackedRNN(nn.Module):
  """num_layers recurrent layers of one cell, dropout between them, optionally bidirectional."""

  hidden_size: int
  num_layers: int = 1
  dropout_rate: Any = 0.0  # A float, or a population member's traced rate.
  bidirectional: bool = False
  dtype: Any = jnp.float32
  scan_unroll: int = 1
  backend: str = "scan"  # "scan" or "cudnn" (resolved by cudnn_lstm.resolve_backend).
  cell: str = "lstm"  # "lstm" or "gru".

  def setup(self):
    layer = LAYERS[self.cell]
    self.forward_layers = [
      layer(self.hidden_size, self.dtype, self.scan_unroll, name=f"forward_{i}")
      for i in range(self.num_layers)
    ]
    if self.bidirectional:
      self.backward_layers = [
        layer(self.hidden_size, self.dtype, self.scan_unroll, name=f"backward_{i}")
        for i in range(self.num_layers)
      ]
    self.dropout = Dropout(self.dropout_rate)

  def __call__(
    self,
    x_TxBxE: jax.Array | None,
    lengths_B: jax.Array | None,
    initial_carries: Sequence[Carry] | None = None,
    deterministic: bool = True,
    first_gates_x: Sequence[jax.Array] | None = None,
  ) -> tuple[list[Carry], jax.Array]:
    """Returns each layer's final carry (at each sequence's true end) and the top outputs
    out_TxBxH (time-major in and out).

    lengths_B None: every timestep is real (a teacher-forced decoder), so no step is masked.
    first_gates_x: the first layer's input gates per direction ([T, B, G], the backward one in
    reversed order), replacing x (see `input_tables`).
    A bidirectional layer's carry concatenates forward and backward: [B, 2H] each.
    """
    time_steps, batch_size = (x_TxBxE if first_gates_x is None else first_gates_x[0]).shape[:2]
    mask_TxB = None
    if lengths_B is not None:
      mask_TxB = jnp.arange(time_steps)[:, None] < lengths_B[None, :]
    elif self.bidirectional:
      raise ValueError("a bidirectional stack needs the sequences' lengths")
    if initial_carries is None:
      initial_carries = [self.zero_carry(batch_size)] * self.num_layers
    if self.backend == "cudnn":
      return self._cudnn(x_TxBxE, lengths_B, initial_carries, deterministic)
    final_carries = []
    for i in range(self.num_layers):
      gates = first_gates_x if i == 0 and first_gates_x is not None else (None, None)
      if i > 0:
        x_TxBxE = self.dropout(x_TxBxE, deterministic=deterministic)
      carry, out_TxBxH = self.forward_layers[i](x_TxBxE, initial_carries[i], mask_TxB, gates[0])
      if self.bidirectional:
        back_x = None if gates[1] is not None else reverse_padded(x_TxBxE, lengths_B)
        back_carry, back_out_TxBxH = self.backward_layers[i](
          back_x, self.zero_carry(batch_size), mask_TxB, gates[1]
        )
        carry = jax.tree.map(lambda a, b: jnp.concatenate([a, b], -1), carry, back_carry)
        out_TxBxH = jnp.concatenate([out_TxBxH, reverse_padded(back_out_TxBxH, lengths_B)], -1)
      final_carries.append(carry)
      x_TxBxE = out_TxBxH
    return final_carries, x_TxBxE

  def zero_carry(self, batch_size: int) -> Carry:
    """One layer's all-zero carry, of this stack's cell."""
    return zero_carry(batch_size, self.hidden_size, self.cell)

  def _cudnn(
    self,
    x_TxBxE: jax.Array,
    lengths_B: jax.Array | None,
    initial_carries: Sequence[Carry],
    deterministic: bool,
  ) -> tuple[list[Carry], jax.Array]:
    """The same layers through cuDNN's kernel, one call per layer (batch-major, as it wants)."""
    x_BxTxE = jnp.swapaxes(x_TxBxE, 0, 1)
    final_carries = []
    for i in range(self.num_layers):
      if i > 0:
        x_BxTxE = self.dropout(x_BxTxE, deterministic=deterministic)
      layers = [self.forward_layers[i]] + ([self.backward_layers[i]] if self.bidirectional else [])
      carries = [initial_carries[i]] + [zero_carry(x_BxTxE.shape[0], self.hidden_size)] * (
        len(layers) - 1
      )
      finals, x_BxTxE = cudnn_lstm.lstm_layer(
        x_BxTxE, carries, lengths_B, [layer.weights(x_BxTxE.shape[-1]) for layer in layers]
      )
      final_carries.append(jax.tree.map(lambda *parts: jnp.concatenate(parts, -1), *finals))
    return final_carries, jnp.swapaxes(x_BxTxE, 0, 1)

  def input_tables(self, inputs_VxE: jax.Array) -> list[jax.Array]:
    """The first layer's input gates for every row of inputs_VxE, per direction: [V, G] each."""
    layers = [self.forward_layers[0]] + ([self.backward_layers[0]] if self.bidirectional else [])
    return [layer.input_table(inputs_VxE) for layer in layers]

  def step(
    self,
    carries: Sequence[Carry],
    x_BxE: jax.Array | None = None,
    first_gates_x_BxG: jax.Array | None = None,
    deterministic: bool = True,
  ) -> tuple[list[Carry], jax.Array]:
    """One timestep through all layers (unidirectional only); dropout between layers only when
    not deterministic (a teacher-forced pass that steps, as input feeding does).

    first_gates_x_BxG, if given, replaces the first layer's input projection of x_BxE.
    """
    new_carries = []
    for i, (layer, carry) in enumerate(zip(self.forward_layers, carries)):
      if i > 0:
        x_BxE = self.dropout(x_BxE, deterministic=deterministic)
      carry = layer.step(carry, x_BxE, first_gates_x_BxG if i == 0 else None)
      new_carries.append(carry)
      x_BxE = carry[-1]
    return new_carries, x_BxE
