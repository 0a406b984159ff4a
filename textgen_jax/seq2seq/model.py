"""LSTM encoder-decoder (Sutskever et al. 2014) trained with teacher forcing, optionally with
attention over the encoder's outputs (Luong et al. 2015, Bahdanau et al. 2015; see
textgen_jax/models/attention.py) and Luong's input feeding.

Shape key: B batch, S source time, T target time, E embedding, H hidden, V vocabulary, G gates
(4H for the LSTM, 3H for the GRU: `model.cell`).
The encoder's final state (at each source's true last token) starts the decoder; when sizes
differ (a bidirectional encoder, or different hidden sizes) a Dense "bridge" projects it.

The decoder's state is what `decode_step` carries from token to token: without attention the
LSTM carries alone (as before attention existed, so old workdirs load unchanged); with it an
`AttentiveState` that also holds the source's memory and, with input feeding, the previous
attentional vector h~ (fed to the next step's first layer beside the token's embedding).
"""

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from textgen_jax.errors import TextgenError
from textgen_jax.models import cudnn_lstm
from textgen_jax.models.attention import Attention, Memory
from textgen_jax.models.dropout import Dropout
from textgen_jax.models.rnn import (
  Carry,
  StackedRNN,
  gate_count,
  reverse_padded,
  uses_input_table,
  dense_dot_general,
)
from textgen_jax.models.tokens import TiedOutput, TokenInputs, shift_right
from textgen_jax.models.static import is_static_zero


@dataclasses.dataclass(frozen=True)
class Seq2SeqConfig:
  """Model hyperparameters; built from the `model` section of an experiment config."""

  source_vocab_size: int
  target_vocab_size: int
  embed_dim: int = 256
  hidden_size: int = 256
  encoder_layers: int = 1
  decoder_layers: int = 1
  bidirectional: bool = False
  dropout_rate: Any = 0.0  # A float, or a population member's traced rate.
  input_encoding: str = "embedding"  # "embedding", or "one_hot" as in the Keras seq2seq seed.
  dtype: str = "float32"  # matmul dtype: "float32" or "bfloat16".
  scan_unroll: int = 1  # Timesteps per iteration of the teacher-forced time loop.
  lstm_backend: str = "auto"  # Teacher-forced LSTM: "scan", "cudnn" or "auto" (cudnn on GPUs).
  cell: str = "lstm"  # "lstm" or "gru" (models/rnn.py).
  attention: str = "none"  # "none", "dot", "general" or "additive" (models/attention.py).
  input_feeding: bool = False  # Feed h~ to the next decoder step (Luong); needs attention.
  # The output layer's kernel is the target embedding, transposed (Press and Wolf 2017): one
  # [V, E] array; the output layer first projects the decoder's outputs where hidden_size
  # differs from embed_dim. Needs embedding inputs (one-hot rows are not parameters).
  tie_embeddings: bool = False
  # Source and target read one embedding table (a joint vocabulary: data.tokenizer=sentencepiece).
  share_embeddings: bool = False


class AttentiveState(NamedTuple):
  """The decoder's state with attention: tiled per beam hypothesis like any carry."""

  carries: list[Carry]  # One per decoder layer: (c, h) for the LSTM, (h,) for the GRU.
  feed_BxH: jax.Array | None  # The previous step's h~ (zeros at the start); None: no feeding.
  memory: Memory  # The source's encoder outputs, their keys and mask.


def uses_decoding_table(config: Seq2SeqConfig) -> bool:
  """Whether decoding should look its first-layer input gates up in a [V, G] table.

  Measured (experiments/results/speed.md): 2.1x greedy tokens/s at batch 1 for V = 100,
  H = 256; 1.16x at batch 1 and none at batch 64 for V = 10,000, H = 512, where the table takes
  80 MB. So: when the table is at most four times the recurrent kernel.
  """
  return config.target_vocab_size <= 4 * config.hidden_size


