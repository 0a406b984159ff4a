"""Atomic, resumable checkpoints of the train state with orbax's CheckpointManager.

Each checkpoint directory `<workdir>/checkpoints/<step>/` holds two items: `params` and
`optimizer` (the optimizer state and step). Inference loads `params` alone. orbax writes each
checkpoint to a temporary directory and renames it when complete, so a run killed mid-write
leaves the previous checkpoints intact; resuming picks the latest complete one (and removes the
partial write). Old checkpoints are not deleted in place, where a kill could leave half a
checkpoint under a step's name, but renamed into `<workdir>/checkpoints/deleted/` (atomic) and
removed from there before the next save.

The data position and RNG stream are pure functions of the step (see data/batching.py and
training.train_step), so the step is all a resumed run needs to continue exactly.
"""

import contextlib
import os
import shutil
from collections.abc import Iterator
from typing import Any

import jax
import orbax.checkpoint as ocp

from textgen_jax.errors import TextgenError
from textgen_jax.training import TrainState, step_of


_DELETED_SUBDIR = "deleted"


def _abstract(tree: Any) -> Any:
  """The restore target: each leaf's shape, dtype and sharding. A leaf with no sharding (from
  eval_shape) is restored onto this process's first device, whatever layout saved it."""
  def target(leaf):
    leaf = ocp.utils.to_shape_dtype_struct(leaf)
    if isinstance(leaf, jax.ShapeDtypeStruct) and leaf.sharding is None:
      first_device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      leaf = jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=first_device)
    return leaf
  return jax.tree.map(target, tree)


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in leaves}


class Checkpointer:
  """Saves every `save_every` steps (and when forced), keeping the newest `keep`.

  Only the training run's own Checkpointer (for_training=True) removes partial writes left by
  a killed run: one opened to read (translation, evaluation) must not touch a write in progress.
  """

  def __init__(self, directory: str, save_every: int = 1000, keep: int = 3,
               for_training: bool = False):
    self.directory = os.path.abspath(directory)
    self.save_every = max(save_every, 1)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           cleanup_tmp_directories=for_training,
                                           todelete_subdir=_DELETED_SUBDIR)
    handlers = {name: ocp.StandardCheckpointHandler() for name in ("params", "optimizer")}
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def is_due(self, step: int) -> bool:
    return step % self.save_every == 0

  def save(self, state: TrainState, force: bool = False) -> bool:
    """Saves `state` if its step is due (or force); returns whether it saved."""
    step = step_of(state)
    if (not self.is_due(step) and not force) or step in self._manager.all_steps():
      return False
    self._empty_deleted()
    with self._write_errors_reported():  # This save's, or the previous asynchronous one's.
      return self._manager.save(step, args=ocp.args.Composite(
          params=ocp.args.StandardSave(state.params),
          optimizer=ocp.args.StandardSave({"opt_state": state.opt_state, "step": state.step})),
                                force=True)

  @contextlib.contextmanager
  def _write_errors_reported(self) -> Iterator[None]:
    """A failed write (a full disk, a lost mount) as one clear error. orbax writes into a
    temporary directory renamed only when complete, so the failed checkpoint never appears."""
    try:
      yield
    except (OSError, ValueError) as e:
      reason = str(e).splitlines()[0]
      if "No space left on device" in reason:
        reason = "No space left on device"
      raise TextgenError(f"{self.directory}: writing a checkpoint failed ({reason[:300]}). The "
                         f"checkpoints before it are intact (latest: step {self.latest_step()}); "
                         "free space or lower --config.train.keep_checkpoints, then run the "
                         "same command to resume") from None

  def check_space(self, state: TrainState, keep: int) -> None:
    """Before training: room for the checkpoints to come (each new one is written before the
    oldest goes). workdir.make_workdir has checked that the directory takes files."""
    checkpoint_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(state))
    needed = checkpoint_bytes * max(keep - len(self.all_steps()) + 1, 2)
    free = shutil.disk_usage(self.directory).free
    if free < needed:
      raise TextgenError(
          f"{self.directory}: {free / 2**20:.1f} MiB free, but about {needed / 2**20:.1f} MiB "
          f"are needed for checkpoints of {checkpoint_bytes / 2**20:.1f} MiB (keeping {keep}); "
          "free space, lower --config.train.keep_checkpoints or use another --workdir")

  def _empty_deleted(self) -> None:
    """Removes checkpoints that orbax has renamed away (process 0 alone renames them)."""
    deleted = os.path.join(self.directory, _DELETED_SUBDIR)
    if jax.process_index() == 0 and os.path.isdir(deleted):
      for name in os.listdir(deleted):
        shutil.rmtree(os.path.join(deleted, name), ignore_errors=True)

  def _check_params_match(self, params_like: Any, step: int) -> None:
    """Raises a one-line error when the stored parameter shapes differ from the model's."""
    stored = _shapes(dict(self._manager.item_metadata(step)["params"]))
    expected = _shapes(params_like)
    if stored != expected:
      differing = sorted(set(stored.items()) ^ set(expected.items()))[:2]
      raise TextgenError(f"{self.directory}/{step}: checkpoint parameters do not match the model "
                         f"the config describes (first differences: {differing})")

  def restore(self, state: TrainState, step: int | None = None) -> TrainState:
    """Restores into the structure of `state` (a freshly initialised state)."""
    step = self.latest_step() if step is None else step
    self._check_params_match(state.params, step)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(_abstract(state.params)),
          optimizer=ocp.args.StandardRestore(
              _abstract({"opt_state": state.opt_state, "step": state.step}))))
    except (ValueError, KeyError, TypeError) as e:
      raise TextgenError(f"{self.directory}/{step}: checkpoint does not match the model/optimizer "
                         f"in the config ({str(e).splitlines()[0][:200]})") from None
    return state.replace(params=restored.params, opt_state=restored.optimizer["opt_state"],
                         step=restored.optimizer["step"])

  def restore_params(self, params_like: Any, step: int | None = None) -> Any:
    """Loads only the parameters, shaped like `params_like`."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise TextgenError(f"{self.directory}: no checkpoint found")
    self._check_params_match(params_like, step)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(_abstract(params_like))))
    except (ValueError, KeyError, TypeError) as e:
      raise TextgenError(f"{self.directory}/{step}: checkpoint parameters do not match the model "
                         f"in config.json ({str(e).splitlines()[0][:200]})") from None
    return restored.params

  def save_params(self, params: Any, step: int) -> None:
    """Writes a params-only checkpoint (an inference export)."""
    self._manager.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params)),
                       force=True)

  def close(self) -> None:
    """Blocks until pending (asynchronous) writes are on disk."""
    with self._write_errors_reported():
      self._manager.wait_until_finished()
    self._manager.close()
