"""Damaged checkpoints: each kind of file truncated or flipped, in the newest or every checkpoint,
found by the checksums and survived by inference and training (experiments/checkpoint_faults.py
runs the same trials by the hundred for docs/reliability.md's figures)."""

import os
import shutil

import numpy as np
import pytest

from experiments import checkpoint_faults as faults
from tests.helpers import assert_trees_equal, make_pairs, run_script, tiny_config, write_tsv
from textgen_jax import metrics, seq2seq
from textgen_jax.checkpointing import CHECKSUMS_FILE, Checkpointer
from textgen_jax.errors import TextgenError
from textgen_jax import workdir as workdir_lib
from textgen_jax.workdir import checkpoint_dir

# Trains a run to damage (seconds), then restores and trains on.
pytestmark = pytest.mark.slow

CELLS = [
  (target, kind, fault)
  for target in faults.TARGETS
  for kind in faults.KINDS
  for fault in faults.FAULTS
]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> faults.Run:
  """Six steps with checkpoints at 2, 4 and 6, each read back as saved."""
  directory = tmp_path_factory.mktemp("faults")
  train_path = write_tsv(directory / "pairs.tsv", make_pairs(40))
  return faults.train_run(
    tiny_config(train_path, train__checkpoint_every=2), str(directory / "run")
  )


def _damaged_copy(run: faults.Run, directory, steps, fault="flip", seed=0) -> str:
  """A copy of the run with one data file of each of `steps` damaged."""
  workdir = str(directory / "damaged")
  shutil.copytree(run.workdir, workdir)
  rng = np.random.default_rng(seed)
  for step in steps:
    data_dir = os.path.join(checkpoint_dir(workdir), str(step), "params", "ocdbt.process_0", "d")
    name = sorted(os.listdir(data_dir))[0]
    faults.damage(os.path.join(data_dir, name), fault, rng)
  return workdir


@pytest.mark.parametrize("target,kind,fault", CELLS)
def test_damage_of_each_kind_is_found_or_changes_nothing(run, tmp_path, target, kind, fault):
  """Inference loads the newest intact checkpoint as saved (or fails in one line when none is
  left); training's restore moves exactly the damaged newer ones aside and restores the newest
  intact state exactly. Damage to files outside the checksums (UNCHECKED_FILES) must leave the
  checkpoint restoring as saved."""
  record = faults.trial(
    run,
    str(tmp_path),
    target,
    kind,
    fault,
    np.random.default_rng([CELLS.index((target, kind, fault)), 15]),
  )
  assert record["recovered"], record["problems"]
  assert bool(record["moved_aside"]) == (run.steps[-1] in record["checked_damage"])


@pytest.mark.parametrize(
  "target,kind,fault", [("newest", "data", "flip"), ("every", "manifest", "truncate")]
)
def test_training_on_from_damage_ends_where_the_undamaged_run_ends(
  run, tmp_path, target, kind, fault
):
  """Resumption from the newest intact checkpoint (or from scratch) is exact: the final
  parameters and every train record (metrics.jsonl cut back, then rewritten) are the undamaged
  run's."""
  record = faults.trial(
    run, str(tmp_path), target, kind, fault, np.random.default_rng(3), resume=True
  )
  assert record["recovered"], record["problems"]
  assert record["steps_lost"] == (2 if target == "newest" else 6)


def test_training_names_each_checkpoint_set_aside_and_the_steps_lost(run, tmp_path, capsys):
  workdir = _damaged_copy(run, tmp_path, [6, 4])
  seq2seq.train_and_evaluate(run.config, workdir)
  out = capsys.readouterr().out
  for step in (6, 4):
    assert f"{checkpoint_dir(workdir)}/{step}: corrupt checkpoint (params/ocdbt.process_0/d/" in out
    assert f"moved to {checkpoint_dir(workdir)}/corrupt/{step}\n" in out
  assert "The newest intact checkpoint is at step 2: 4 steps are lost" in out
  assert "Resuming from the checkpoint at step 2" in out
  assert sorted(os.listdir(os.path.join(checkpoint_dir(workdir), "corrupt"))) == ["4", "6"]
  steps = [r["step"] for r in metrics.MetricWriter(workdir).read() if "train_loss" in r]
  assert steps == list(range(1, 7))  # Cut back to step 2, then rewritten once.


def test_a_checkpoint_damaged_again_in_corrupt_keeps_both(run, tmp_path):
  """Setting aside never overwrites: a second damaged step 6 goes beside the first."""
  workdir = _damaged_copy(run, tmp_path, [6])
  checkpointer = Checkpointer(checkpoint_dir(workdir), for_training=True)
  assert [step for step, _, _ in checkpointer.set_aside_corrupt()] == [6]
  shutil.copytree(
    os.path.join(run.workdir, "checkpoints", "6"), os.path.join(checkpoint_dir(workdir), "6")
  )
  os.truncate(os.path.join(checkpoint_dir(workdir), "6", CHECKSUMS_FILE), 10)
  checkpointer.reload()
  moved = checkpointer.set_aside_corrupt()
  checkpointer.close()
  assert [(step, aside.rsplit("/", 1)[-1]) for step, _, aside in moved] == [(6, "6.1")]
  assert "checksums.json is unreadable" in moved[0][1]


