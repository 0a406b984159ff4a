"""Tests for textgen_jax/plateau.py: the plateau schedule and early stopping, alone and through
the training loop (decays and stops where they should, resumes exactly, inference loads the
best checkpoint)."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import assert_trees_equal, make_pairs, read_metrics, tiny_config, write_tsv
from textgen_jax import plateau, seq2seq, vae
from textgen_jax.vae import config as vae_config
from textgen_jax.errors import TextgenError


def _config(**overrides):
  config = seq2seq.get_config()
  config.opt.schedule, config.opt.plateau_patience, config.opt.plateau_max_decays = "plateau", 2, 2
  for name, value in overrides.items():
    section, field = name.split("__")
    config[section][field] = value
  return config


def _run(values, config, higher=False):
  state = plateau.read(plateau.scale_by_plateau().init(None))
  states = []
  for step, value in enumerate(values, start=1):
    state = plateau.update(state, value, step, config, higher)
    states.append(state)
  return states


def test_the_rate_halves_after_patience_evaluations_without_improvement_at_most_max_times():
  states = _run([5.0, 4.0, 4.5, 4.2, 4.1, 4.3, 3.9, 4.0, 4.0, 4.0, 4.0, 4.0], _config())
  scales = [float(s.plateau_scale) for s in states]
  # Improvements at 1, 2, 7; two evaluations without one halve (steps 4 and 6), then the count
  # starts again; the third decay (after 7) is not taken: plateau_max_decays=2.
  assert scales == [1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25]
  assert [int(s.plateau_best_step) for s in states][-1] == 7
  assert [int(s.plateau_stale) for s in states] == [0, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5]
  assert float(states[-1].plateau_best) == pytest.approx(3.9)


def test_a_higher_is_better_metric_and_a_constant_schedule_never_decay():
  states = _run([0.1, 0.3, 0.2, 0.2, 0.2], _config(opt__schedule="constant"), higher=True)
  assert all(float(s.plateau_scale) == 1 for s in states)
  assert int(states[-1].plateau_best_step) == 2 and int(states[-1].plateau_stale) == 3
  assert plateau.should_stop(states[-1], _config(train__early_stopping_patience=3))
  assert not plateau.should_stop(states[-1], _config(train__early_stopping_patience=4))
  assert not plateau.should_stop(states[-1], _config())  # 0: off.


def test_members_follow_their_own_metric():
  state = plateau.read(jax.vmap(lambda _: plateau.scale_by_plateau().init(None))(jnp.arange(2)))
  for step, values in enumerate([[3.0, 3.0], [2.0, 3.5], [1.0, 3.5]], start=1):
    state = plateau.update(state, np.asarray(values), step, _config(), False)
  np.testing.assert_array_equal(state.plateau_scale, [1.0, 0.5])
  np.testing.assert_array_equal(state.plateau_best_step, [3, 1])


def test_the_transform_scales_updates_by_its_state():
  tx = plateau.scale_by_plateau()
  state = tx.init(None)._replace(plateau_scale=jnp.asarray(0.25, jnp.float32))
  updates, _ = tx.update({"w": jnp.ones(3)}, state)
  np.testing.assert_array_equal(updates["w"], [0.25] * 3)


@pytest.mark.slow  # Trainings: 15 s.
def test_plateau_training_decays_and_resumes_exactly(tmp_path):
  # A rate too high to keep improving: the held-out loss plateaus, the rate halves.
  pairs = write_tsv(tmp_path / "pairs.tsv", make_pairs(40))
  settings = dict(
    opt__schedule="plateau",
    opt__plateau_patience=1,
    opt__learning_rate=0.3,
    train__eval_every=1,
    train__checkpoint_every=3,
  )
  whole = seq2seq.train_and_evaluate(tiny_config(pairs, **settings), str(tmp_path / "whole"))
  scales = [
    r["learning_rate_scale"]
    for r in read_metrics(str(tmp_path / "whole"))
    if "learning_rate_scale" in r
  ]
  assert len(scales) == 6 and scales[-1] < 1 and scales == sorted(scales, reverse=True)
  resumed_dir = str(tmp_path / "resumed")
  seq2seq.train_and_evaluate(tiny_config(pairs, **{**settings, "train__num_steps": 3}), resumed_dir)
  resumed = seq2seq.train_and_evaluate(tiny_config(pairs, **settings), resumed_dir)
  assert_trees_equal(resumed.params, whole.params)
  assert read_metrics(resumed_dir) == read_metrics(str(tmp_path / "whole"))


@pytest.mark.slow  # Trainings: 15 s.
def test_early_stopping_stops_at_patience_resumes_as_stopped_and_loads_the_best(tmp_path):
  # Held-out exact match stays 0 on this tiny run: the first evaluation is the best, and two
  # more without improvement stop the run at step 3 of 6.
  pairs = write_tsv(tmp_path / "pairs.tsv", make_pairs(40))
  settings = dict(
    train__early_stopping_patience=2,
    train__eval_every=1,
    train__held_out_metric="valid_exact_match",
  )
  workdir = str(tmp_path / "w")
  seq2seq.train_and_evaluate(tiny_config(pairs, **settings), workdir)
  assert max(r["step"] for r in read_metrics(workdir)) == 3
  assert [r["best_step"] for r in read_metrics(workdir) if "best_step" in r] == [1, 1, 1]
  seq2seq.train_and_evaluate(tiny_config(pairs, **settings), workdir)  # Stopped: stays so.
  assert max(r["step"] for r in read_metrics(workdir)) == 3
  at_step_1 = seq2seq.train_and_evaluate(
    tiny_config(pairs, train__num_steps=1), str(tmp_path / "one")
  )
  assert_trees_equal(seq2seq.Translator.load(workdir).params, at_step_1.params)
  assert seq2seq.Translator.load(workdir, step=3).params is not None  # --step reads checkpoints/.


def test_a_run_killed_after_saving_its_best_resumes_saves_it_again_and_keeps_one(tmp_path):
  # Killed after step 3's evaluation saved the best but before step 3's checkpoint (removing
  # that checkpoint leaves the workdir so): the resumed run repeats the evaluation, whose best
  # is already on disk (orbax's StepAlreadyExistsError, once), then finds a better one at step
  # 6, and the best of step 3 goes (a name clash in orbax's deleted/ folder, once).
  pairs = write_tsv(tmp_path / "pairs.tsv", make_pairs(40))
  settings = dict(train__early_stopping_patience=5, train__eval_every=3, train__checkpoint_every=2)
  workdir = tmp_path / "w"
  best_steps = lambda: sorted(p.name for p in (workdir / "best").iterdir() if p.name.isdigit())
  seq2seq.train_and_evaluate(tiny_config(pairs, train__num_steps=3, **settings), str(workdir))
  assert best_steps() == ["3"]
  shutil.rmtree(workdir / "checkpoints" / "3")
  final = seq2seq.train_and_evaluate(
    tiny_config(pairs, train__num_steps=6, **settings), str(workdir)
  )
  losses = [(r["step"], r["valid_loss"]) for r in read_metrics(workdir) if "valid_loss" in r]
  assert [step for step, _ in losses] == [3, 6] and losses[1][1] < losses[0][1]
  assert best_steps() == ["6"]
  assert_trees_equal(seq2seq.Translator.load(str(workdir)).params, final.params)
  # Replaced bests do not pile up: orbax moves one away, the next save empties the folder.
  assert len(os.listdir(workdir / "best" / "deleted")) <= 1


@pytest.mark.slow  # Trains to the first evaluation.
def test_bad_held_out_settings_are_one_line_errors(tmp_path):
  pairs = write_tsv(tmp_path / "pairs.tsv", make_pairs(40))
  with pytest.raises(
    TextgenError,
    match="held_out_metric='valid_bleu': the held-out evaluation "
    "gives valid_exact_match, valid_loss",
  ):
    seq2seq.train_and_evaluate(
      tiny_config(pairs, opt__schedule="plateau", train__held_out_metric="valid_bleu"),
      str(tmp_path / "w"),
    )
  with pytest.raises(TextgenError, match="plateau_factor must be in"):
    seq2seq.config.validate(_config(opt__plateau_factor=1.0))


def test_an_lm_follows_its_loss_and_is_told_so_when_asked_to_follow_an_elbo():
  config = vae.get_config()
  config.model.kind = "lm"
  vae_config.validate(config)  # Not following the metric: the VAE's default is no matter.
  config.opt.schedule = "plateau"
  with pytest.raises(TextgenError, match="an LM has no latent, so no ELBO or KL; use valid_loss"):
    vae_config.validate(config)
  assert vae.ptb_config(kind="lm").train.held_out_metric == "valid_loss"
