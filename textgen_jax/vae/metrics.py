"""What the text-VAE literature reports: importance-weighted NLL, mutual information, active units.

* Importance-weighted log-likelihood (Burda et al. 2016), as in He et al. 2019:
    log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K,  z_k ~ q(z|x).
  K = 1 is the ELBO in expectation; the bound tightens as K grows. The K samples are drawn in
  chunks inside one compiled `lax.scan` with a running logsumexp, so memory is one chunk's.
  For the language model, log p(x) is exact.
* Mutual information I(x; z) under q (He et al. 2019's estimator), with the aggregate posterior
  q(z) = mean_n q(z|x_n) taken over all the evaluated sentences rather than one batch.
* Active units (Burda et al. 2016): latent dimensions whose posterior mean varies over the data,
  Var_x(E_q[z_d]) > 0.01.

Counting: log p(x) covers every word and the EOS of each sentence (PAD never), so perplexity is
exp(-sum log p(x) / (words + sentences)), as in Mikolov's PTB convention.
"""

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from textgen_jax.data.vocab import PAD_ID
from textgen_jax.losses import token_cross_entropy
from textgen_jax.models.tokens import shift_right
from textgen_jax.vae.model import SentenceVAE

ACTIVE_UNIT_THRESHOLD = 0.01


def elbo_summary(sums: dict[str, float]) -> dict[str, float]:
  """From a VAE's loss sums (with kl_sum): the reconstruction and KL per sentence, the negative
  ELBO per sentence and the perplexity it bounds. Nothing for the LM, which has no KL."""
  if "kl_sum" not in sums:
    return {}
  tokens, sequences = max(sums["tokens"], 1.0), max(sums["sequences"], 1.0)
  neg_elbo_sum = sums["nll_sum"] + sums["kl_sum"]
  return {
    "reconstruction": sums["nll_sum"] / sequences,
    "kl": sums["kl_sum"] / sequences,
    "neg_elbo": neg_elbo_sum / sequences,
    "elbo_perplexity": math.exp(min(neg_elbo_sum / tokens, 50.0)),
  }


_LOG_2PI = math.log(2.0 * math.pi)


def diagonal_normal_log_density(
  z_BxZ: jax.Array, mean_BxZ: jax.Array, logvar_BxZ: jax.Array
) -> jax.Array:
  """log N(z; mean, diag(exp(logvar))), summed over dimensions: [B]."""
  return -0.5 * jnp.sum(_LOG_2PI + logvar_BxZ + (z_BxZ - mean_BxZ) ** 2 * jnp.exp(-logvar_BxZ), -1)


def _log_likelihood_given_z(
  params: Any,
  z_BxZ: jax.Array | None,
  targets_BxT: jax.Array,
  *,
  model: SentenceVAE,
  rows_per_block: int | None,
) -> jax.Array:
  """log p(x|z) per sentence [B] (teacher forced; words and EOS, no PAD).

  The vocabulary projection and its log-sum-exp run rows_per_block tokens at a time, so the
  logits of a block stay in cache instead of [B, T, V] of them going through memory three times
  (written, maximum, sum of exponentials): the pass is bound by that traffic at K=500.
  """
  batch_size, time_steps = targets_BxT.shape
  state = model.apply(params, z_BxZ, batch_size, method=SentenceVAE.decoder_start)
  out_BxTxH = model.apply(
    params, state, shift_right(targets_BxT), method=SentenceVAE.teacher_forced_outputs
  )

  def block_nll(block):
    out_RxH, targets_R = block
    logits_RxV = model.apply(params, out_RxH, method=SentenceVAE.vocabulary_logits)
    return token_cross_entropy(logits_RxV, targets_R)

  rows = (out_BxTxH.reshape(batch_size * time_steps, -1), targets_BxT.reshape(-1))
  if rows_per_block is None:
    nll_N = block_nll(rows)
  else:
    nll_N = jax.lax.map(block_nll, rows, batch_size=rows_per_block)
  nll_BxT = nll_N.reshape(batch_size, time_steps) * (targets_BxT != PAD_ID)
  return -nll_BxT.sum(-1)


