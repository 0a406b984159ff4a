"""LSTM encoder-decoder (Sutskever et al. 2014) trained with teacher forcing.

Shape key: B batch, S source time, T target time, E embedding, H hidden, V vocabulary.
The encoder's final state (at each source's true last token) starts the decoder; when sizes
differ (a bidirectional encoder, or different hidden sizes) a Dense "bridge" projects it.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from textgen_jax.models import cudnn_lstm
from textgen_jax.models.dropout import Dropout
from textgen_jax.models.lstm import (Carry, StackedLSTM, reverse_padded, uses_input_table,
                                     vocabulary_dot_general)
from textgen_jax.models.tokens import TokenInputs, shift_right
from textgen_jax.population import is_static_zero


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


def uses_decoding_table(config: Seq2SeqConfig) -> bool:
  """Whether decoding should look its first-layer input gates up in a [V, 4H] table.

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
  VOCABULARY_MATRICES = {("source_inputs", "embedding", "embedding"): 0,
                         ("target_inputs", "embedding", "embedding"): 0,
                         ("output_layer", "kernel"): 1, ("output_layer", "bias"): 0}

  def decoder_modules(self) -> tuple[str, ...]:
    """The top-level modules of the decoder side; the rest (inputs, encoder, bridges) encode."""
    return ("target_inputs", "decoder", "output_layer")

  def setup(self):
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    self.source_inputs = TokenInputs(cfg.source_vocab_size, cfg.embed_dim, cfg.input_encoding)
    self.target_inputs = TokenInputs(cfg.target_vocab_size, cfg.embed_dim, cfg.input_encoding)
    backend = cudnn_lstm.resolve_backend(cfg.lstm_backend, cfg.dtype)
    self.encoder = StackedLSTM(cfg.hidden_size, cfg.encoder_layers, cfg.dropout_rate,
                               cfg.bidirectional, dtype, cfg.scan_unroll, backend)
    self.decoder = StackedLSTM(cfg.hidden_size, cfg.decoder_layers, cfg.dropout_rate, False, dtype,
                               cfg.scan_unroll, backend)
    if cfg.bidirectional:
      self.bridge_c = [nn.Dense(cfg.hidden_size, name=f"bridge_c_{i}")
                       for i in range(cfg.decoder_layers)]
      self.bridge_h = [nn.Dense(cfg.hidden_size, name=f"bridge_h_{i}")
                       for i in range(cfg.decoder_layers)]
    self.dropout = Dropout(cfg.dropout_rate)
    self.output_layer = nn.Dense(cfg.target_vocab_size, dtype=dtype,
                                 dot_general=vocabulary_dot_general, name="output_layer")

  def _uses_table(self, vocab_size: int, tokens: jax.Array, deterministic: bool) -> bool:
    """Teacher-forced first-layer input gates from a table: small vocabulary, no dropout on
    the embeddings it would bypass, and the scan (cuDNN projects its inputs itself)."""
    no_dropout = deterministic or is_static_zero(self.config.dropout_rate)
    return (no_dropout and self.encoder.backend == "scan" and
            uses_input_table(vocab_size, tokens.size))

  def encode(self, inputs_BxS: jax.Array, input_lengths_B: jax.Array,
             deterministic: bool = True) -> list[Carry]:
    """The decoder's initial state: one (c, h) per decoder layer, from the encoder's final state.

    Decoder layer i starts from encoder layer min(i, encoder_layers - 1).
    """
    cfg = self.config
    inputs_SxB = inputs_BxS.T
    if self._uses_table(cfg.source_vocab_size, inputs_SxB, deterministic):
      tables = self.encoder.input_tables(self.source_inputs(jnp.arange(cfg.source_vocab_size)))
      gates = [tables[0][inputs_SxB]]
      if cfg.bidirectional:
        gates.append(tables[1][reverse_padded(inputs_SxB, input_lengths_B)])
      final_carries, _ = self.encoder(None, input_lengths_B, deterministic=deterministic,
                                      first_gates_x=gates)
    else:
      emb_SxBxE = self.dropout(self.source_inputs(inputs_SxB), deterministic=deterministic)
      final_carries, _ = self.encoder(emb_SxBxE, input_lengths_B, deterministic=deterministic)
    carries = []
    for i in range(cfg.decoder_layers):
      c_BxH, h_BxH = final_carries[min(i, cfg.encoder_layers - 1)]
      if cfg.bidirectional:
        c_BxH, h_BxH = self.bridge_c[i](c_BxH), jnp.tanh(self.bridge_h[i](h_BxH))
      carries.append((c_BxH, h_BxH))
    return carries

  def teacher_forced_logits(self, carries: list[Carry], decoder_inputs_BxT: jax.Array,
                            deterministic: bool = True) -> jax.Array:
    """Teacher-forced logits_BxTxV for all positions at once."""
    inputs_TxB = decoder_inputs_BxT.T
    if self._uses_table(self.config.target_vocab_size, inputs_TxB, deterministic):
      _, out_TxBxH = self.decoder(None, None, carries, deterministic=deterministic,
                                  first_gates_x=[self.decoder_input_gates()[inputs_TxB]])
    else:
      emb_TxBxE = self.dropout(self.target_inputs(inputs_TxB), deterministic=deterministic)
      _, out_TxBxH = self.decoder(emb_TxBxE, None, carries, deterministic=deterministic)
    out_BxTxH = self.dropout(jnp.swapaxes(out_TxBxH, 0, 1), deterministic=deterministic)
    return self.output_layer(out_BxTxH).astype(jnp.float32)

  def decoder_input_gates(self) -> jax.Array:
    """The first decoder layer's input projection of every target token: [V, 4H].

    Steps that look their input up in this table skip the embedding and the [E, 4H] input
    matmul; it is worth it when V is small (computed once per set of parameters or batch).
    """
    tokens_V = jnp.arange(self.config.target_vocab_size)
    return self.decoder.input_tables(self.target_inputs(tokens_V))[0]

  def decode_step(self, carries: list[Carry], tokens_B: jax.Array,
                  input_gates_VxG: jax.Array | None = None) -> tuple[list[Carry], jax.Array]:
    """One decoding step: previous tokens in, (new state, logits_BxV) out.

    With input_gates_VxG (from decoder_input_gates) the first layer's input is a table lookup.
    """
    if input_gates_VxG is None:
      carries, out_BxH = self.decoder.step(carries, self.target_inputs(tokens_B))
    else:
      carries, out_BxH = self.decoder.step(carries, first_gates_x_BxG=input_gates_VxG[tokens_B])
    return carries, self.output_layer(out_BxH).astype(jnp.float32)

  def __call__(self, inputs_BxS: jax.Array, input_lengths_B: jax.Array, targets_BxT: jax.Array,
               deterministic: bool = True) -> jax.Array:
    """Teacher forcing: the decoder reads BOS + targets[:-1] and predicts targets."""
    carries = self.encode(inputs_BxS, input_lengths_B, deterministic)
    return self.teacher_forced_logits(carries, shift_right(targets_BxT), deterministic)


def build_model(model_cfg: ml_collections.ConfigDict, source_vocab: Sequence[str],
                target_vocab: Sequence[str]) -> Seq2Seq:
  """The model a config's `model` section describes, for these vocabularies."""
  return Seq2Seq(Seq2SeqConfig(source_vocab_size=len(source_vocab),
                               target_vocab_size=len(target_vocab), **model_cfg.to_dict()))


def init_params(model: Seq2Seq, rng: jax.Array) -> Any:
  inputs_BxS = jnp.zeros((1, 2), jnp.int32)
  return model.init(rng, inputs_BxS, jnp.ones((1,), jnp.int32), inputs_BxS)
