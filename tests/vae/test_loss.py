"""Tests for textgen_jax.vae.loss: KL, reparameterisation, annealing, word dropout, free bits,
and the decoder reset of encoder pretraining."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from textgen_jax import training, vae
from textgen_jax.vae import config as vae_config
from textgen_jax.vae import loss as vae_loss
from textgen_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from textgen_jax.errors import TextgenError
from textgen_jax.vae.model import SentenceVAE, SentenceVAEConfig
from textgen_jax.vae.loss import VAEObjective, kl_weight


def test_gaussian_kl_matches_closed_form_per_dimension():
  mean = jnp.array([[0.0, 1.0, -2.0]])
  logvar = jnp.array([[0.0, np.log(0.25), np.log(4.0)]])
  variance = np.exp(np.asarray(logvar))
  # KL(N(m, s^2) || N(0, 1)) = (s^2 + m^2 - 1 - log s^2) / 2, written out independently.
  expected = (variance + np.asarray(mean) ** 2 - 1.0 - np.log(variance)) / 2.0
  np.testing.assert_allclose(vae_loss.gaussian_kl(mean, logvar), expected, rtol=1e-6)
  assert float(vae_loss.gaussian_kl(jnp.zeros((1, 3)), jnp.zeros((1, 3))).sum()) == 0.0


def test_gaussian_kl_matches_a_monte_carlo_estimate():
  mean, logvar = jnp.array([[0.5, -1.0]]), jnp.array([[-0.7, 0.4]])
  z = vae_loss.reparameterize(
    jax.random.key(0), jnp.broadcast_to(mean, (200_000, 2)), jnp.broadcast_to(logvar, (200_000, 2))
  )
  log_q = jax.scipy.stats.norm.logpdf(z, mean, jnp.exp(0.5 * logvar))
  log_p = jax.scipy.stats.norm.logpdf(z)
  estimate = np.asarray(jnp.mean(log_q - log_p, 0))
  np.testing.assert_allclose(estimate, vae_loss.gaussian_kl(mean, logvar)[0], atol=0.01)


def test_reparameterisation_gradient_reaches_mean_and_log_variance():
  # E[z^2] = mean^2 + exp(logvar): d/dmean = 2 mean, d/dlogvar = exp(logvar).
  def expected_square(mean, logvar):
    z = vae_loss.reparameterize(
      jax.random.key(1),
      jnp.broadcast_to(mean, (100_000, 1)),
      jnp.broadcast_to(logvar, (100_000, 1)),
    )
    return jnp.mean(z**2)

  grad_mean, grad_logvar = jax.grad(expected_square, argnums=(0, 1))(
    jnp.array(0.7), jnp.array(-0.5)
  )
  np.testing.assert_allclose(grad_mean, 1.4, atol=0.03)
  np.testing.assert_allclose(grad_logvar, np.exp(-0.5), atol=0.03)


def test_reparameterisation_is_deterministic_given_the_key():
  mean, logvar = jnp.zeros((2, 3)), jnp.zeros((2, 3))
  a = vae_loss.reparameterize(jax.random.key(3), mean, logvar)
  b = vae_loss.reparameterize(jax.random.key(3), mean, logvar)
  c = vae_loss.reparameterize(jax.random.key(4), mean, logvar)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


@pytest.mark.parametrize(
  "step, expected", [(0, 0.0), (25, 0.25), (50, 0.5), (100, 1.0), (1000, 1.0)]
)
def test_linear_schedule(step, expected):
  objective = VAEObjective(kl_schedule="linear", anneal_steps=100)
  np.testing.assert_allclose(kl_weight(objective, step), expected, rtol=1e-6)


@pytest.mark.parametrize(
  "step, expected",
  [(0, 1 / (1 + np.exp(5))), (50, 0.5), (100, 1 / (1 + np.exp(-5))), (10_000, 1.0)],
)
def test_sigmoid_schedule(step, expected):
  objective = VAEObjective(kl_schedule="sigmoid", anneal_steps=100)
  np.testing.assert_allclose(kl_weight(objective, step), expected, rtol=1e-5)


@pytest.mark.parametrize(
  "step, expected",
  [(0, 0.0), (20, 0.5), (40, 1.0), (99, 1.0), (100, 0.0), (120, 0.5), (150, 1.0), (310, 0.25)],
)
def test_cyclical_schedule(step, expected):
  # Fu et al.: each period of 100 steps rises linearly for R = 40% of it, then holds beta_max.
  objective = VAEObjective(kl_schedule="cyclical", cycle_steps=100, cycle_ratio=0.4)
  np.testing.assert_allclose(kl_weight(objective, step), expected, rtol=1e-5, atol=1e-7)


def test_constant_schedule_and_beta_max():
  objective = VAEObjective(kl_schedule="constant", beta_max=0.3)
  np.testing.assert_allclose(kl_weight(objective, 0), 0.3, rtol=1e-6)
  linear = VAEObjective(kl_schedule="linear", anneal_steps=10, beta_max=0.5)
  np.testing.assert_allclose(kl_weight(linear, 5), 0.25, rtol=1e-6)


def test_pretraining_holds_beta_at_zero_then_starts_the_schedule():
  objective = VAEObjective(kl_schedule="linear", anneal_steps=10, pretrain_steps=30)
  weights = [float(kl_weight(objective, s)) for s in (0, 29, 30, 35, 40, 100)]
  np.testing.assert_allclose(weights, [0.0, 0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-7)


def test_word_dropout_rate_and_what_it_never_drops():
  inputs = np.full((400, 12), PAD_ID, np.int32)
  inputs[:, 0] = BOS_ID
  inputs[:, 1:9] = np.arange(10, 18)
  inputs[:, 9] = EOS_ID
  dropped = np.asarray(vae_loss.word_dropout(jax.random.key(0), jnp.asarray(inputs), 0.3))
  words = inputs >= 4
  assert np.all(dropped[~words] == inputs[~words])  # BOS, EOS and PAD untouched.
  changed = dropped[words] != inputs[words]
  assert np.all(dropped[words][changed] == UNK_ID)  # Whole words become UNK.
  rate = changed.mean()
  assert abs(rate - 0.3) < 4 * np.sqrt(0.3 * 0.7 / changed.size)


def test_word_dropout_extremes():
  inputs = jnp.array([[BOS_ID, 5, 6, 7, EOS_ID, PAD_ID]])
  np.testing.assert_array_equal(vae_loss.word_dropout(jax.random.key(0), inputs, 0.0), inputs)
  np.testing.assert_array_equal(
    vae_loss.word_dropout(jax.random.key(0), inputs, 1.0),
    [[BOS_ID, UNK_ID, UNK_ID, UNK_ID, EOS_ID, PAD_ID]],
  )


@pytest.mark.parametrize("mode", ["per_dimension", "per_batch"])
def test_free_bits_give_no_kl_gradient_below_the_threshold(mode):
  objective = VAEObjective(free_bits=0.5, free_bits_mode=mode)
  mask = jnp.ones((2,))

  def term(mean):
    return vae_loss.kl_objective(vae_loss.gaussian_kl(mean, jnp.zeros_like(mean)), mask, objective)

  small = jnp.full((2, 3), 0.1)  # KL 0.005 per dimension: below 0.5 both ways.
  np.testing.assert_array_equal(jax.grad(term)(small), np.zeros((2, 3)))
  large = jnp.full((2, 3), 2.0)  # KL 2 per dimension: above.
  np.testing.assert_allclose(jax.grad(term)(large), np.full((2, 3), 1.0), rtol=1e-6)
  np.testing.assert_allclose(term(small), 1.5 if mode == "per_dimension" else 0.5, rtol=1e-6)


def test_free_bits_per_dimension_only_frees_the_dimensions_below():
  objective = VAEObjective(free_bits=0.5, free_bits_mode="per_dimension")
  mean = jnp.array([[0.1, 2.0]])
  grad = jax.grad(
    lambda m: vae_loss.kl_objective(
      vae_loss.gaussian_kl(m, jnp.zeros_like(m)), jnp.ones((1,)), objective
    )
  )(mean)
  np.testing.assert_allclose(grad, [[0.0, 2.0]], rtol=1e-6)


def test_kl_objective_ignores_filler_rows():
  objective = VAEObjective()
  kl = jnp.array([[1.0, 2.0], [100.0, 100.0]])
  np.testing.assert_allclose(vae_loss.kl_objective(kl, jnp.array([1.0, 0.0]), objective), 3.0)


@pytest.mark.parametrize(
  "field, value, flag",
  [
    ("kl_schedule", "cosine", "kl_schedule"),
    ("free_bits_mode", "per_word", "free_bits_mode"),
    ("anneal_steps", 0, "anneal_steps"),
    ("free_bits", -1.0, "free_bits"),
    ("word_dropout", 1.5, "word_dropout"),
    ("cycle_ratio", 0.0, "cycle_ratio"),
    ("pretrain_steps", -2, "pretrain_steps"),
  ],
)
def test_bad_objective_settings_name_the_flag(field, value, flag):
  config = vae.get_config()
  config.vae[field] = value
  with pytest.raises(TextgenError, match=f"--config.vae.{flag}"):
    vae_config.validate(config)


def dataclass_dict():
  import dataclasses

  return dataclasses.asdict(VAEObjective())


@pytest.mark.slow
def test_decoder_reset_restores_the_decoder_and_keeps_the_encoder():
  model = SentenceVAE(SentenceVAEConfig(vocab_size=12, embed_dim=4, hidden_size=8, latent_size=2))
  tokens = jnp.array([[5, 6, 7]])

  def init(rng):
    return model.init(rng, tokens, jnp.array([3]), tokens, jnp.zeros((1, 2)))

  fresh = init(jax.random.key(9))
  optimizer = training.make_optimizer(
    ml_collections.ConfigDict(
      dict(
        name="adam",
        learning_rate=1e-2,
        b1=0.9,
        b2=0.999,
        weight_decay=0.0,
        warmup_steps=0,
        schedule="constant",
        grad_clip_norm=0.0,
        skip_non_finite=0,
      )
    ),
    100,
  )
  state = training.create_train_state(None, init(jax.random.key(0)), optimizer)
  state = state.replace(
    params=jax.tree.map(lambda x: x + 1.0, state.params),
    opt_state=jax.tree.map(lambda x: x + 1, state.opt_state),
    step=7,
  )
  hook = vae_loss.pretraining_reset(VAEObjective(pretrain_steps=7), model, init, jax.random.key(9))
  reset = jax.jit(hook)(state)
  for name, value in reset.params["params"].items():
    expected = fresh if name in model.decoder_modules() else state.params
    jax.tree.map(np.testing.assert_array_equal, value, expected["params"][name])
  jax.tree.map(np.testing.assert_array_equal, reset.opt_state, optimizer.init(reset.params))
  assert int(reset.step) == 7
  untouched = jax.jit(hook)(state.replace(step=8))
  jax.tree.map(np.testing.assert_array_equal, untouched.params, state.params)
  assert vae_loss.pretraining_reset(VAEObjective(), model, init, jax.random.key(9)) is None


def test_the_declared_decoder_side_is_what_p_x_given_z_uses():
  model = SentenceVAE(SentenceVAEConfig(vocab_size=12, embed_dim=4, hidden_size=8, latent_size=2))
  tokens = jnp.array([[5, 6, 7]])
  params = model.init(jax.random.key(0), tokens, jnp.array([3]), tokens, jnp.zeros((1, 2)))
  names = set(params["params"])
  assert names == {
    "encoder_embedding",
    "encoder_lstm",
    "encoder_to_posterior",
    "decoder_initial_state_0",
    "decoder_embedding",
    "decoder_lstm",
    "output_layer",
  }
  assert set(model.decoder_modules()) == names - {
    "encoder_embedding",
    "encoder_lstm",
    "encoder_to_posterior",
  }
  lm = SentenceVAE(SentenceVAEConfig(vocab_size=12, kind="lm", embed_dim=4, hidden_size=8))
  lm_params = lm.init(jax.random.key(0), tokens, jnp.array([3]), tokens, None)
  assert (
    set(lm_params["params"])
    == set(lm.decoder_modules())
    == {"decoder_embedding", "decoder_lstm", "output_layer"}
  )


@pytest.mark.slow
def test_eval_loss_is_the_negative_elbo_whatever_the_schedule():
  model = SentenceVAE(SentenceVAEConfig(vocab_size=12, embed_dim=4, hidden_size=8, latent_size=2))
  tokens = jnp.array([[5, 6, 7, 0], [8, 0, 0, 0]])
  targets = jnp.array([[5, 6, 7, EOS_ID], [8, EOS_ID, 0, 0]])
  batch = {"inputs": tokens, "input_lengths": jnp.array([3, 1]), "targets": targets}
  params = model.init(jax.random.key(0), tokens, jnp.array([3, 1]), tokens, jnp.zeros((2, 2)))
  loss_fn = functools.partial(
    vae_loss.sentence_loss, params, batch, jax.random.key(1), True, model=model
  )
  loss, sums = loss_fn(objective=VAEObjective(free_bits=5.0, beta_max=0.1))
  np.testing.assert_allclose(loss, (sums["nll_sum"] + sums["kl_sum"]) / 2, rtol=1e-6)
  annealed, _ = loss_fn(objective=VAEObjective(anneal_steps=10), step=jnp.int32(5))
  np.testing.assert_allclose(annealed, (sums["nll_sum"] + 0.5 * sums["kl_sum"]) / 2, rtol=1e-6)
  assert float(sums["tokens"]) == 6 and float(sums["sequences"]) == 2


@pytest.mark.parametrize("schedule", vae_loss.KL_SCHEDULES)
def test_a_population_members_schedule_index_gives_that_schedules_beta(schedule):
  """A member's KL schedule is traced as its index among KL_SCHEDULES."""
  objective = VAEObjective(
    kl_schedule=schedule, anneal_steps=20, cycle_steps=10, pretrain_steps=3, beta_max=0.7
  )
  index = float(vae_loss.KL_SCHEDULES.index(schedule))
  member = jax.jit(
    lambda i, step: kl_weight(
      VAEObjective(kl_schedule=i, anneal_steps=20, cycle_steps=10, pretrain_steps=3, beta_max=0.7),
      step,
    )
  )
  steps = [0, 3, 5, 9, 14, 25, 40]
  np.testing.assert_allclose(
    [member(index, s) for s in steps], [kl_weight(objective, s) for s in steps], rtol=1e-6
  )


@pytest.mark.parametrize("mode", vae_loss.FREE_BITS_MODES)
def test_a_population_members_free_bits_mode_index_gives_that_modes_term(mode):
  kl_BxZ = jnp.array([[0.1, 0.9, 0.2], [0.3, 0.5, 0.0]])
  mask_B = jnp.array([1.0, 1.0])
  expected = vae_loss.kl_objective(kl_BxZ, mask_B, VAEObjective(free_bits=0.3, free_bits_mode=mode))
  index = float(vae_loss.FREE_BITS_MODES.index(mode))
  got = jax.jit(
    lambda i: vae_loss.kl_objective(kl_BxZ, mask_B, VAEObjective(free_bits=0.3, free_bits_mode=i))
  )(index)
  np.testing.assert_allclose(got, expected, rtol=1e-6)