class Seq2Seq(nn.Module):
  """Encoder-decoder with `encode`, `teacher_forced_logits` and one-token `decode_step`."""

  config: Seq2SeqConfig

  # Parameters with a vocabulary dimension, (module, parameter) -> that dimension, for
  # parallel.Layout to shard (model_shards > 1). One-hot inputs have no embedding tables.
  VOCABULARY_MATRICES = {
    ("source_inputs", "embedding", "embedding"): 0,
    ("target_inputs", "embedding", "embedding"): 0,
    ("output_layer", "kernel"): 1,
    ("output_layer", "bias"): 0,
  }

  def decoder_modules(self) -> tuple[str, ...]:
    """The top-level modules of the decoder side; the rest (inputs, encoder, bridges) encode."""
    return ("target_inputs", "decoder", "attention", "feed_projection", "output_layer")

  def setup(self):
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    self.target_inputs = TokenInputs(cfg.target_vocab_size, cfg.embed_dim, cfg.input_encoding)
    # One module, so one table: its parameters are target_inputs'.
    self.source_inputs = (
      self.target_inputs
      if cfg.share_embeddings
      else TokenInputs(cfg.source_vocab_size, cfg.embed_dim, cfg.input_encoding)
    )
    backend = cudnn_lstm.resolve_backend(cfg.lstm_backend, cfg.dtype, cfg.cell)
    self.encoder = StackedRNN(
      cfg.hidden_size,
      cfg.encoder_layers,
      cfg.dropout_rate,
      cfg.bidirectional,
      dtype,
      cfg.scan_unroll,
      backend,
      cfg.cell,
    )
    self.decoder = StackedRNN(
      cfg.hidden_size,
      cfg.decoder_layers,
      cfg.dropout_rate,
      False,
      dtype,
      cfg.scan_unroll,
      backend,
      cfg.cell,
    )
    if cfg.bidirectional:
      if cfg.cell == "lstm":  # The GRU has no cell state to bridge.
        self.bridge_c = [
          nn.Dense(cfg.hidden_size, name=f"bridge_c_{i}") for i in range(cfg.decoder_layers)
        ]
      self.bridge_h = [
        nn.Dense(cfg.hidden_size, name=f"bridge_h_{i}") for i in range(cfg.decoder_layers)
      ]
    if cfg.attention != "none":
      memory_size = cfg.hidden_size * (2 if cfg.bidirectional else 1)
      self.attention = Attention(cfg.attention, cfg.hidden_size, memory_size, dtype)
    if cfg.input_feeding:
      # The fed h~'s share of the first decoder layer's input gates: [emb; h~] x W equals
      # emb x W_emb + h~ x W_feed, and keeping them apart lets emb x W_emb stay a table lookup.
      self.feed_projection = nn.Dense(
        gate_count(cfg.cell) * cfg.hidden_size,
        use_bias=False,
        dtype=dtype,
        dot_general=dense_dot_general,
        name="feed_projection",
      )
    self.dropout = Dropout(cfg.dropout_rate)
    if cfg.tie_embeddings:
      self.output_layer = TiedOutput(cfg.target_vocab_size, dtype, name="output_layer")
    else:
      self.output_layer = nn.Dense(
        cfg.target_vocab_size, dtype=dtype, dot_general=dense_dot_general, name="output_layer"
      )

  def _uses_table(self, vocab_size: int, tokens: jax.Array, deterministic: bool) -> bool:
    """Teacher-forced first-layer input gates from a table: small vocabulary, no dropout on
    the embeddings it would bypass, and the scan (cuDNN projects its inputs itself)."""
    no_dropout = deterministic or is_static_zero(self.config.dropout_rate)
    return (
      no_dropout and self.encoder.backend == "scan" and uses_input_table(vocab_size, tokens.size)
    )

  def encode(
    self, inputs_BxS: jax.Array, input_lengths_B: jax.Array, deterministic: bool = True
  ) -> list[Carry] | AttentiveState:
    """The decoder's initial state: one carry per decoder layer, from the encoder's final state,
    and with attention the source's memory.

    Decoder layer i starts from encoder layer min(i, encoder_layers - 1).
    """
    cfg = self.config
    inputs_SxB = inputs_BxS.T
    if self._uses_table(cfg.source_vocab_size, inputs_SxB, deterministic):
      tables = self.encoder.input_tables(self.source_inputs(jnp.arange(cfg.source_vocab_size)))
      gates = [tables[0][inputs_SxB]]
      if cfg.bidirectional:
        gates.append(tables[1][reverse_padded(inputs_SxB, input_lengths_B)])
      final_carries, out_SxBxM = self.encoder(
        None, input_lengths_B, deterministic=deterministic, first_gates_x=gates
      )
    else:
      emb_SxBxE = self.dropout(self.source_inputs(inputs_SxB), deterministic=deterministic)
      final_carries, out_SxBxM = self.encoder(
        emb_SxBxE, input_lengths_B, deterministic=deterministic
      )
    carries = []
    for i in range(cfg.decoder_layers):
      carry = final_carries[min(i, cfg.encoder_layers - 1)]
      if cfg.bidirectional:  # h through tanh, as the cell's outputs are; the LSTM's c linear.
        h_BxH = jnp.tanh(self.bridge_h[i](carry[-1]))
        carry = (self.bridge_c[i](carry[0]), h_BxH) if cfg.cell == "lstm" else (h_BxH,)
      carries.append(carry)
    if cfg.attention == "none":
      return carries
    memory = self.attention.memory(jnp.swapaxes(out_SxBxM, 0, 1), input_lengths_B)
    feed_BxH = jnp.zeros_like(carries[-1][-1]) if cfg.input_feeding else None
    return AttentiveState(carries, feed_BxH, memory)

  def _decoder_outputs(
    self, state: list[Carry] | AttentiveState, decoder_inputs_BxT: jax.Array, deterministic: bool
  ) -> tuple[jax.Array, jax.Array | None]:
    """Teacher forcing: what the output layer reads at every position (the top LSTM output, or
    with attention h~), out_BxTxH, and the attention weights a_BxTxS (None without)."""
    cfg = self.config
    inputs_TxB = decoder_inputs_BxT.T
    if self._uses_table(cfg.target_vocab_size, inputs_TxB, deterministic):
      gates_TxBxG, emb_TxBxE = self.decoder_input_gates()[inputs_TxB], None
    else:
      gates_TxBxG = None
      emb_TxBxE = self.dropout(self.target_inputs(inputs_TxB), deterministic=deterministic)
    if cfg.input_feeding:  # Step by step: each step's input needs the previous step's h~.
      if gates_TxBxG is None:
        gates_TxBxG = self.decoder.input_tables(emb_TxBxE)[0]
      return self._feeding_loop(state, gates_TxBxG, deterministic)
    carries = state if cfg.attention == "none" else state.carries
    first_gates = None if gates_TxBxG is None else [gates_TxBxG]
    _, out_TxBxH = self.decoder(
      emb_TxBxE, None, carries, deterministic=deterministic, first_gates_x=first_gates
    )
    out_BxTxH = jnp.swapaxes(out_TxBxH, 0, 1)
    if cfg.attention == "none":
      return out_BxTxH, None
    # Without feeding no step depends on an earlier h~: attention runs for all T at once.
    return self.attention(out_BxTxH, state.memory)

  def _attentive_step(
    self, state: AttentiveState, gates_x_BxG: jax.Array, deterministic: bool
  ) -> tuple[AttentiveState, jax.Array, jax.Array]:
    """One attentive decoder step from the token's first-layer input gates:
    (new state, h~_BxH, a_BxS)."""
    if self.config.input_feeding:
      gates_x_BxG = gates_x_BxG + self.feed_projection(state.feed_BxH)
    carries, out_BxH = self.decoder.step(
      state.carries, first_gates_x_BxG=gates_x_BxG, deterministic=deterministic
    )
    attentional_Bx1xH, weights_Bx1xS = self.attention(out_BxH[:, None], state.memory)
    attentional_BxH = attentional_Bx1xH[:, 0]
    feed_BxH = attentional_BxH if self.config.input_feeding else None
    return AttentiveState(carries, feed_BxH, state.memory), attentional_BxH, weights_Bx1xS[:, 0]

  def _feeding_loop(
    self, state: AttentiveState, gates_TxBxG: jax.Array, deterministic: bool
  ) -> tuple[jax.Array, jax.Array]:
    """Input feeding's teacher-forced pass: a scan of `_attentive_step` (the decoding step
    itself), parameters shared across steps, a fresh dropout key per step."""

    def step(model, state, gates_x_BxG):
      state, attentional_BxH, weights_BxS = model._attentive_step(state, gates_x_BxG, deterministic)
      return state, (attentional_BxH, weights_BxS)

    scan = nn.scan(step, variable_broadcast="params", split_rngs={"params": False, "dropout": True})
    _, (attentional_TxBxH, weights_TxBxS) = scan(self, state, gates_TxBxG)
    return jnp.swapaxes(attentional_TxBxH, 0, 1), jnp.swapaxes(weights_TxBxS, 0, 1)

  def teacher_forced_logits(
    self,
    state: list[Carry] | AttentiveState,
    decoder_inputs_BxT: jax.Array,
    deterministic: bool = True,
  ) -> jax.Array:
    """Teacher-forced logits_BxTxV for all positions at once."""
    out_BxTxH, _ = self._decoder_outputs(state, decoder_inputs_BxT, deterministic)
    out_BxTxH = self.dropout(out_BxTxH, deterministic=deterministic)
    return self.vocabulary_logits(out_BxTxH)

  def vocabulary_logits(self, out_xH: jax.Array) -> jax.Array:
    """The output layer on decoder outputs [..., H]: float32 logits [..., V]."""
    if self.config.tie_embeddings:
      embedding_VxE = self.target_inputs.variables["params"]["embedding"]["embedding"]
      return self.output_layer(out_xH, embedding_VxE).astype(jnp.float32)
    return self.output_layer(out_xH).astype(jnp.float32)

  def attention_weights(
    self, inputs_BxS: jax.Array, input_lengths_B: jax.Array, outputs_BxT: jax.Array
  ) -> jax.Array:
    """a_BxTxS: where each output token's step attended in its source (rows of PAD outputs
    included; the caller cuts them). Teacher-forced on the given outputs, so for a decoded
    output these are exactly the weights its decoding used."""
    if self.config.attention == "none":
      raise ValueError("this model has no attention (model.attention='none')")
    state = self.encode(inputs_BxS, input_lengths_B)
    return self._decoder_outputs(state, shift_right(outputs_BxT), True)[1]

  def decoder_input_gates(self) -> jax.Array:
    """The first decoder layer's input projection of every target token: [V, G].

    Steps that look their input up in this table skip the embedding and the [E, G] input
    matmul; it is worth it when V is small (computed once per set of parameters or batch).
    """
    tokens_V = jnp.arange(self.config.target_vocab_size)
    return self.decoder.input_tables(self.target_inputs(tokens_V))[0]

  def decode_step(
    self,
    state: list[Carry] | AttentiveState,
    tokens_B: jax.Array,
    input_gates_VxG: jax.Array | None = None,
  ) -> tuple[list[Carry] | AttentiveState, jax.Array]:
    """One decoding step: previous tokens in, (new state, logits_BxV) out.

    With input_gates_VxG (from decoder_input_gates) the first layer's input is a table lookup.
    """
    if self.config.attention != "none":
      gates_x_BxG = (
        self.decoder.input_tables(self.target_inputs(tokens_B))[0]
        if input_gates_VxG is None
        else input_gates_VxG[tokens_B]
      )
      state, out_BxH, _ = self._attentive_step(state, gates_x_BxG, deterministic=True)
    elif input_gates_VxG is None:
      state, out_BxH = self.decoder.step(state, self.target_inputs(tokens_B))
    else:
      state, out_BxH = self.decoder.step(state, first_gates_x_BxG=input_gates_VxG[tokens_B])
    return state, self.vocabulary_logits(out_BxH)

  def __call__(
    self,
    inputs_BxS: jax.Array,
    input_lengths_B: jax.Array,
    targets_BxT: jax.Array,
    deterministic: bool = True,
  ) -> jax.Array:
    """Teacher forcing: the decoder reads BOS + targets[:-1] and predicts targets."""
    state = self.encode(inputs_BxS, input_lengths_B, deterministic)
    return self.teacher_forced_logits(state, shift_right(targets_BxT), deterministic)


def build_model(
  model_cfg: ml_collections.ConfigDict, source_vocab: Sequence[str], target_vocab: Sequence[str]
) -> Seq2Seq:
  """The model a config's `model` section describes, for these vocabularies."""
  if model_cfg.get("share_embeddings") and list(source_vocab.tokens) != list(target_vocab.tokens):
    raise TextgenError(
      "--config.model.share_embeddings=True needs one vocabulary for both sides, but the "
      "source and target vocabularies differ: train a joint one with "
      "--config.data.tokenizer=sentencepiece"
    )
  return Seq2Seq(
    Seq2SeqConfig(
      source_vocab_size=len(source_vocab),
      target_vocab_size=len(target_vocab),
      **model_cfg.to_dict(),
    )
  )


def init_params(model: Seq2Seq, rng: jax.Array) -> Any:
  inputs_BxS = jnp.zeros((1, 2), jnp.int32)
  return model.init(rng, inputs_BxS, jnp.ones((1,), jnp.int32), inputs_BxS)
