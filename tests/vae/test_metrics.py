"""Tests for textgen_jax.vae_metrics: importance-weighted NLL, mutual information, active units."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from textgen_jax.vae import metrics as vae_metrics
from textgen_jax.data import batching
from textgen_jax.vae.model import SentenceVAE, SentenceVAEConfig

SENTENCES = [np.array(s, np.int32) for s in ([5, 6, 7], [8, 9], [10, 5, 6, 11], [7])]


@pytest.fixture(scope="module")
def tiny_vae():
  model = SentenceVAE(SentenceVAEConfig(vocab_size=12, embed_dim=8, hidden_size=16, latent_size=3))
  batch = batching.pad_batch(SENTENCES, SENTENCES, 4, 6)
  params = model.init(
    jax.random.key(0), batch["inputs"], batch["input_lengths"], batch["targets"], jnp.zeros((4, 3))
  )
  # A posterior narrower than the prior (log-variance -1) leaves the K = 1 bound loose enough for
  # its tightening to be measurable.
  bias = params["params"]["encoder_to_posterior"]["bias"]
  params["params"]["encoder_to_posterior"]["bias"] = bias.at[3:].set(-1.0)
  return model, params, batch


@functools.cache
def compiled_iw(model, num_samples, chunk_size, over_keys):
  fn = functools.partial(
    vae_metrics.importance_weighted_log_likelihood,
    model=model,
    num_samples=num_samples,
    chunk_size=chunk_size,
  )
  return jax.jit(jax.vmap(fn, in_axes=(None, None, 0)) if over_keys else fn)


def iw(model, params, batch, rng, num_samples, chunk_size=None):
  """log p(x) estimates [B]; with a batch of keys, [num_keys, B]."""
  over_keys = rng.ndim == 1
  fn = compiled_iw(model, num_samples, chunk_size or num_samples, over_keys)
  return np.asarray(fn(params, batch, rng))


@pytest.mark.slow
def test_bound_tightens_as_k_grows(tiny_vae):
  model, params, batch = tiny_vae
  keys = jax.random.split(jax.random.key(1), 50)
  estimates = {k: iw(model, params, batch, keys, k, 25) for k in (1, 10, 100)}
  # Summed over the sentences and averaged over 50 keys: log p_1 < log p_10 < log p_100, a lower
  # bound rising towards log p(x), each gap larger than three standard errors (the keys are fixed, so this is deterministic).
  totals = {k: v.sum(1) for k, v in estimates.items()}
  for small, large in ((1, 10), (10, 100)):
    gap = totals[large] - totals[small]
    assert gap.mean() > 3 * gap.std() / np.sqrt(len(gap)), (small, large, gap)


@pytest.mark.slow
def test_k1_equals_the_elbo_in_expectation(tiny_vae):
  model, params, batch = tiny_vae
  estimates = iw(model, params, batch, jax.random.split(jax.random.key(2), 400), 1)
  # ELBO = E_q[log p(x|z)] - KL(q || p), from many posterior samples and the closed-form KL.
  mean, logvar = model.apply(
    params, batch["inputs"], batch["input_lengths"], method=SentenceVAE.posterior
  )
  from textgen_jax.vae.loss import gaussian_kl

  zs = mean[None] + jnp.exp(0.5 * logvar)[None] * jax.random.normal(
    jax.random.key(3), (2000,) + mean.shape
  )
  log_px_given_z = jax.vmap(
    lambda z: vae_metrics._log_likelihood_given_z(
      params, z, batch["targets"], model=model, rows_per_block=None
    )
  )(zs)
  elbo = np.asarray(log_px_given_z.mean(0) - gaussian_kl(mean, logvar).sum(-1))
  standard_error = estimates.std(0) / np.sqrt(len(estimates))
  assert np.all(np.abs(estimates.mean(0) - elbo) < 4 * standard_error + 0.02)


def test_blocks_of_rows_give_the_same_log_likelihood(tiny_vae):
  # The vocabulary projection taken a few rows at a time (a block count that does not divide
  # the 4 x 6 tokens included) equals it taken at once.
  model, params, batch = tiny_vae
  z = jax.random.normal(jax.random.key(6), (4, 3))
  at_once = vae_metrics._log_likelihood_given_z(
    params, z, batch["targets"], model=model, rows_per_block=None
  )
  assert np.all(np.asarray(at_once) < 0)
  for rows in (1, 5, 24, 100):
    blocked = vae_metrics._log_likelihood_given_z(
      params, z, batch["targets"], model=model, rows_per_block=rows
    )
    np.testing.assert_allclose(blocked, at_once, rtol=1e-6, err_msg=f"rows_per_block={rows}")


@pytest.mark.slow
def test_exact_when_the_decoder_ignores_z_and_q_is_the_prior():
  # Then every importance weight is p(x), whatever K and the chunking (partial chunks included).
  model = SentenceVAE(
    SentenceVAEConfig(
      vocab_size=12,
      embed_dim=8,
      hidden_size=16,
      latent_size=3,
      z_to_initial_state=False,
      z_to_every_input=False,
    )
  )
  lm = SentenceVAE(SentenceVAEConfig(vocab_size=12, kind="lm", embed_dim=8, hidden_size=16))
  batch = batching.pad_batch(SENTENCES, SENTENCES, 4, 6)
  params = model.init(
    jax.random.key(0), batch["inputs"], batch["input_lengths"], batch["targets"], jnp.zeros((4, 3))
  )
  params["params"]["encoder_to_posterior"] = jax.tree.map(
    jnp.zeros_like, params["params"]["encoder_to_posterior"]
  )
  lm_params = {"params": {k: params["params"][k] for k in lm.decoder_modules()}}
  exact = iw(lm, lm_params, batch, jax.random.key(0), 1)
  assert np.all(exact < 0)
  for num_samples, chunk_size in ((1, 1), (7, 3), (10, 10), (10, 4)):
    np.testing.assert_allclose(
      iw(model, params, batch, jax.random.key(5), num_samples, chunk_size), exact, rtol=1e-5
    )


@pytest.mark.slow
def test_padding_rows_and_bucket_length_do_not_change_a_sentence(tiny_vae):
  model, params, batch = tiny_vae
  longer = batching.pad_batch(SENTENCES, SENTENCES, 8, 9)
  a = iw(model, params, batch, jax.random.key(4), 5)
  b = iw(model, params, longer, jax.random.key(4), 5)
  # The same key gives different noise for a different batch shape; compare the exact part:
  # the posterior and log p(x|z) at the mean.
  mean_a, _ = model.apply(
    params, batch["inputs"], batch["input_lengths"], method=SentenceVAE.posterior
  )
  mean_b, _ = model.apply(
    params, longer["inputs"], longer["input_lengths"], method=SentenceVAE.posterior
  )
  np.testing.assert_allclose(mean_a, mean_b[:4], rtol=1e-5, atol=1e-6)
  assert a.shape == (4,) and b.shape == (8,) and np.all(np.isfinite(b))


def test_active_units_on_a_constructed_case():
  rng = np.random.default_rng(0)
  means = np.zeros((500, 5), np.float32)
  means[:, 0] = rng.normal(0, 1.0, 500)  # Variance 1: active.
  means[:, 1] = rng.normal(0, 0.3, 500)  # Variance 0.09: active.
  means[:, 2] = rng.normal(0, 0.05, 500)  # Variance 0.0025: inactive.
  means[:, 3] = 4.0  # Constant: inactive however large.
  count, variances = vae_metrics.active_units(means)
  assert count == 2
  np.testing.assert_allclose(variances[:2], [1.0, 0.09], rtol=0.15)


@pytest.mark.slow
def test_mutual_information_is_near_zero_when_the_encoder_ignores_its_input():
  # Every posterior is the same, so q(z) = q(z|x): the estimate is 0 up to the one-sample
  # Monte Carlo error of the entropy term, whose standard deviation is sqrt(Z / 2N) = 0.03.
  num, latent = 2000, 4
  mean = jnp.broadcast_to(jnp.array([0.3, -0.2, 0.0, 1.0]), (num, latent))
  logvar = jnp.full((num, latent), -0.5)
  mi = float(vae_metrics.mutual_information(mean, logvar, jax.random.key(0)))
  assert abs(mi) < 0.15


def test_mutual_information_reaches_log_n_for_distinguishable_codes():
  # Far-apart, narrow posteriors: I(x; z) = H(x) = log N, up to the same Monte Carlo error
  # (standard deviation sqrt(Z / 2N) = 0.04).
  num, latent = 1000, 3
  mean = jax.random.normal(jax.random.key(1), (num, latent)) * 10.0
  logvar = jnp.full((num, latent), np.log(1e-4))
  mi = float(vae_metrics.mutual_information(mean, logvar, jax.random.key(0)))
  np.testing.assert_allclose(mi, np.log(num), atol=0.15)


def test_mutual_information_matches_a_direct_computation():
  mean = jax.random.normal(jax.random.key(2), (30, 2))
  logvar = jax.random.normal(jax.random.key(3), (30, 2)) * 0.5
  rng = jax.random.key(4)
  z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape)
  log_q = vae_metrics.diagonal_normal_log_density(z[:, None, :], mean[None], logvar[None])
  log_aggregate = jax.nn.logsumexp(log_q, 1) - np.log(30)
  negative_entropy = jnp.mean(jnp.sum(-0.5 * np.log(2 * np.pi) - 0.5 * (1 + logvar), -1))
  np.testing.assert_allclose(
    vae_metrics.mutual_information(mean, logvar, rng),
    negative_entropy - jnp.mean(log_aggregate),
    rtol=1e-4,
  )


@pytest.mark.slow
def test_mutual_information_is_near_zero_for_a_model_whose_encoder_ignores_its_input(tiny_vae):
  model, params, _ = tiny_vae
  posterior = params["params"]["encoder_to_posterior"]
  ignoring = {
    "params": {
      **params["params"],
      "encoder_to_posterior": {
        "kernel": jnp.zeros_like(posterior["kernel"]),
        "bias": posterior["bias"],
      },
    }
  }
  sentences = [
    np.array([4 + (i * 7 + j) % 8 for j in range(1 + i % 5)], np.int32) for i in range(2000)
  ]
  batch = batching.pad_batch(sentences, sentences, 2000, 6)
  mean, logvar = model.apply(
    ignoring, batch["inputs"], batch["input_lengths"], method=SentenceVAE.posterior
  )
  assert vae_metrics.active_units(np.asarray(mean))[0] == 0
  assert abs(float(vae_metrics.mutual_information(mean, logvar, jax.random.key(0)))) < 0.15
  # The same sentences through an encoder whose means depend strongly on x carry information.
  reading = {
    "params": {
      **params["params"],
      "encoder_to_posterior": {
        "kernel": posterior["kernel"].at[:, :3].multiply(30.0),
        "bias": posterior["bias"],
      },
    }
  }
  mean, logvar = model.apply(
    reading, batch["inputs"], batch["input_lengths"], method=SentenceVAE.posterior
  )
  assert vae_metrics.active_units(np.asarray(mean))[0] == 3
  assert float(vae_metrics.mutual_information(mean, logvar, jax.random.key(0))) > 1.0


def test_the_elbo_summary_is_per_sentence_and_its_perplexity_per_token():
  sums = {"nll_sum": 30.0, "kl_sum": 6.0, "tokens": 12.0, "sequences": 3.0}
  summary = vae_metrics.elbo_summary(sums)
  assert summary["reconstruction"] == pytest.approx(10.0)
  assert summary["kl"] == pytest.approx(2.0)
  assert summary["neg_elbo"] == pytest.approx(12.0)
  assert summary["elbo_perplexity"] == pytest.approx(np.exp(36.0 / 12.0))
  lm_sums = {"nll_sum": 30.0, "tokens": 12.0, "sequences": 3.0}  # An LM's: no KL.
  assert vae_metrics.elbo_summary(lm_sums) == {}
