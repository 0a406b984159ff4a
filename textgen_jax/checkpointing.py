"""Atomic, resumable checkpoints of the train state with orbax's CheckpointManager.

Each checkpoint directory `<workdir>/checkpoints/<step>/` holds two items, `params` and
`optimizer` (the optimizer state and step), and `run_state.json`: what the loop and a recipe
keep on the host, such as a population's held-out results or the VAE's aggressive phase
(checkpoints written before it existed lack it). Inference loads `params` alone. orbax writes each
checkpoint to a temporary directory and renames it when complete, so a run killed mid-write
leaves the previous checkpoints intact; resuming picks the latest complete one (and removes the
partial write). Old checkpoints are not deleted in place, where a kill could leave half a
checkpoint under a step's name, but renamed into `<workdir>/checkpoints/deleted/` (atomic) and
removed from there before the next save.

Integrity: a file can be cut short (a full disk during a copy) or change silently (a bad disk,
a bad copy), and TensorStore reads a damaged array without complaint. So each checkpoint holds
`checksums.json`, the size and SHA-256 of every file orbax wrote, written into the temporary
directory just before orbax's rename commits it: a checkpoint is never seen without its
checksums. `verify` compares them before every restore. Of a damaged checkpoint, training moves
it aside into `<workdir>/checkpoints/corrupt/` (never deleted) and resumes from the newest
intact one; readers skip it with a warning and touch nothing. Checkpoints written before
checksums existed (older than any with checksums) restore unverified.

The data position and RNG stream are pure functions of the step (see data/batching.py and
training.train_step), so the step is all a resumed run needs to continue exactly.
"""

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp
import tensorstore as ts

from textgen_jax.errors import TextgenError
from textgen_jax.files import read_text
from textgen_jax.training import TrainState, step_of


RUN_STATE = "run_state.json"  # The loop's and the recipe's host-side state, in each checkpoint.
# Step directory -> the run state its commit writes (Checkpointer.save, _ChecksummedRename).
_PENDING_RUN_STATES: dict[str, str] = {}
_DELETED_SUBDIR = "deleted"
_CORRUPT_SUBDIR = "corrupt"
CHECKSUMS_FILE = "checksums.json"
# Written by orbax's commit after the checksums (the commit time, the commit marker). orbax
# restores without reading either (a damaged one still restores the same values; see
# tests/test_checkpoint_faults.py), so they are left out.
UNCHECKED_FILES = ("_CHECKPOINT_METADATA", "commit_success.txt")


def file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def list_files(directory: str) -> list[str]:
  """Every file under `directory`, as sorted paths relative to it with "/" separators."""
  found = []
  for root, _, names in os.walk(directory):
    relative_root = os.path.relpath(root, directory)
    found += [
      name if relative_root == "." else f"{relative_root}/{name}".replace(os.sep, "/")
      for name in names
    ]
  return sorted(found)


def write_checksums(step_dir: str) -> None:
  """Records the size and SHA-256 of each file of a checkpoint in its checksums.json."""
  files = {
    name: [os.path.getsize(os.path.join(step_dir, name)), file_sha256(os.path.join(step_dir, name))]
    for name in list_files(step_dir)
    if name not in UNCHECKED_FILES and name != CHECKSUMS_FILE
  }
  entries = ",\n".join(
    f"  {json.dumps(name)}: {json.dumps(entry)}" for name, entry in files.items()
  )
  with open(os.path.join(step_dir, CHECKSUMS_FILE), "w", encoding="utf-8") as f:
    f.write(f'{{"format": 1, "files": {{\n{entries}\n}}}}\n')  # One line per file.
    f.flush()
    os.fsync(f.fileno())


# Characters that make a path a glob pattern. orbax finds the per-process parts of an OCDBT
# checkpoint with a glob of the checkpoint's path (ocdbt_utils.merge_ocdbt_per_process_files):
# with one of these in it the glob matches nothing, the merge is skipped with a warning, and the
# checkpoint lacks every array (or, with * and ?, could merge another directory's files).
GLOB_CHARACTERS = "*?["
# TensorStore reads a backslash in a local path as a directory separator (it opens /a/b for
# /a\b), so no checkpoint under such a path can be written or read.
SEPARATOR_CHARACTERS = "\\"


