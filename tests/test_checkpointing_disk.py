"""A workdir on a read-only or full disk: a clear error before training where it can be seen
then, and never a corrupted checkpoint when the disk fills during a write.

Each test mounts a small tmpfs (Linux, root); where mounting is not allowed they are skipped.
"""

import os
import subprocess

import jax.numpy as jnp
import optax
import pytest

from tests.helpers import make_pairs, tiny_config, write_tsv
from textgen_jax import seq2seq, training
from textgen_jax.checkpointing import Checkpointer
from textgen_jax.errors import TextgenError

pytestmark = pytest.mark.slow  # Subprocesses: the fast subset (-m 'not slow') skips them.


@pytest.fixture
def mount_disk(tmp_path):
  """mount_disk(size_kib, read_only=False) -> an empty directory on its own small file system."""
  mounted = []

  def mount(size_kib, read_only=False):
    point = tmp_path / f"disk{len(mounted)}"
    point.mkdir()
    options = f"size={size_kib}k" + (",ro" if read_only else "")
    result = subprocess.run(
      ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
      capture_output=True,
      text=True,
      check=False,
    )
    if result.returncode:
      pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    mounted.append(point)
    return str(point)

  yield mount
  for point in mounted:
    subprocess.run(["umount", str(point)], check=False)


def test_a_read_only_workdir_is_a_clear_error_before_training(tmp_path, mount_disk):
  workdir = mount_disk(64, read_only=True)
  config = tiny_config(write_tsv(tmp_path / "pairs.tsv", make_pairs(40)))
  with pytest.raises(
    TextgenError,
    match=f"--workdir={workdir}: cannot write there "
    r"\(Read-only file system\)",
  ):
    seq2seq.train_and_evaluate(config, workdir)


def test_a_disk_too_small_for_the_checkpoints_is_a_clear_error_before_training(
  tmp_path, mount_disk
):
  workdir = mount_disk(512)
  # About 0.5 MiB of parameters and Adam moments per checkpoint; keeping 2 needs 1.5 MiB.
  config = tiny_config(write_tsv(tmp_path / "pairs.tsv", make_pairs(40)), model__hidden_size=64)
  with pytest.raises(
    TextgenError,
    match=r"MiB free, but about 1\.\d MiB are needed for "
    r"checkpoints of 0\.\d MiB \(keeping 2\)",
  ):
    seq2seq.train_and_evaluate(config, workdir)
  assert os.listdir(os.path.join(workdir, "checkpoints")) == []
  assert not os.path.exists(os.path.join(workdir, "metrics.jsonl"))


def test_a_disk_that_fills_during_a_write_keeps_the_checkpoints_before_it(mount_disk):
  directory = os.path.join(mount_disk(160), "checkpoints")
  state = training.create_train_state(
    None, {"w": jnp.ones((64, 64), jnp.float32)}, optax.adam(1e-3)
  )  # About 48 KiB per checkpoint.
  checkpointer = Checkpointer(directory, save_every=1, keep=10, for_training=True)
  with pytest.raises(
    TextgenError,
    match=r"writing a checkpoint failed \(No space left on "
    r"device\)\. The checkpoints before it are intact \(latest: step \d\)",
  ) as e:
    for step in range(1, 10):  # A failed asynchronous write is reported by the next save.
      checkpointer.save(state.replace(step=step))
  latest = int(str(e.value).split("latest: step ")[1][0])
  assert latest >= 1 and checkpointer.all_steps() == list(range(1, latest + 1))
  assert int(Checkpointer(directory).restore(state).step) == latest
  assert not [name for name in os.listdir(directory) if name.isdigit() and int(name) > latest]
