"""Tests for textgen_jax.checkpointing: round trips, what is kept, restoring into the wrong model.

Disk faults (read-only, too small, filling up) are in test_checkpointing_disk.py."""

import dataclasses
import functools
import os

import jax
import pytest

from tests.helpers import H, assert_trees_equal, copy_tree, trees_differ
from textgen_jax import checkpointing, seq2seq, training
from textgen_jax import workdir as workdir_lib
from textgen_jax.checkpointing import Checkpointer
from textgen_jax.errors import TextgenError
from textgen_jax.seq2seq.model import Seq2Seq


def test_checkpoint_round_trip_and_identical_next_step(setup, tmp_path):
  state = setup.train(setup.fresh_state(), 2)
  checkpointer = Checkpointer(str(tmp_path / "checkpoints"), save_every=1)
  assert checkpointer.save(state)
  checkpointer.close()

  fresh = setup.fresh_state(
    jax.jit(functools.partial(seq2seq.model.init_params, setup.model))(jax.random.key(1))
  )
  assert trees_differ(fresh.params, state.params)
  reopened = Checkpointer(str(tmp_path / "checkpoints"))
  assert reopened.latest_step() == 2
  restored = reopened.restore(fresh)
  reopened.close()
  assert int(restored.step) == 2
  assert_trees_equal(restored.params, state.params)
  assert_trees_equal(restored.opt_state, state.opt_state)

  expected, expected_sums = setup.train_step(copy_tree(state), setup.batch, jax.random.key(4))
  resumed, resumed_sums = setup.train_step(restored, setup.batch, jax.random.key(4))
  assert int(resumed.step) == 3
  assert_trees_equal(resumed.params, expected.params)
  assert_trees_equal(resumed.opt_state, expected.opt_state)
  assert_trees_equal(resumed_sums, expected_sums)


def test_restore_params_alone(setup, tmp_path):
  state = setup.train(setup.fresh_state(), 1)
  checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
  checkpointer.save(state, force=True)
  checkpointer.close()
  params_shape = jax.eval_shape(lambda: setup.params)
  reopened = Checkpointer(str(tmp_path / "checkpoints"))
  assert_trees_equal(reopened.restore_params(params_shape), state.params)
  reopened.close()


def test_checkpointer_saves_when_due_and_keeps_the_newest(setup, tmp_path):
  directory = str(tmp_path / "checkpoints")
  checkpointer = Checkpointer(directory, save_every=2, keep=2)
  state = setup.fresh_state()
  for step in range(1, 6):
    state = setup.train(state, 1)
    assert checkpointer.save(state) == (step % 2 == 0)
  assert checkpointer.save(state, force=True)
  assert not checkpointer.save(state, force=True)  # Step 5 is already saved.
  checkpointer.close()
  assert sorted(int(name) for name in os.listdir(directory) if name.isdigit()) == [4, 5]
  assert Checkpointer(directory).latest_step() == 5


def test_old_checkpoints_leave_whole_by_one_rename_then_go(setup, tmp_path):
  """A kill while an old checkpoint is removed must not leave half of it under its step's name:
  it is first renamed (atomically) into deleted/, whole, and removed from there later."""
  directory = str(tmp_path / "checkpoints")
  checkpointer = Checkpointer(directory, save_every=1, keep=1, for_training=True)
  state = setup.fresh_state()
  for _ in range(2):
    state = setup.train(state, 1)
    checkpointer.save(state)
  checkpointer.close()
  deleted = os.path.join(directory, "deleted")
  assert sorted(os.listdir(deleted)) == ["1"]
  assert "_CHECKPOINT_METADATA" in os.listdir(os.path.join(deleted, "1"))  # Whole.
  assert sorted(name for name in os.listdir(directory) if name != "deleted") == ["2"]
  checkpointer = Checkpointer(directory, save_every=1, keep=1, for_training=True)
  checkpointer.save(setup.train(state, 1))
  checkpointer.close()
  assert sorted(os.listdir(deleted)) == ["2"]  # Step 1 removed before step 3 was saved.


def test_restoring_into_another_model_raises(setup, tmp_path):
  checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
  checkpointer.save(setup.train(setup.fresh_state(), 1), force=True)
  checkpointer.close()
  bigger = Seq2Seq(dataclasses.replace(setup.model.config, hidden_size=2 * H))
  other_state = jax.eval_shape(
    lambda key: training.create_train_state(
      None, seq2seq.model.init_params(bigger, key), setup.optimizer
    ),
    jax.random.key(0),
  )
  with pytest.raises(TextgenError, match="do not match"):
    Checkpointer(str(tmp_path / "checkpoints")).restore(other_state)
  with pytest.raises(TextgenError, match="do not match"):
    Checkpointer(str(tmp_path / "checkpoints")).restore_params(other_state.params)


def test_restore_params_without_checkpoint_raises(setup, tmp_path):
  with pytest.raises(TextgenError, match="no checkpoint"):
    Checkpointer(str(tmp_path / "empty")).restore_params(jax.eval_shape(lambda: setup.params))


def test_glob_characters_in_the_path_never_commit_an_incomplete_checkpoint(setup, tmp_path):
  # orbax merges an OCDBT checkpoint's parts with a glob of its path: under "[x]" the glob
  # finds nothing, the merge is skipped and the checkpoint lacks every array. Such a save
  # fails instead of committing a checkpoint that would not restore.
  state = setup.train(setup.fresh_state(), 1)
  directory = tmp_path / "run[x]" / "checkpoints"
  checkpointer = Checkpointer(str(directory))
  with pytest.raises(
    TextgenError, match="would not restore: .* does not store .* train in another --workdir"
  ):
    checkpointer.save(state, force=True)
    checkpointer.close()
  assert not any(name.isdigit() for name in os.listdir(directory))


@pytest.mark.parametrize("name", ["run[x]", "a*b", "what?", "back\\slash"])
def test_workdir_path_with_glob_characters_is_refused_before_training(tmp_path, name):
  with pytest.raises(TextgenError, match=r"^--workdir=.*: its path contains .* choose a path"):
    workdir_lib.make_workdir(str(tmp_path / name / "run"))
  assert not os.path.exists(tmp_path / name)  # Refused before anything was made.


def test_a_backslash_in_a_checkpoint_path_is_refused_when_reading_too(tmp_path):
  # TensorStore reads it as a directory separator: such a checkpoint opens another path.
  with pytest.raises(
    TextgenError,
    match=r"back\\slash/checkpoints: its path contains \\, which "
    "TensorStore reads as a directory separator; move or rename it",
  ):
    Checkpointer(str(tmp_path / "back\\slash" / "checkpoints"))


def test_verify_finds_a_checkpoint_that_lacks_an_array(setup, tmp_path):
  # Its files are all as written (checksums recomputed after the damage), but the merged OCDBT
  # manifest that a restore reads is gone: checksums alone would pass it.
  checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
  checkpointer.save(setup.train(setup.fresh_state(), 1), force=True)
  checkpointer.close()
  step_dir = os.path.join(tmp_path, "checkpoints", "1")
  assert checkpointing.verify(step_dir) is None
  os.remove(os.path.join(step_dir, "params", "manifest.ocdbt"))
  checkpointing.write_checksums(step_dir)
  assert checkpointing.verify(step_dir) == (
    "params/ does not store params.decoder.forward_0.input_projection.bias, which its "
    "_METADATA names"
  )