def _path_problem(directory: str, characters: str) -> str | None:
  """What makes orbax fail under `directory`'s absolute path (parents included), or None."""
  found = sorted({c for c in os.path.abspath(directory) if c in characters})
  if not found:
    return None
  reasons = []
  if set(found) & set(GLOB_CHARACTERS):
    reasons.append(
      f"{' and '.join(c for c in found if c in GLOB_CHARACTERS)}, which orbax's "
      "checkpoint writer reads as a file pattern (its checkpoints would lack their "
      "arrays)"
    )
  if set(found) & set(SEPARATOR_CHARACTERS):
    reasons.append("\\, which TensorStore reads as a directory separator")
  return f"its path contains {'; and '.join(reasons)}"


def check_writable_path(directory: str, label: str) -> None:
  """Raises a one-line error starting with `label` (the flag or path the user gave) when orbax
  cannot write checkpoints under `directory`: its absolute path, parents included, holds a glob
  character or a backslash. Reading a path with a glob character works: a workdir trained
  elsewhere and moved there loads."""
  problem = _path_problem(directory, GLOB_CHARACTERS + SEPARATOR_CHARACTERS)
  if problem:
    raise TextgenError(f"{label}: {problem}; choose a path without * ? [ \\")


def missing_array(step_dir: str) -> str | None:
  """Which array a checkpoint's items name in their _METADATA but do not store, or None.

  Checksums prove the files are as orbax wrote them; this proves orbax wrote everything a
  restore opens (each array's zarr metadata, in the item's OCDBT database or directory). It
  reads the metadata and the database's key list, not the arrays: milliseconds.
  """
  for item in sorted(os.listdir(step_dir)):
    item_dir = os.path.join(step_dir, item)
    metadata_path = os.path.join(item_dir, "_METADATA")
    if not os.path.isfile(metadata_path):
      continue
    try:
      with open(metadata_path, encoding="utf-8") as f:
        metadata = json.load(f)
      names = [
        ".".join(str(key["key"]) for key in entry["key_metadata"])
        for entry in metadata["tree_metadata"].values()
        if not entry["value_metadata"].get("skip_deserialize", False)
      ]
      zarr_file = "zarr.json" if metadata.get("use_zarr3") else ".zarray"
      if metadata.get("use_ocdbt", True):
        store = ts.KvStore.open(
          {"driver": "ocdbt", "base": {"driver": "file", "path": item_dir + "/"}}
        ).result()
        stored = {key.decode("utf-8", "replace") for key in store.list().result()}
      else:
        stored = set(list_files(item_dir))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
      return f"{item}/ cannot be listed ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    for name in names:
      if f"{name}/{zarr_file}" not in stored:
        return f"{item}/ does not store {name}, which its _METADATA names"
  return None


def verify(step_dir: str) -> str | None:
  """What is wrong with a checkpoint's files, or None when they are as written and complete.

  Every file on disk must be listed and every listed file must be there with its size and
  SHA-256, so damage to checksums.json itself (a changed name, size or digest) is found too. All
  items are checked, also for readers that restore only the parameters: orbax reads every
  item's metadata to restore any. A checkpoint without checksums.json (written before they
  existed) is checked for completeness alone (`missing_array`).
  """
  checksums_path = os.path.join(step_dir, CHECKSUMS_FILE)
  if not os.path.exists(checksums_path):
    return missing_array(step_dir)
  try:
    with open(checksums_path, encoding="utf-8") as f:
      checksums = json.load(f)
    if checksums["format"] != 1:
      raise ValueError(f"format {checksums['format']}")
    written = {
      name: (int(size), str(digest)) for name, (size, digest) in checksums["files"].items()
    }
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    return f"{CHECKSUMS_FILE} is unreadable ({type(e).__name__})"
  on_disk = [
    name for name in list_files(step_dir) if name not in UNCHECKED_FILES and name != CHECKSUMS_FILE
  ]
  unlisted = sorted(set(on_disk) - set(written))
  if unlisted:
    return f"{unlisted[0]} is not in {CHECKSUMS_FILE}"
  for name, (size, digest) in sorted(written.items()):
    path = os.path.join(step_dir, name)
    if not os.path.exists(path):
      return f"{name} is missing"
    try:
      if os.path.getsize(path) != size:
        return f"{name} has {os.path.getsize(path)} bytes, {size} were written"
      if file_sha256(path) != digest:
        return f"{name} differs from what was written (SHA-256)"
    except OSError as e:
      return f"{name} cannot be read ({e.strerror})"
  return missing_array(step_dir)


