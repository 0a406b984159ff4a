"""Tests for textgen_jax.vae.aggressive: He et al. 2019's aggressive encoder training."""

import functools
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import (
  SENTENCES,
  assert_trees_equal,
  read_metrics,
  strip_run_state,
  tiny_vae_config,
  write_text,
)
from textgen_jax import training, vae
from textgen_jax.errors import TextgenError
from textgen_jax.metrics import MetricWriter
from textgen_jax.training import DECODER_SIDE, ENCODER_SIDE
from textgen_jax.vae import aggressive


def toy_loss(params, batch, rng, deterministic, *, step):
  """A loss whose per-token value is the batch's `x` (what the stopping rule reads), with a
  gradient for both sides."""
  del rng, deterministic, step
  weights = params["params"]
  loss = batch["x"] * (jnp.sum(weights["encoder"]["w"] ** 2) + jnp.sum(weights["decoder"]["w"]))
  sums = {
    "nll_sum": batch["x"],
    "tokens": jnp.float32(1.0),
    "kl_sum": jnp.float32(0.0),
    "kl_weight": jnp.float32(0.0),
  }
  return loss, sums


def toy_state(opt_overrides=None):
  params = {"params": {"encoder": {"w": jnp.ones(3)}, "decoder": {"w": jnp.ones(2)}}}
  sides = aggressive.side_labels(("decoder",))
  config = vae.get_config()
  config.opt.update(opt_overrides or {})
  tx = training.make_optimizer(config.opt, 100, sides=sides)
  return training.create_train_state(None, params, tx), sides


def toy_procedure(mutual_information=lambda params: 0.0, **overrides):
  _, sides = toy_state()
  settings = dict(
    loss_fn=toy_loss,
    before_update=None,
    sides=sides,
    num_batches=4,
    mutual_information=mutual_information,
    data_seed=0,
    dropout_key=jax.random.key(1),
    encoder_key=jax.random.key(2),
    max_steps=100,
    check_every=3,
  )
  return aggressive.AggressiveTraining(**{**settings, **overrides})


def test_sides_label_the_decoder_modules_and_the_rest_is_the_encoder():
  state, sides = toy_state()
  assert sides(state.params) == {
    "params": {"encoder": {"w": ENCODER_SIDE}, "decoder": {"w": DECODER_SIDE}}
  }


@pytest.mark.parametrize(
  "updated, frozen", [(ENCODER_SIDE, DECODER_SIDE), (DECODER_SIDE, ENCODER_SIDE)]
)
def test_a_one_sided_update_leaves_the_other_side_and_its_optimizer_state_as_they_were(
  updated, frozen
):
  state, sides = toy_state()
  batch = {"x": jnp.float32(1.0)}
  keep = functools.partial(training.keep_side, side=frozen, sides=sides)
  new, _ = training.train_step(state, batch, jax.random.key(0), loss_fn=toy_loss, after_update=keep)
  name = {ENCODER_SIDE: "encoder", DECODER_SIDE: "decoder"}
  assert_trees_equal(new.params["params"][name[frozen]], state.params["params"][name[frozen]])
  assert not np.allclose(
    new.params["params"][name[updated]]["w"], state.params["params"][name[updated]]["w"]
  )
  # Each side's optimizer state (moments and count) lives under its label.
  inner = lambda s: s.opt_state[1].inner_states  # chain(clip, multi_transform)
  assert_trees_equal(inner(new)[frozen], inner(state)[frozen])
  assert int(inner(new)[updated].inner_state[0].count) == 1
  # A joint update moves both sides, with each side's own state.
  joint, _ = training.train_step(state, batch, jax.random.key(0), loss_fn=toy_loss)
  for side in (ENCODER_SIDE, DECODER_SIDE):
    assert int(inner(joint)[side].inner_state[0].count) == 1


def test_the_encoder_loop_stops_when_a_blocks_loss_per_token_rises():
  """Blocks of 3 updates with mean losses 5, 4, 3, then 3.5: the loop ends after 12 updates."""
  losses = [5, 5, 5, 4, 4, 4, 3, 3, 3, 3.5, 3.5, 3.5] + [1.0] * 100
  calls = []

  def device_batch(index):
    calls.append(index)
    return {"x": jnp.float32(losses[len(calls) - 1])}

  procedure = toy_procedure()
  state, _ = toy_state()
  state, updates = procedure._train_encoder(state, 5, device_batch)
  assert updates == 12
  assert calls[0] == 5 and all(4 <= index < 8 for index in calls)  # Its epoch's batches.
  assert int(state.step) == 0  # Encoder updates are not train steps.
  # Without a rise it runs to max_steps.
  calls.clear()
  losses[:] = [10.0 - 0.01 * i for i in range(200)]
  _, updates = toy_procedure(max_steps=10)._train_encoder(toy_state()[0], 0, device_batch)
  assert updates == 10


