"""Tests for textgen_jax.training: the train and eval steps, schedules and optimizers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import assert_trees_equal, copy_tree, opt_config, trees_differ
from textgen_jax import seq2seq, training
from textgen_jax.errors import TextgenError


def test_train_step_lowers_the_loss_on_a_fixed_batch(setup):
  state = setup.fresh_state()
  initial_loss = setup.loss(state.params)
  train_losses = []
  for _ in range(8):
    state, sums = setup.train_step(state, setup.batch, jax.random.key(0))
    train_losses.append(float(sums["nll_sum"] / sums["tokens"]))
  assert int(state.step) == 8
  assert setup.loss(state.params) < initial_loss - 0.2
  assert train_losses[-1] < train_losses[0]
  assert trees_differ(state.params, setup.params)


def test_train_step_metric_sums(setup):
  state, sums = setup.train_step(setup.fresh_state(), setup.batch, jax.random.key(0))
  assert sums["tokens"] == 6 + 1 + 2 + 1 + 4 + 1
  assert sums["sequences"] == 3
  expected_param_norm = math.sqrt(
    sum(float(np.sum(np.square(np.asarray(x)))) for x in jax.tree.leaves(state.params))
  )
  assert float(sums["param_norm"]) == pytest.approx(expected_param_norm, rel=1e-5)
  assert float(sums["grad_norm"]) > 0


def test_train_step_is_deterministic_and_uses_its_rng(setup):
  state = setup.train(setup.fresh_state(), 1)
  first, first_sums = setup.train_step(copy_tree(state), setup.batch, jax.random.key(5))
  again, again_sums = setup.train_step(copy_tree(state), setup.batch, jax.random.key(5))
  other, _ = setup.train_step(copy_tree(state), setup.batch, jax.random.key(6))
  assert_trees_equal(first.params, again.params)
  assert_trees_equal(first_sums, again_sums)
  assert trees_differ(first.params, other.params)  # Dropout draws from the rng.


def test_eval_step_has_no_dropout(setup):
  first = jax.device_get(setup.eval_step(setup.params, setup.batch))
  again = jax.device_get(setup.eval_step(copy_tree(setup.params), setup.batch))
  assert first == again
  loss, sums = seq2seq.loss.loss(
    setup.params, setup.batch, jax.random.key(3), True, model=setup.model
  )
  np.testing.assert_allclose(first["nll_sum"], sums["nll_sum"], rtol=1e-5)


def test_learning_rate_schedules():
  warmup = training.make_learning_rate_schedule(
    opt_config(warmup_steps=10, schedule="constant"), 100
  )
  assert float(warmup(0)) == 0.0
  assert float(warmup(5)) == pytest.approx(5e-3)
  assert float(warmup(10)) == pytest.approx(1e-2) and float(warmup(99)) == pytest.approx(1e-2)
  cosine = training.make_learning_rate_schedule(opt_config(warmup_steps=10, schedule="cosine"), 110)
  assert float(cosine(10)) == pytest.approx(1e-2)
  assert float(cosine(110)) == pytest.approx(1e-3)  # Decays to 10%.
  assert float(cosine(60)) < float(cosine(30)) < 1e-2
  rsqrt = training.make_learning_rate_schedule(opt_config(warmup_steps=4, schedule="rsqrt"), 100)
  assert float(rsqrt(4)) == pytest.approx(1e-2)
  assert float(rsqrt(12)) == pytest.approx(1e-2 * math.sqrt(4 / 12))


def test_make_optimizer_rejects_unknown_names():
  with pytest.raises(TextgenError, match="opt.name"):
    training.make_optimizer(opt_config(name="adagrad"), 10)
  with pytest.raises(TextgenError, match="opt.schedule"):
    training.make_optimizer(opt_config(schedule="linear"), 10)
  params = {"w": jnp.ones(3)}
  updates = {}
  for name in ("adam", "adamw", "sgd"):
    optimizer = training.make_optimizer(opt_config(name=name, grad_clip_norm=0.0), 10)
    state = optimizer.init(params)
    for _ in range(2):  # Step 0 of the warmup has learning rate 0.
      update, state = optimizer.update({"w": jnp.array([1.0, -2.0, 0.5])}, state, params)
    updates[name] = np.asarray(update["w"])
    assert np.all(np.sign(updates[name]) == [-1, 1, -1]), name  # Against the gradient.
  assert not np.allclose(updates["adam"], updates["sgd"])
