"""The plainest Flax linen version of both training workloads: the baseline train.py holds
textgen-jax's own step against.

Written the way the Flax documentation writes an LSTM: `nn.RNN(nn.OptimizedLSTMCell(h))` with
`seq_lengths`, `nn.Embed`, `nn.Dense`, optax's cross-entropy and `optax.adam`, the whole step in
one `jax.jit` with the state donated. No masking beyond `seq_lengths`, no metrics, no clipping:
the least a researcher would write. Random weights and tokens (speed only).
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


# The cell of each model.cell, as the Flax documentation writes them.
CELLS = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}


class Seq2Seq(nn.Module):
  """LSTM (or GRU) encoder; its final carry starts a decoder over teacher-forced inputs."""

  source_vocab_size: int
  target_vocab_size: int
  embed_dim: int
  hidden_size: int
  cell: str = "lstm"

  @nn.compact
  def __call__(self, sources_BxS, source_lengths_B, decoder_inputs_BxT, rng):
    del rng
    encoder = nn.RNN(CELLS[self.cell](self.hidden_size), return_carry=True)
    carry, _ = encoder(
      nn.Embed(self.source_vocab_size, self.embed_dim)(sources_BxS), seq_lengths=source_lengths_B
    )
    decoder = nn.RNN(CELLS[self.cell](self.hidden_size))
    out_BxTxH = decoder(
      nn.Embed(self.target_vocab_size, self.embed_dim)(decoder_inputs_BxT), initial_carry=carry
    )
    return nn.Dense(self.target_vocab_size)(out_BxTxH), 0.0


class SentenceVAE(nn.Module):
  """Bowman et al.'s VAE: encoder -> q(z|x); decoder started from Dense(z), z at every input."""

  vocab_size: int
  embed_dim: int
  hidden_size: int
  latent_size: int
  cell: str = "lstm"

  @nn.compact
  def __call__(self, tokens_BxT, lengths_B, decoder_inputs_BxT, rng):
    carry, _ = nn.RNN(CELLS[self.cell](self.hidden_size), return_carry=True)(
      nn.Embed(self.vocab_size, self.embed_dim)(tokens_BxT), seq_lengths=lengths_B
    )
    h_BxH = carry if self.cell == "gru" else carry[1]  # The GRU's carry is h.
    mean_BxZ, logvar_BxZ = jnp.split(nn.Dense(2 * self.latent_size)(h_BxH), 2, -1)
    z_BxZ = mean_BxZ + jnp.exp(0.5 * logvar_BxZ) * jax.random.normal(rng, mean_BxZ.shape)
    kl = 0.5 * jnp.sum(jnp.exp(logvar_BxZ) + mean_BxZ**2 - 1.0 - logvar_BxZ, -1).mean()
    emb_BxTxE = nn.Embed(self.vocab_size, self.embed_dim)(decoder_inputs_BxT)
    z_BxTxZ = jnp.broadcast_to(z_BxZ[:, None], emb_BxTxE.shape[:2] + z_BxZ.shape[-1:])
    c_BxH = nn.Dense(self.hidden_size)(z_BxZ)
    initial = jnp.tanh(c_BxH) if self.cell == "gru" else (c_BxH, jnp.tanh(c_BxH))
    out_BxTxH = nn.RNN(CELLS[self.cell](self.hidden_size))(
      jnp.concatenate([emb_BxTxE, z_BxTxZ], -1), initial_carry=initial
    )
    return nn.Dense(self.vocab_size)(out_BxTxH), kl


def make_train_step(
  model: nn.Module, batch: dict[str, jax.Array], learning_rate: float = 1e-3
) -> tuple[Any, Any]:
  """(jitted step(state, batch, rng) -> (state, loss), initial state) for model on batch."""
  bos_Bx1 = jnp.ones_like(batch["targets"][:, :1])
  decoder_inputs = lambda b: jnp.concatenate([bos_Bx1, b["targets"][:, :-1]], 1)
  params = model.init(
    jax.random.key(0),
    batch["inputs"],
    batch["input_lengths"],
    decoder_inputs(batch),
    jax.random.key(1),
  )
  optimizer = optax.adam(learning_rate)

  def loss_fn(params, batch, rng):
    logits, kl = model.apply(
      params, batch["inputs"], batch["input_lengths"], decoder_inputs(batch), rng
    )
    nll_BxT = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    return nll_BxT.sum(-1).mean() + kl

  @functools.partial(jax.jit, donate_argnums=0)
  def step(state, batch, rng):
    params, opt_state = state
    loss, grads = jax.value_and_grad(loss_fn)(params, batch, rng)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  return step, (params, optimizer.init(params))