def test_the_phase_stops_for_good_when_the_held_out_mi_falls_and_resumes_so(tmp_path):
  values = iter([1.0, 2.0, 1.5])
  procedure = toy_procedure(mutual_information=lambda params: next(values))
  writer = MetricWriter(str(tmp_path))
  ordinary_calls = []

  def ordinary_step(state, index):
    ordinary_calls.append(index)
    return state, {"nll_sum": jnp.float32(0.0)}

  step = procedure.wrap(ordinary_step, lambda index: {"x": jnp.float32(1.0)}, writer)
  state, _ = toy_state()
  encoder_steps = []
  for index in range(16):  # Four epochs of 4 batches.
    state, sums = step(state, index)
    encoder_steps.append(float(sums["encoder_steps"]))
  checks = [(r["step"], r["aggressive_mi"], r["aggressive"]) for r in writer.read()]
  assert checks == [(4, 1.0, True), (8, 2.0, True), (12, 1.5, False)]
  assert all(n > 0 for n in encoder_steps[:12]) and encoder_steps[12:] == [0.0] * 4
  assert ordinary_calls == [12, 13, 14, 15]
  assert procedure.run_state() == {"active": False, "last_mi": 1.5}
  resumed = toy_procedure()
  resumed.restore({"active": True, "last_mi": 2.0}, records=[])  # A checkpoint's run state.
  assert resumed.active and resumed.last_mi == 2.0
  resumed.restore(procedure.run_state(), records=[])
  assert not resumed.active and resumed.last_mi == 1.5
  # A checkpoint written before the run state: the log's last check before it.
  old = toy_procedure()
  old.restore(None, [r for r in writer.read() if r["step"] <= 8])
  assert old.active and old.last_mi == 2.0
  old.restore(None, writer.read())
  assert not old.active


def aggressive_config(tmp_path, **overrides):
  corpus = write_text(tmp_path / "corpus.txt", "\n".join(SENTENCES * 2) + "\n")
  return tiny_vae_config(
    corpus,
    **{
      "train__log_every": 1,
      "train__checkpoint_every": 3,
      "vae__aggressive": True,
      "vae__aggressive_max_steps": 4,
      "vae__aggressive_check_every": 2,
      **overrides,
    },
  )


@pytest.mark.slow
def test_an_aggressive_run_checks_mi_each_epoch_and_resumes_bit_exactly(tmp_path):
  config = aggressive_config(tmp_path, train__num_steps=8)
  straight = str(tmp_path / "straight")
  model = vae.train_and_evaluate(config, straight)
  records = read_metrics(straight)
  train = [r for r in records if "train_loss" in r]
  checks = [r for r in records if "aggressive_mi" in r]
  # 16 sentences in batches of 8: two batches an epoch, so a check every 2 steps.
  assert [r["step"] for r in checks] == [2, 4, 6, 8][: len(checks)] and checks
  active_until = next((r["step"] for r in checks if not r["aggressive"]), 8)
  assert all(2 <= r["encoder_steps"] <= 4 for r in train if r["step"] <= active_until)
  assert all(r["encoder_steps"] == 0 for r in train if r["step"] > active_until)
  resumed = str(tmp_path / "resumed")
  config.train.num_steps = 3
  vae.train_and_evaluate(config, resumed)
  old = str(tmp_path / "old")  # Checkpoints written before they held the run state.
  shutil.copytree(resumed, old)
  strip_run_state(old)
  os.remove(os.path.join(resumed, "metrics.jsonl"))  # A log only: the phase is in the checkpoint.
  config.train.num_steps = 8
  again = vae.train_and_evaluate(config, resumed)
  # The same train records and epoch checks after the resumed step.
  after_resume = lambda rs: [r for r in rs if "valid_loss" not in r and r["step"] > 3]
  assert after_resume(read_metrics(resumed)) == after_resume(records)
  assert_trees_equal(again.params, model.params)
  assert_trees_equal(vae.train_and_evaluate(config, old).params, model.params)  # From the log.


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"model__kind": "lm"}, "model.kind='lm' has none"),
    ({"population__num_members": 2}, "one model per program"),
    ({"vae__aggressive_check_every": 0}, "aggressive_check_every must be at least 1"),
  ],
)
def test_aggressive_settings_that_cannot_work_are_one_line_errors(tmp_path, overrides, message):
  with pytest.raises(TextgenError, match=message):
    vae.train_and_evaluate(aggressive_config(tmp_path, **overrides), str(tmp_path / "w"))


@pytest.mark.slow  # A training, then a refused one.
def test_switching_aggressive_training_on_a_workdir_is_refused(tmp_path):
  """Its optimizer state has another structure, so the old checkpoint cannot be resumed."""
  config = aggressive_config(tmp_path, train__num_steps=1, vae__aggressive=False)
  vae.train_and_evaluate(config, str(tmp_path / "w"))
  config.vae.aggressive, config.train.num_steps = True, 2
  with pytest.raises(TextgenError, match="differing from its config.json: vae.aggressive"):
    vae.train_and_evaluate(config, str(tmp_path / "w"))