def test_readers_skip_a_damaged_checkpoint_with_a_warning_and_move_nothing(run, tmp_path):
  workdir = _damaged_copy(run, tmp_path, [6], fault="truncate")
  result = run_script("translate.py", f"--workdir={workdir}", "one two")
  assert result.returncode == 0, result.stderr
  assert len(result.stdout.splitlines()) == 1
  assert (
    f"warning: {checkpoint_dir(workdir)}/6: corrupt checkpoint (params/ocdbt.process_0/d/"
    in result.stderr
  ) and "were written); skipped" in result.stderr
  assert "Traceback" not in result.stderr
  assert os.path.isdir(os.path.join(checkpoint_dir(workdir), "6"))  # Readers move nothing.
  with pytest.raises(
    TextgenError,
    match=f"^{checkpoint_dir(workdir)}/6: corrupt checkpoint .*; "
    r"choose another --step \(the workdir has steps \[2, 4, 6\]\)$",
  ):
    seq2seq.Translator.load(workdir, step=6)  # Named: nothing stands in for it.


def test_averaging_counts_only_intact_checkpoints_and_says_how_many_were_damaged(run, tmp_path):
  workdir = _damaged_copy(run, tmp_path, [6])
  with pytest.raises(
    TextgenError,
    match=r"--average_last=3: .* keeps 2 checkpoints up to step 4 "
    r"\(\[2, 4\], and 1 damaged\)",
  ):
    seq2seq.Translator.load(workdir, average_last=3)
  averaged = seq2seq.Translator.load(workdir, average_last=2).params
  assert_trees_equal(
    averaged, workdir_lib.average_params([run.saved[2].params, run.saved[4].params])
  )


def test_readers_fail_in_one_line_when_no_checkpoint_is_intact(run, tmp_path, capsys):
  workdir = _damaged_copy(run, tmp_path, run.steps)
  with pytest.raises(TextgenError, match=f"^{checkpoint_dir(workdir)}: no intact checkpoint"):
    seq2seq.Translator.load(workdir)
  assert capsys.readouterr().err.count("warning: ") == len(run.steps)


def test_a_checkpoint_without_checksums_is_damage_unless_none_older_has_them(run, tmp_path):
  """A partial copy can lack checksums.json: newer than a checkpoint with checksums, that is
  damage; with none older (a workdir written before checksums existed) it restores unverified."""
  workdir = str(tmp_path / "copy")
  shutil.copytree(run.workdir, workdir)
  os.remove(os.path.join(checkpoint_dir(workdir), "6", CHECKSUMS_FILE))
  checkpointer = Checkpointer(checkpoint_dir(workdir))
  assert checkpointer.problem(6) == "checksums.json is missing"
  assert checkpointer.problem(4) is None
  for step in (2, 4):
    os.remove(os.path.join(checkpoint_dir(workdir), str(step), CHECKSUMS_FILE))
  assert [checkpointer.problem(step) for step in run.steps] == [None, None, None]
  checkpointer.close()
  assert_trees_equal(seq2seq.Translator.load(workdir).params, run.saved[6].params)


@pytest.mark.parametrize("vanishing", ["newest", "every_listed"])
def test_a_reader_survives_steps_removed_while_it_reads(run, tmp_path, monkeypatch, vanishing):
  """A training rotating its checkpoints removes steps a reader (translate.py polling the
  workdir) has just listed: the reader lists again and loads a step that is still there."""
  workdir = str(tmp_path / "w")
  shutil.copytree(run.workdir, workdir)
  restore_params, removed = Checkpointer.restore_params, []

  def rotate_away_then_restore(self, params_like, step):
    if not removed and vanishing == "newest":
      removed.append(step)  # The step being read goes, as orbax's rotation renames it away.
      os.rename(self.step_dir(step), os.path.join(self.directory, f"gone.{step}"))
    elif len(removed) < 2 and vanishing == "every_listed":
      removed.append(step)  # Twice: the first retry's step vanishes as well.
      os.rename(self.step_dir(step), os.path.join(self.directory, f"gone.{step}"))
    return restore_params(self, params_like, step)

  monkeypatch.setattr(Checkpointer, "restore_params", rotate_away_then_restore)
  translator = seq2seq.Translator.load(workdir)
  remaining = [s for s in run.steps if s not in removed]
  assert len(removed) == (1 if vanishing == "newest" else 2)
  assert_trees_equal(translator.params, run.saved[remaining[-1]].params)


def test_a_reader_survives_a_step_removed_while_orbax_lists_them(run, tmp_path, monkeypatch):
  """orbax's CheckpointManager stats each step when it opens: one removed in between raised
  FileNotFoundError from inside orbax (seen once in 40 loads beside a rotating training)."""
  init, calls = Checkpointer.__init__, []

  def removed_while_listing(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 1:
      raise FileNotFoundError("a step removed while listed")
    init(self, *args, **kwargs)

  monkeypatch.setattr(Checkpointer, "__init__", removed_while_listing)
  assert_trees_equal(seq2seq.Translator.load(run.workdir).params, run.saved[run.steps[-1]].params)
  assert len(calls) == 2
