"""Atomic, resumable checkpoints of the train state with orbax's CheckpointManager.

Each checkpoint directory `<workdir>/checkpoints/<step>/` holds two items: `params` and
`optimizer` (the optimizer state and step). Inference loads `params` alone. orbax writes each
checkpoint to a temporary directory and renames it when complete, so a run killed mid-write
leaves the previous checkpoints intact; resuming picks the latest complete one.

The data position and RNG stream are pure functions of the step (see data/batching.py and
training.train_step), so the step is all a resumed run needs to continue exactly.
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from textgen_jax.errors import TextgenError
from textgen_jax.training import TrainState


def _abstract(tree: Any) -> Any:
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in leaves}


class Checkpointer:
  """Saves every `save_every` steps (and when forced), keeping the newest `keep`."""

  def __init__(self, directory: str, save_every: int = 1000, keep: int = 3):
    self.directory = os.path.abspath(directory)
    self.save_every = max(save_every, 1)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
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
    step = int(state.step)
    if (not self.is_due(step) and not force) or step in self._manager.all_steps():
      return False
    return self._manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state.params),
        optimizer=ocp.args.StandardSave({"opt_state": state.opt_state, "step": state.step})),
                              force=True)

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
    self._manager.wait_until_finished()
    self._manager.close()