class _ChecksummedRename(ocp.path.atomicity.AtomicRenameTemporaryPath):
  """orbax's atomic rename, with checksums.json written into a step's temporary directory just
  before the rename. orbax finalises the items (params/, optimizer/) first, then the step.
  A step that would not restore (`missing_array`) is never committed: its save fails."""

  async def finalize(self, *args, **kwargs):
    final = self.get_final()
    if final.name.isdigit():  # The step's directory, not one of its items.
      run_state = _PENDING_RUN_STATES.pop(_step_key(str(final)), None)
      await asyncio.to_thread(_check_and_checksum, str(self.get()), final.name, run_state)
    await super().finalize(*args, **kwargs)


def _step_key(step_dir: str) -> str:
  return os.path.realpath(step_dir)


def _check_and_checksum(step_dir: str, step: str, run_state: str | None) -> None:
  missing = missing_array(step_dir)
  if missing is not None:
    raise ValueError(f"the checkpoint of step {step} would not restore: {missing}")
  if run_state is not None:
    with open(os.path.join(step_dir, RUN_STATE), "w", encoding="utf-8") as f:
      f.write(run_state)
      f.flush()
      os.fsync(f.fileno())
  write_checksums(step_dir)


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


# Modules renamed since checkpoints of them were first written: today's name -> the name older
# checkpoints hold. A checkpoint that holds the old name restores into today's model.
RENAMED = {
  "output_layer": "decoder_output",  # The VAE's output layer, named as seq2seq's since issue 23.
}


def renamed(tree: Any, names: Mapping[str, str]) -> Any:
  """`tree` with every dict key k renamed names.get(k, k), in dicts, lists and (named) tuples at
  any depth (parameters, and the optimizer states that mirror them)."""
  if not names:
    return tree
  if isinstance(tree, dict):
    return {names.get(key, key): renamed(value, names) for key, value in tree.items()}
  if isinstance(tree, tuple) and hasattr(tree, "_fields"):
    return type(tree)(*(renamed(value, names) for value in tree))
  if isinstance(tree, (list, tuple)):
    return type(tree)(renamed(value, names) for value in tree)
  return tree


def _dict_keys(tree: Any) -> set[str]:
  """Every dict key at any depth of a nested dict (a checkpoint's metadata tree)."""
  if not isinstance(tree, Mapping):
    return set()
  return set(tree).union(*(_dict_keys(value) for value in tree.values()))


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in leaves}


class CorruptCheckpoint(TextgenError):
  """A checkpoint whose files are not as written (verify's finding is in the message)."""


class ParamsMismatch(TextgenError):
  """A checkpoint whose parameters do not fit the model they are restored into."""