def importance_weighted_log_likelihood(
  params: Any,
  batch: dict[str, jax.Array],
  rng: jax.Array,
  *,
  model: SentenceVAE,
  num_samples: int,
  chunk_size: int,
  rows_per_block: int | None = 256,
) -> jax.Array:
  """log p(x) per sentence [B]: the K-sample importance-weighted bound (exact for the LM)."""
  tokens_BxT, lengths_B, targets_BxT = batch["inputs"], batch["input_lengths"], batch["targets"]
  log_px_given_z = functools.partial(
    _log_likelihood_given_z, params, model=model, rows_per_block=rows_per_block
  )
  if not model.config.has_latent:
    return log_px_given_z(None, targets_BxT)
  mean_BxZ, logvar_BxZ = model.apply(params, tokens_BxT, lengths_B, method=SentenceVAE.posterior)
  batch_size = tokens_BxT.shape[0]
  chunk_size = min(chunk_size, num_samples)
  num_chunks = -(-num_samples // chunk_size)
  targets_CBxT = jnp.tile(targets_BxT, (chunk_size, 1))
  mean_CBxZ, logvar_CBxZ = (
    jnp.tile(mean_BxZ, (chunk_size, 1)),
    jnp.tile(logvar_BxZ, (chunk_size, 1)),
  )

  def add_chunk(log_sum_B, chunk):
    index, key = chunk
    z_CBxZ = mean_CBxZ + jnp.exp(0.5 * logvar_CBxZ) * jax.random.normal(key, mean_CBxZ.shape)
    log_px_given_z_CB = log_px_given_z(z_CBxZ, targets_CBxT)
    log_prior_CB = diagonal_normal_log_density(z_CBxZ, 0.0, jnp.zeros_like(z_CBxZ))
    log_posterior_CB = diagonal_normal_log_density(z_CBxZ, mean_CBxZ, logvar_CBxZ)
    log_w_CxB = (log_px_given_z_CB + log_prior_CB - log_posterior_CB).reshape(
      chunk_size, batch_size
    )
    # The last chunk may run past K; its extra samples get zero weight.
    in_range_Cx1 = (index * chunk_size + jnp.arange(chunk_size) < num_samples)[:, None]
    log_w_CxB = jnp.where(in_range_Cx1, log_w_CxB, -jnp.inf)
    return jnp.logaddexp(log_sum_B, jax.nn.logsumexp(log_w_CxB, 0)), None

  keys = jax.random.split(rng, num_chunks)
  log_sum_B, _ = jax.lax.scan(
    add_chunk, jnp.full((batch_size,), -jnp.inf), (jnp.arange(num_chunks), keys)
  )
  return log_sum_B - math.log(num_samples)


def mutual_information(
  mean_NxZ: jax.Array, logvar_NxZ: jax.Array, rng: jax.Array, rows_per_chunk: int = 256
) -> jax.Array:
  """I(x; z) = E_x E_q(z|x)[log q(z|x)] - E_q(z)[log q(z)], one z per sentence (He et al.).

  log q(z_i) = logsumexp_j log q(z_i|x_j) - log N over all N sentences, computed directly (not
  by expanding the square, which loses float32 precision for narrow posteriors), a chunk of
  rows at a time so memory stays at rows_per_chunk x N x Z.
  """
  num, latent = mean_NxZ.shape
  z_NxZ = mean_NxZ + jnp.exp(0.5 * logvar_NxZ) * jax.random.normal(rng, mean_NxZ.shape)
  negative_entropy = jnp.mean(-0.5 * latent * _LOG_2PI - 0.5 * jnp.sum(1.0 + logvar_NxZ, -1))

  def log_aggregate(z_Z):
    return jax.nn.logsumexp(diagonal_normal_log_density(z_Z[None, :], mean_NxZ, logvar_NxZ))

  log_aggregate_N = jax.lax.map(log_aggregate, z_NxZ, batch_size=rows_per_chunk) - math.log(num)
  return negative_entropy - jnp.mean(log_aggregate_N)


def active_units(
  mean_NxZ: np.ndarray, threshold: float = ACTIVE_UNIT_THRESHOLD
) -> tuple[int | None, np.ndarray | None]:
  """(number of dimensions with Var_x(E_q[z_d]) > threshold, the per-dimension variances);
  (None, None) for fewer than 2 sentences, whose variance across sentences is undefined."""
  if len(mean_NxZ) < 2:
    return None, None
  variance_Z = np.var(np.asarray(mean_NxZ, np.float64), axis=0, ddof=1)
  return int(np.sum(variance_Z > threshold)), variance_Z
