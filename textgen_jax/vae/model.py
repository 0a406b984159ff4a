"""LSTM sentence VAE (Bowman et al. 2016) and, with kind="lm", the same decoder as a language model.

Shape key: B batch, T time, E embedding, H hidden, Z latent, V vocabulary.

The encoder's final hidden state (at each sentence's true last token) gives the mean and
log-variance of a diagonal Gaussian q(z|x). The decoder is conditioned on z in two switchable
ways: its initial state is Dense(z) (c0 = Dense(z), h0 = tanh(c0), one Dense per layer), and z
is concatenated to every input embedding. The language model is the decoder alone, started from
zeros, with no latent: the VAE-versus-LM comparison changes one config field.

The model declares its decoder side (`decoder_modules`), which encoder pretraining resets (Li et
al. 2019), and its vocabulary matrices, which parallel.Layout may shard.
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
from textgen_jax.models.rnn import Carry, StackedRNN, dense_dot_general, zero_carry
from textgen_jax.models.tokens import TiedOutput

KINDS = ("vae", "lm")


@dataclasses.dataclass(frozen=True)
class SentenceVAEConfig:
  """Model hyperparameters; built from the `model` section of a VAE/LM experiment config."""

  vocab_size: int
  kind: str = "vae"  # "vae", or "lm": the decoder alone, no encoder and no latent.
  embed_dim: int = 256
  hidden_size: int = 256
  latent_size: int = 32
  encoder_layers: int = 1
  decoder_layers: int = 1
  z_to_initial_state: bool = True  # Decoder state starts at Dense(z), else zeros.
  z_to_every_input: bool = True  # z concatenated to every decoder input embedding.
  embedding_dropout: Any = 0.0  # On encoder and decoder input embeddings (may be traced).
  output_dropout: Any = 0.0  # On decoder outputs before the vocabulary projection (may be traced).
  # The output layer's kernel is the decoder's input embedding, transposed (Press and Wolf
  # 2017): one [V, E] array, its gradient the sum of both uses; where hidden_size differs from
  # embed_dim, the output layer first projects the decoder's outputs to embed_dim.
  tie_embeddings: bool = False
  dtype: str = "float32"  # Matmul dtype; the LSTM cell state is float32 regardless.
  scan_unroll: int = 1  # Timesteps per iteration of the teacher-forced time loop.
  lstm_backend: str = "auto"  # Teacher-forced LSTM: "scan", "cudnn" or "auto" (cudnn on GPUs).
  cell: str = "lstm"  # "lstm" or "gru" (models/rnn.py).

  @property
  def has_latent(self) -> bool:
    return self.kind == "vae"


# The decoding state: one carry per decoder layer, and z (read at every step; None for the LM).
DecoderState = tuple[list[Carry], jax.Array | None]


class SentenceVAE(nn.Module):
  """`posterior`, `decoder_start`, `teacher_forced_logits`, one-token `decode_step`."""

  config: SentenceVAEConfig

  # Parameters with a vocabulary dimension, (module, parameter) -> that dimension.
  VOCABULARY_MATRICES = {
    ("encoder_embedding", "embedding"): 0,
    ("decoder_embedding", "embedding"): 0,
    ("output_layer", "kernel"): 1,
    ("output_layer", "bias"): 0,
  }

  def decoder_modules(self) -> tuple[str, ...]:
    """The top-level modules of the decoder side: everything p(x|z) uses, Dense(z) included."""
    cfg = self.config
    initial_state = [
      f"decoder_initial_state_{i}"
      for i in range(cfg.decoder_layers)
      if cfg.has_latent and cfg.z_to_initial_state
    ]
    return (*initial_state, "decoder_embedding", "decoder_lstm", "output_layer")

  def setup(self):
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    backend = cudnn_lstm.resolve_backend(cfg.lstm_backend, cfg.dtype, cfg.cell)
    if cfg.has_latent:
      self.encoder_embedding = nn.Embed(cfg.vocab_size, cfg.embed_dim)
      self.encoder_lstm = StackedRNN(
        cfg.hidden_size,
        cfg.encoder_layers,
        dtype=dtype,
        scan_unroll=cfg.scan_unroll,
        backend=backend,
        cell=cfg.cell,
      )
      self.encoder_to_posterior = nn.Dense(2 * cfg.latent_size)
      if cfg.z_to_initial_state:
        self.decoder_initial_state = [nn.Dense(cfg.hidden_size) for _ in range(cfg.decoder_layers)]
    self.decoder_embedding = nn.Embed(cfg.vocab_size, cfg.embed_dim)
    self.decoder_lstm = StackedRNN(
      cfg.hidden_size,
      cfg.decoder_layers,
      dtype=dtype,
      scan_unroll=cfg.scan_unroll,
      backend=backend,
      cell=cfg.cell,
    )
    if cfg.tie_embeddings:
      self.output_layer = TiedOutput(cfg.vocab_size, dtype)
    else:
      self.output_layer = nn.Dense(cfg.vocab_size, dtype=dtype, dot_general=dense_dot_general)
    self.embedding_dropout = Dropout(cfg.embedding_dropout)
    self.output_dropout = Dropout(cfg.output_dropout)

  def posterior(
    self, tokens_BxT: jax.Array, lengths_B: jax.Array, deterministic: bool = True
  ) -> tuple[jax.Array, jax.Array]:
    """Mean and log-variance of q(z|x), each [B, Z], from the encoder's state at each true end."""
    emb_TxBxE = self.embedding_dropout(
      self.encoder_embedding(tokens_BxT.T), deterministic=deterministic
    )
    final_carries, _ = self.encoder_lstm(emb_TxBxE, lengths_B)
    mean_BxZ, logvar_BxZ = jnp.split(self.encoder_to_posterior(final_carries[-1][-1]), 2, -1)
    return mean_BxZ, logvar_BxZ

  def decoder_start(self, z_BxZ: jax.Array | None, batch_size: int) -> DecoderState:
    """The decoder's initial state: Dense(z) per layer, or zeros (LM, or switched off). The
    LSTM's cell state is Dense(z) and its h tanh of it; the GRU's h is tanh(Dense(z))."""
    cfg = self.config
    if cfg.has_latent and cfg.z_to_initial_state:
      carries = []
      for dense in self.decoder_initial_state:
        c_BxH = dense(z_BxZ)
        carries.append((c_BxH, jnp.tanh(c_BxH)) if cfg.cell == "lstm" else (jnp.tanh(c_BxH),))
    else:
      carries = [zero_carry(batch_size, cfg.hidden_size, cfg.cell)] * cfg.decoder_layers
    return carries, z_BxZ if cfg.has_latent else None

  def _inputs(self, tokens: jax.Array, z_BxZ: jax.Array | None, deterministic: bool) -> jax.Array:
    """Embeddings of `tokens` ([B], or time-major [T, B]), z appended when configured."""
    emb = self.embedding_dropout(self.decoder_embedding(tokens), deterministic=deterministic)
    if self.config.has_latent and self.config.z_to_every_input:
      z = jnp.broadcast_to(z_BxZ, tokens.shape + z_BxZ.shape[-1:])
      emb = jnp.concatenate([emb, z.astype(emb.dtype)], -1)
    return emb

  def teacher_forced_logits(
    self, state: DecoderState, inputs_BxT: jax.Array, deterministic: bool = True
  ) -> jax.Array:
    """Teacher-forced logits_BxTxV (float32) for all positions in one pass."""
    out_BxTxH = self.teacher_forced_outputs(state, inputs_BxT, deterministic)
    return self.vocabulary_logits(out_BxTxH)

  def teacher_forced_outputs(
    self, state: DecoderState, inputs_BxT: jax.Array, deterministic: bool = True
  ) -> jax.Array:
    """The decoder's top-layer outputs out_BxTxH (after output dropout), before the projection."""
    carries, z_BxZ = state
    x_TxBxE = self._inputs(inputs_BxT.T, z_BxZ, deterministic)
    _, out_TxBxH = self.decoder_lstm(x_TxBxE, None, carries)
    return self.output_dropout(jnp.swapaxes(out_TxBxH, 0, 1), deterministic=deterministic)

  def vocabulary_logits(self, out_xH: jax.Array) -> jax.Array:
    """The vocabulary projection of decoder outputs [..., H] -> float32 logits [..., V]."""
    if self.config.tie_embeddings:
      return self.output_layer(out_xH, self.decoder_embedding.embedding).astype(jnp.float32)
    return self.output_layer(out_xH).astype(jnp.float32)

  def decode_step(self, state: DecoderState, tokens_B: jax.Array) -> tuple[DecoderState, jax.Array]:
    """One decoding step: previous tokens in, (new state, logits_BxV) out."""
    carries, z_BxZ = state
    carries, out_BxH = self.decoder_lstm.step(carries, self._inputs(tokens_B, z_BxZ, True))
    return (carries, z_BxZ), self.vocabulary_logits(out_BxH)

  def __call__(
    self,
    tokens_BxT: jax.Array,
    lengths_B: jax.Array,
    decoder_inputs_BxT: jax.Array,
    z_BxZ: jax.Array | None = None,
  ) -> Any:
    """Touches every parameter (for init): posterior, then the decoder from z (zeros if None)."""
    if self.config.has_latent:
      mean_BxZ, _ = self.posterior(tokens_BxT, lengths_B)
      z_BxZ = mean_BxZ if z_BxZ is None else z_BxZ
    return self.teacher_forced_logits(
      self.decoder_start(z_BxZ, tokens_BxT.shape[0]), decoder_inputs_BxT
    )


def build_model(model_cfg: ml_collections.ConfigDict, vocab: Sequence[str]) -> SentenceVAE:
  """The model a config's `model` section describes, for this vocabulary."""
  return SentenceVAE(SentenceVAEConfig(vocab_size=len(vocab), **model_cfg.to_dict()))


def init_params(model: SentenceVAE, rng: jax.Array) -> Any:
  tokens_BxT = jnp.zeros((1, 2), jnp.int32)
  z_BxZ = jnp.zeros((1, model.config.latent_size)) if model.config.has_latent else None
  return model.init(rng, tokens_BxT, jnp.ones((1,), jnp.int32), tokens_BxT, z_BxZ)