class Checkpointer:
  """Saves every `save_every` steps (and when forced), keeping the newest `keep`.

  Only the training run's own Checkpointer (for_training=True) removes partial writes left by
  a killed run: one opened to read (translation, evaluation) must not touch a write in progress.
  """

  def __init__(
    self, directory: str, save_every: int = 1000, keep: int = 3, for_training: bool = False
  ):
    self.directory = os.path.abspath(directory)
    problem = _path_problem(directory, SEPARATOR_CHARACTERS)
    if problem:
      raise TextgenError(f"{self.directory}: {problem}; move or rename it")
    self.save_every = max(save_every, 1)
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep,
      create=True,
      cleanup_tmp_directories=for_training,
      todelete_subdir=_DELETED_SUBDIR,
      temporary_path_class=_ChecksummedRename,
    )
    handlers = {name: ocp.StandardCheckpointHandler() for name in ("params", "optimizer")}
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)
    self._intact: set[int] = set()  # Steps verified by this Checkpointer.

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def problem(self, step: int) -> str | None:
    """What is wrong with the checkpoint at `step` (see `verify`), or None. Once a run writes
    checksums it writes them with every checkpoint, so one without them, newer than one with
    them, lost its checksums.json (a partial copy): that is damage, not an older checkpoint."""
    if step in self._intact:
      return None
    problem = verify(self.step_dir(step))
    if problem is not None and not os.path.isdir(self.step_dir(step)):
      # Removed while it was read (a training rotating its checkpoints): gone, not damaged.
      raise FileNotFoundError(f"{self.step_dir(step)}: removed while it was read")
    if problem is None and not self._has_checksums(step):
      if any(self._has_checksums(s) for s in self.all_steps() if s < step):
        problem = f"{CHECKSUMS_FILE} is missing"
    if problem is None:
      self._intact.add(step)  # Once per Checkpointer: restoring it does not hash it again.
    return problem

  def _unverified_note(self, step: int) -> str:
    """For a read error: a checkpoint without checksums may be damaged rather than another
    model's."""
    return (
      ""
      if self._has_checksums(step)
      else (f"; it has no {CHECKSUMS_FILE}, so it may also be damaged")
    )

  def _has_checksums(self, step: int) -> bool:
    return os.path.exists(os.path.join(self.step_dir(step), CHECKSUMS_FILE))

  def verify(self, step: int) -> None:
    """Raises CorruptCheckpoint, naming the step's directory and the damage, unless its files
    are as written."""
    problem = self.problem(step)
    if problem is not None:
      raise CorruptCheckpoint(f"{self.step_dir(step)}: corrupt checkpoint ({problem})")

  def set_aside_corrupt(self) -> list[tuple[int, str, str]]:
    """Moves damaged checkpoints, newest first, into corrupt/ until the newest is intact (or
    none is left); returns (step, damage, where it went) of each. Only the one training
    process that writes the workdir may call it: readers skip damaged checkpoints instead."""
    moved = []
    for step in reversed(self.all_steps()):
      problem = self.problem(step)
      if problem is None:
        break
      first_choice = os.path.join(self.directory, _CORRUPT_SUBDIR, str(step))
      aside, suffix = first_choice, 0
      while os.path.exists(aside):  # Never over an earlier one: <step>.1, <step>.2, ...
        suffix += 1
        aside = f"{first_choice}.{suffix}"
      os.makedirs(os.path.dirname(aside), exist_ok=True)
      os.rename(self.step_dir(step), aside)  # One rename: the files stay as they were found.
      moved.append((step, problem, aside))
    self.reload()
    return moved

  def reload(self) -> None:
    """Re-reads which steps exist (after another process changed the directory)."""
    self._manager.reload()
    self._intact.clear()

  def is_due(self, step: int) -> bool:
    return step % self.save_every == 0

  def save(
    self, state: TrainState, force: bool = False, run_state: Callable[[], dict[str, Any]] = dict
  ) -> bool:
    """Saves `state` and the JSON object `run_state()` if the step is due (or force); returns
    whether it saved."""
    step = step_of(state)
    if (not self.is_due(step) and not force) or step in self._manager.all_steps():
      return False
    self._empty_deleted()
    # Written by the commit (_ChecksummedRename), with the checksums that cover it. Only the
    # primary host commits (orbax's primary_host, process 0): the others keep nothing.
    if jax.process_index() == 0:
      _PENDING_RUN_STATES[_step_key(self.step_dir(step))] = json.dumps(run_state(), indent=1)
    with self._write_errors_reported():  # This save's, or the previous asynchronous one's.
      return self._manager.save(
        step,
        args=ocp.args.Composite(
          params=ocp.args.StandardSave(state.params),
          optimizer=ocp.args.StandardSave({"opt_state": state.opt_state, "step": state.step}),
        ),
        force=True,
      )

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
      advice = (
        "orbax wrote it incompletely under this path: train in another --workdir"
        if "would not restore" in reason
        else "free space or lower --config.train.keep_checkpoints, then run the same command "
        "to resume"
      )
      raise TextgenError(
        f"{self.directory}: writing a checkpoint failed ({reason[:300]}). The "
        f"checkpoints before it are intact (latest: step {self.latest_step()}); "
        f"{advice}"
      ) from None

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
        "free space, lower --config.train.keep_checkpoints or use another --workdir"
      )

  def _empty_deleted(self) -> None:
    """Removes checkpoints that orbax has renamed away (process 0 alone renames them)."""
    deleted = os.path.join(self.directory, _DELETED_SUBDIR)
    if jax.process_index() == 0 and os.path.isdir(deleted):
      for name in os.listdir(deleted):
        shutil.rmtree(os.path.join(deleted, name), ignore_errors=True)

  def _old_names(self, step: int) -> dict[str, str]:
    """Today's name -> the old one, for each renamed module the checkpoint holds by its old name
    (RENAMED)."""
    saved = _dict_keys(dict(self._manager.item_metadata(step)["params"]))
    return {new: old for new, old in RENAMED.items() if old in saved and new not in saved}

  def _check_params_match(self, params_like: Any, step: int, old_names: dict[str, str]) -> None:
    """Raises a one-line error when the stored parameter shapes differ from the model's (with
    the checkpoint's old module names, _old_names)."""
    stored = _shapes(dict(self._manager.item_metadata(step)["params"]))
    expected = _shapes(renamed(params_like, old_names))
    if stored != expected:
      differing = sorted(set(stored.items()) ^ set(expected.items()))[:2]
      raise ParamsMismatch(
        f"{self.step_dir(step)}: checkpoint parameters do not match the "
        f"model the config describes (first differences: {differing})"
      )

  def restore(self, state: TrainState, step: int | None = None) -> TrainState:
    """Restores into the structure of `state` (a freshly initialised state)."""
    step = self.latest_step() if step is None else step
    self.verify(step)
    old_names = self._old_names(step)
    self._check_params_match(state.params, step, old_names)
    try:
      restored = self._manager.restore(
        step,
        args=ocp.args.Composite(
          params=ocp.args.StandardRestore(_abstract(renamed(state.params, old_names))),
          optimizer=ocp.args.StandardRestore(
            _abstract(renamed({"opt_state": state.opt_state, "step": state.step}, old_names))
          ),
        ),
      )
    except (ValueError, KeyError, TypeError) as e:
      raise TextgenError(
        f"{self.step_dir(step)}: checkpoint does not match the model/optimizer "
        f"in the config ({str(e).splitlines()[0][:200]}"
        f"{self._unverified_note(step)})"
      ) from None
    today = {old: new for new, old in old_names.items()}
    return state.replace(
      params=renamed(restored.params, today),
      opt_state=renamed(restored.optimizer["opt_state"], today),
      step=restored.optimizer["step"],
    )

  def restore_params(self, params_like: Any, step: int | None = None) -> Any:
    """Loads only the parameters, shaped like `params_like`."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise TextgenError(f"{self.directory}: no checkpoint found")
    self.verify(step)
    old_names = self._old_names(step)
    self._check_params_match(params_like, step, old_names)
    try:
      restored = self._manager.restore(
        step,
        args=ocp.args.Composite(
          params=ocp.args.StandardRestore(_abstract(renamed(params_like, old_names)))
        ),
      )
    except (ValueError, KeyError, TypeError) as e:
      raise ParamsMismatch(
        f"{self.step_dir(step)}: checkpoint parameters do not match the "
        f"model in config.json ({str(e).splitlines()[0][:200]}"
        f"{self._unverified_note(step)})"
      ) from None
    return renamed(restored.params, {old: new for new, old in old_names.items()})

  def restore_run_state(self, step: int) -> dict[str, Any] | None:
    """The run state saved with the (verified) checkpoint at `step`; None for a checkpoint
    written before checkpoints held it, or a params-only one."""
    path = os.path.join(self.step_dir(step), RUN_STATE)
    try:
      saved = json.loads(read_text(path))
    except FileNotFoundError:
      return None
    except ValueError as e:
      raise TextgenError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(saved, dict):
      raise TextgenError(f"{path}: not a JSON object")
    return saved

  def save_params(self, params: Any, step: int) -> None:
    """Writes a params-only checkpoint (an inference export, a run's best held-out one). One
    already at `step` is replaced: a run killed between an evaluation that saved its best and
    the next checkpoint repeats that evaluation when it resumes (same parameters, since it
    resumes exactly). Killed in between, the resume repeats it again."""
    if step in self._manager.all_steps():
      self._manager.delete(step)
      self._intact.discard(step)
    # orbax moves a replaced step into deleted/ and fails if one of that name is there already.
    self._empty_deleted()
    self._manager.save(
      step, args=ocp.args.Composite(params=ocp.args.StandardSave(params)), force=True
    )

  def close(self) -> None:
    """Blocks until pending (asynchronous) writes are on disk."""
    with self._write_errors_reported():
      self._manager.wait_until_finished()
    self._manager.close()
