"""A run's workdir: its config.json and vocabularies, the checks that make resuming safe, and
loading and saving a trained model, the same for every model family.

Every model family writes the config it trained with (config.json, whose `family` names the
family) and its vocabularies beside checkpoints/; loading a model for inference reads them back,
and resuming checks that the current settings still describe the checkpoints.
"""

import dataclasses
import difflib
import fcntl
import functools
import json
import os
import re
import socket
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from textgen_jax import config as config_lib
from textgen_jax import families
from textgen_jax import population as population_lib
from textgen_jax.checkpointing import (
  Checkpointer,
  CorruptCheckpoint,
  ParamsMismatch,
  check_writable_path,
  file_sha256,
)
from textgen_jax.data.readers import parallel_paths
from textgen_jax.data.tokenizers import Tokenizer, tokenizer_from_config
from textgen_jax.data.vocab import Vocabulary, load_vocabulary
from textgen_jax.errors import TextgenError
from textgen_jax.files import read_text, write_atomically

CONFIG_FILE = "config.json"
# The SHA-256 of each vocabulary file as training wrote it (`sha256sum -c` reads it): a
# vocabulary file copied from another run gives the checkpoint's embedding rows other words.
VOCABULARY_CHECKSUMS = "vocabularies.sha256"
# The SHA-256 of each data file the run was trained on (data.train_path, data.valid_path), so
# that a resume with the same file under another path goes on, one with a changed file is
# refused, and the held-out split re-derived from train_path is known to be the one held out.
DATA_CHECKSUMS = "data_files.json"
DATA_FIELDS = ("train_path", "valid_path")
# Config sections whose change makes an existing checkpoint meaningless.
MUST_MATCH_ON_RESUME = ("data", "model", "seed", "population")
# Fields of the shared sections added after workdirs were first written (a family adds its own:
# Family.added_later). A workdir written before one existed behaves as the field's default in
# its family's config (a workdir missing any other field has had its config.json edited: an
# error), except for the fields in OLD_VALUES.
ADDED_LATER = frozenset(
  {
    ("data", "vocab_size_multiple"),
    ("data", "seed"),
    ("data", "shuffle_seed"),
    ("data", "valid_split"),
    ("model", "lstm_backend"),
    ("population", "data_order"),
    ("population", "vmap_size"),
  }
)
# The exceptions: field -> the value that behaves as before it existed, where that is not today's
# default. Held-out splits were all random before grouped splits (seq2seq's default) existed.
OLD_VALUES = {("data", "valid_split"): "random"}


def family_defaults(family: str) -> ml_collections.ConfigDict:
  """The default config of a (registered) family."""
  return families.get(family).get_config()


def added_later(family: str) -> frozenset[tuple[str, str]]:
  """The fields a workdir of `family` may lack: the shared sections' and the family's own."""
  return ADDED_LATER | families.get(family).added_later


def old_value(section: str, field: str, family: str) -> Any:
  """What a field of added_later(family) was for a workdir written before it existed."""
  old_values = {**OLD_VALUES, **families.get(family).old_values}
  if (section, field) in old_values:
    return old_values[section, field]
  return family_defaults(family)[section][field]


# Fields of those sections that change speed only, never the checkpoint's meaning: a run may
# resume with other values (trained on a GPU with cuDNN, resumed on a CPU with the scan).
SPEED_ONLY = {("model", "lstm_backend"), ("model", "scan_unroll"), ("population", "vmap_size")}
# Fields that may change on resume: the speed-only ones, and how the members are ranked at the
# end (which reads the records, not the checkpoints).
FREE_ON_RESUME = SPEED_ONLY | {("population", "select_metric")}


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, "checkpoints")


def best_dir(workdir: str) -> str:
  """The parameters of the best held-out evaluation, with early stopping (loop)."""
  return os.path.join(workdir, "best")


def has_checkpoints(workdir: str) -> bool:
  directory = checkpoint_dir(workdir)
  return os.path.isdir(directory) and bool(os.listdir(directory))


def make_workdir(workdir: str) -> None:
  """Creates the workdir and checks that it takes files and checkpoints, before anything is
  trained."""
  check_writable_path(workdir, f"--workdir={workdir}")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise TextgenError(f"--workdir={workdir}: cannot create it ({e.strerror})") from None
  probe = os.path.join(workdir, f".write_test.{os.getpid()}")
  try:
    # Created exclusively, never through a symlink planted under that name.
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
    os.remove(probe)
  except OSError as e:
    raise TextgenError(f"--workdir={workdir}: cannot write there ({e.strerror})") from None


LOCK_FILE = "train.lock"
# What lock_for_training writes in it. Only a file holding this is shown in messages: on a shared
# workdir train.lock may be anything, and its contents are not ours to print.
_HOLDER_RECORD = re.compile(r"host [A-Za-z0-9._-]{1,255} pid [0-9]{1,10}")
_HELD_LOCKS: dict[str, int] = {}  # Workdir (real path) -> the open lock file this process holds.


def lock_for_training(workdir: str) -> None:
  """Makes this process the workdir's one writer until `unlock` (or its exit): an OS file lock
  (flock) on <workdir>/train.lock, which records the holder's host and PID. A second training
  on the workdir fails at once naming the holder; the lock of a process that died went with it,
  so its leftover file is taken over (and said so). Readers (translate, generate, evaluate) never
  lock. On several hosts process 0 alone calls this. Holding it already is a no-op."""
  key = os.path.realpath(workdir)
  if key in _HELD_LOCKS:
    return
  path = os.path.join(workdir, LOCK_FILE)
  try:
    # Not through a symlink: one planted there would have us print and truncate its target
    # (O_NONBLOCK: nor wait on a FIFO planted there; it is refused below).
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
  except OSError as e:
    if os.path.islink(path):
      raise TextgenError(
        f"{path} is a symbolic link, not the workdir's lock file; remove it "
        "(the lock file is made anew) and run again"
      ) from None
    raise TextgenError(f"{path}: cannot open the workdir's lock ({e.strerror})") from None
  if not stat.S_ISREG(os.fstat(fd).st_mode):  # A FIFO or device: not ours to read or truncate.
    os.close(fd)
    raise TextgenError(
      f"{path} is not a regular file, not the workdir's lock file; remove it "
      "(the lock file is made anew) and run again"
    )
  content = os.read(fd, 200).decode("utf-8", "replace").strip()
  previous = content if _HOLDER_RECORD.fullmatch(content) else ""
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    os.close(fd)
    raise TextgenError(
      f"{workdir} is being trained by another process ({previous or 'unknown'}"
      f", holding {path}); wait for it to finish or use another --workdir"
    ) from None
  if previous:
    print(f"note: took over {path}, left by {previous}, which is no longer running")
  elif content:
    print(
      f"note: took over {path}, which held something other than a training's host and PID "
      "(not shown); it now names this one"
    )
  os.ftruncate(fd, 0)
  os.pwrite(fd, f"host {socket.gethostname()} pid {os.getpid()}\n".encode(), 0)
  _HELD_LOCKS[key] = fd


def unlock(workdir: str) -> None:
  """Releases the lock `lock_for_training` took (the file stays, empty: no holder)."""
  fd = _HELD_LOCKS.pop(os.path.realpath(workdir), None)
  if fd is not None:
    os.ftruncate(fd, 0)
    os.close(fd)  # Closing the file releases the flock.


def read_model_config(workdir: str) -> ml_collections.ConfigDict:
  """The saved config for loading its model here: the LSTM backend back to "auto", so a model
  trained with cuDNN on a GPU loads on a CPU (backends share parameters)."""
  config = read_config(workdir)
  if isinstance(config.get("model"), ml_collections.ConfigDict):
    config.model.lstm_backend = "auto"
  return config


def check_saved_config(
  workdir: str, saved: ml_collections.ConfigDict, template: ml_collections.ConfigDict
) -> None:
  """A one-line error naming config.json when a section loading reads (model, data, population)
  is missing, has a field the family's config (`template`) does not know, lacks one it has, or
  holds a value of another type. Fields added since the workdir was written (added_later) may be
  missing, and so may the population section (written before populations existed)."""
  path = os.path.join(workdir, CONFIG_FILE)
  for section in ("model", "data", "population"):
    if section == "population" and section not in saved:
      continue
    fields = saved.get(section)
    if not isinstance(fields, ml_collections.ConfigDict):
      raise TextgenError(
        f"{path}: no {section} section"
        if fields is None
        else f"{path}: {section} is {fields!r}, not a section"
      )
    expected = template[section]
    for field in fields:
      if field not in expected:
        close = difflib.get_close_matches(field, list(expected), n=1)
        raise TextgenError(
          f"{path}: {section}.{field} is not a field of a {template.family} "
          "config" + (f"; did you mean {section}.{close[0]}?" if close else "")
        )
    for field, default in expected.items():
      if field not in fields:
        if (section, field) in added_later(template.family):
          continue
        raise TextgenError(f"{path}: {section}.{field} is missing")
      if not _same_type(fields[field], default):
        raise TextgenError(
          f"{path}: {section}.{field} is {fields[field]!r}, not "
          f"{_KIND_NAMES.get(type(default), type(default).__name__)}"
        )


_KIND_NAMES = {
  bool: "true or false",
  int: "an integer",
  float: "a number",
  str: "a string",
  list: "a list",
  tuple: "a list",
}


def _same_type(value: Any, default: Any) -> bool:
  """Whether a JSON value fits a config field with this default (an int fits a float field)."""
  if default is None:
    return True
  if isinstance(default, bool) or isinstance(value, bool):
    return isinstance(value, bool) and isinstance(default, bool)
  if isinstance(default, float):
    return isinstance(value, (int, float))
  if isinstance(default, (list, tuple)):
    return isinstance(value, (list, tuple))
  return isinstance(value, type(default))


def family_of(config: ml_collections.ConfigDict) -> str:
  """The model family a saved config describes. Workdirs written before configs named their
  family tell it by the model section: only the VAE/LM's has a `kind`."""
  if "family" in config:
    return config.family
  return "vae" if "kind" in config.get("model", {}) else "seq2seq"


def read_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  try:
    saved = json.loads(read_text(path))  # Not UTF-8, a directory: one line naming it.
  except FileNotFoundError:
    raise TextgenError(f"{path}: not found; is {workdir} a textgen-jax workdir?") from None
  except json.JSONDecodeError as e:
    raise TextgenError(f"{path}: not valid JSON ({e})") from None
  if not isinstance(saved, dict):
    raise TextgenError(f"{path}: not a JSON object of config sections")
  try:
    return ml_collections.ConfigDict(saved)
  except ValueError as e:  # A field name ConfigDict refuses, such as one with a dot.
    raise TextgenError(f"{path}: not a config ({e})") from None


def write_assets(
  directory: str,
  config: ml_collections.ConfigDict,
  tokenizer: Tokenizer,
  vocabularies: Mapping[str, Vocabulary],
) -> None:
  """Writes each vocabulary (file name -> vocabulary), their checksums and config.json, each
  atomically."""
  for filename, vocab in vocabularies.items():
    vocab.save(os.path.join(directory, filename), tokenizer.to_config())
  write_atomically(
    os.path.join(directory, VOCABULARY_CHECKSUMS),
    "".join(
      f"{file_sha256(os.path.join(directory, filename))}  {filename}\n" for filename in vocabularies
    ),
  )
  write_atomically(os.path.join(directory, CONFIG_FILE), config.to_json(indent=2))


def data_checksums(data_cfg: ml_collections.ConfigDict) -> dict[str, list[str]]:
  """The SHA-256 of each file of data.train_path and data.valid_path (two for parallel files;
  none for an empty field): field -> digests."""
  return {
    field: [file_sha256(path) for path in (parallel_paths(data_cfg[field]) or [data_cfg[field]])]
    for field in DATA_FIELDS
    if data_cfg.get(field)
  }


def write_data_checksums(workdir: str, data_cfg: ml_collections.ConfigDict) -> None:
  write_atomically(
    os.path.join(workdir, DATA_CHECKSUMS),
    json.dumps(
      {
        field: {"path": data_cfg[field], "sha256": digests}
        for field, digests in data_checksums(data_cfg).items()
      },
      indent=2,
    )
    + "\n",
  )


def read_data_checksums(workdir: str) -> dict[str, Any] | None:
  """What write_data_checksums recorded, or None for a workdir written before it existed."""
  path = os.path.join(workdir, DATA_CHECKSUMS)
  try:
    recorded = json.loads(read_text(path))  # Not UTF-8, a directory: one line naming it.
    if not all(isinstance(recorded[field]["sha256"], list) for field in recorded):
      raise ValueError("no sha256 lists")
    return recorded
  except FileNotFoundError:
    return None
  except (ValueError, KeyError, TypeError) as e:
    raise TextgenError(
      f"{path}: unreadable ({type(e).__name__}); it records the data files the run trained on"
    ) from None


def changed_data_files(
  workdir: str, data_cfg: ml_collections.ConfigDict, fields: Sequence[str] = DATA_FIELDS
) -> list[str] | None:
  """The fields among `fields` whose files now differ in content from those the run recorded
  (a file named by another path but equal in content is the same file); None for a workdir
  with no record (written before the record existed, or a saved model)."""
  recorded = read_data_checksums(workdir)
  if recorded is None:
    return None
  current = data_checksums(data_cfg)
  return [field for field in fields if recorded.get(field, {}).get("sha256") != current.get(field)]


def check_vocabulary_files(workdir: str, vocabulary_files: Sequence[str]) -> None:
  """Raises a one-line error naming a vocabulary file that is not the one training wrote
  (workdirs written before the checksums were recorded are not checked)."""
  checksums_path = os.path.join(workdir, VOCABULARY_CHECKSUMS)
  try:
    text = read_text(checksums_path)  # Not UTF-8, a directory: one line naming it.
  except FileNotFoundError:
    return
  lines = [line.split("  ", 1) for line in text.splitlines() if line]
  if any(len(parts) != 2 for parts in lines):
    raise TextgenError(f"{checksums_path}: not a list of '<SHA-256>  <file name>' lines")
  written = {filename: digest for digest, filename in lines}
  for filename in vocabulary_files:
    path = os.path.join(workdir, filename)
    if filename in written and file_sha256(path) != written[filename]:
      raise TextgenError(
        f"{path}: not the vocabulary this run was trained with (its SHA-256 "
        f"differs from {checksums_path}); was it copied from another run?"
      )


def check_resumable(
  workdir: str, config: ml_collections.ConfigDict, vocabularies: Mapping[str, Vocabulary]
) -> None:
  """A workdir with checkpoints must have been made by the same data and model settings."""
  saved = read_config(workdir).to_dict()
  # Written before populations existed: one ordinary run's section, the defaults.
  saved.setdefault("population", config_lib.population_section().to_dict())
  current = json.loads(config.to_json())
  changed = changed_data_files(workdir, config.data)
  if changed:  # Data files are compared by content; by path text only without a record.
    field = changed[0]
    recorded = read_data_checksums(workdir).get(field, {}).get("path", "no file")
    raise TextgenError(
      f"--config.data.{field}={config.data[field]}: not the data this run "
      f"trained on ({recorded}; SHA-256 in "
      f"{os.path.join(workdir, DATA_CHECKSUMS)}); use a new --workdir"
    )
  if changed is not None and isinstance(saved.get("data"), dict):
    saved["data"].update({field: config.data[field] for field in DATA_FIELDS})
  family = family_of(config)
  for section, field in added_later(family):
    if isinstance(saved.get(section), dict) and field in current.get(section, {}):
      saved[section].setdefault(field, old_value(section, field, family))
  for section, field in FREE_ON_RESUME:
    for settings in (saved, current):
      if isinstance(settings.get(section), dict):
        settings[section].pop(field, None)
  for section, field in families.get(family).must_match:
    if section in current and saved.get(section, {}).get(field) != current[section][field]:
      raise TextgenError(
        f"{workdir} holds checkpoints of a run with other settings (differing "
        f"from its config.json: {section}.{field}); use a new --workdir or its "
        "config"
      )
  for section in MUST_MATCH_ON_RESUME:
    if saved.get(section) != current.get(section):
      differing = (
        section
        if not isinstance(current.get(section), dict)
        else ", ".join(
          f"{section}.{k}"
          for k in sorted(current[section])
          if saved.get(section, {}).get(k) != current[section][k]
        )
      )
      raise TextgenError(
        f"{workdir} holds checkpoints of a run with other settings (differing "
        f"from its config.json: {differing}); use a new --workdir or its config"
      )
  for filename, vocab in vocabularies.items():
    saved_vocab, _ = load_vocabulary(os.path.join(workdir, filename))
    if saved_vocab != vocab:
      raise TextgenError(
        f"{os.path.join(workdir, filename)}: the checkpoint's vocabulary does not "
        "match the one built from the current data; use a new --workdir"
      )


@dataclasses.dataclass(frozen=True)
class Loaded:
  """A trained model read from a workdir: what a family's inference class is built from."""

  config: ml_collections.ConfigDict
  model: nn.Module
  params: Any
  tokenizer: Tokenizer
  vocabularies: list[Vocabulary]  # In the order of the family's vocabulary files.
  step: int


def load(
  workdir: str,
  template: ml_collections.ConfigDict,
  vocabulary_files: Sequence[str],
  train_script: str,
  build_model: Callable[..., nn.Module],
  init_params: Callable[[nn.Module, jax.Array], Any],
  step: int | None = None,
  member: int | None = None,
  average_last: int = 0,
) -> Loaded:
  """The model in a workdir (or a `save`d directory) at its latest checkpoint, or at `step`;
  with average_last = K > 1, the mean of the parameters of the last K kept checkpoints (those up
  to `step`), the checkpoint averaging of the NMT literature (Vaswani et al. 2017; Junczys-Dowmunt
  et al. 2016): a small, free gain at the end of training.

  template is the family's default config (which names the family); build_model(model_config,
  *vocabularies) and init_params(model, rng) are the family's. Of a
  population's workdir, `member` (default: the best, see best_member) as an ordinary run: its
  config is population.member_config's, so `save` exports it as an ordinary workdir.
  """
  if not has_checkpoints(workdir):
    raise TextgenError(
      f"{workdir}: no checkpoint found; train one with {train_script} --workdir={workdir}"
    )
  config = read_model_config(workdir)
  family, found = template.family, family_of(config)
  if found != family:
    raise TextgenError(
      f"{workdir} holds a {found} model, not a {family} model; train one with "
      f"{train_script} --workdir=<new directory>"
    )
  check_saved_config(workdir, config, template)
  vocabularies, tokenizer_cfg = [], None
  for filename in vocabulary_files:
    vocab, tokenizer_cfg = load_vocabulary(os.path.join(workdir, filename))
    vocabularies.append(vocab)
  check_vocabulary_files(workdir, vocabulary_files)
  try:
    model = build_model(config.model, *vocabularies)
  except (TypeError, ValueError) as e:  # A value the model rejects (config.json edited).
    raise TextgenError(
      f"{os.path.join(workdir, CONFIG_FILE)}: its model section does not "
      f"describe a {family} model ({e})"
    ) from None
  members = population_lib.parse(config, per_member=None)
  if members is None and member is not None:
    raise TextgenError(f"--member={member}: {workdir} holds one run, not a population")
  init = functools.partial(init_params, model)
  params_shape = jax.eval_shape(
    init if members is None else jax.vmap(init),
    jax.random.key(0) if members is None else jax.random.split(jax.random.key(0), members.size),
  )
  # An early-stopped run's model is its best evaluation's, not its last step's.
  best = best_dir(workdir)
  use_best = (
    step is None
    and average_last <= 1
    and os.path.isdir(best)
    and any(name.isdigit() for name in os.listdir(best))
  )
  directory = best if use_best else checkpoint_dir(workdir)
  try:
    step, params = _restore_params(workdir, params_shape, step, average_last, directory)
    if use_best:
      print(
        f"note: loading {workdir}'s best held-out checkpoint (step {step}, in {best}); "
        "--step=N loads another",
        file=sys.stderr,
      )
  except ParamsMismatch as e:
    described_by = ", ".join(
      os.path.join(workdir, name) for name in (CONFIG_FILE, *vocabulary_files)
    )
    raise TextgenError(
      f"{e}; the model is described by {described_by}: was one of them edited "
      "or copied from another run?"
    ) from None
  if members is not None:
    member = best_member(workdir, step, config, members) if member is None else member
    config = population_lib.member_config(config, member, members)
    params = population_lib.member(params, member)
  return Loaded(config, model, params, tokenizer_from_config(tokenizer_cfg), vocabularies, step)


def best_member(
  workdir: str, step: int, config: ml_collections.ConfigDict, population: population_lib.Population
) -> int:
  """The best member of a population's workdir at the checkpoint of `step`: as the run ranked
  them at its end (saved with its last checkpoint), else by their held-out results at that step
  (an unfinished run; config.population.select_metric), else as members.json says (checkpoints
  older than the run state)."""
  checkpointer = Checkpointer(checkpoint_dir(workdir))
  try:
    saved = (checkpointer.restore_run_state(step) or {}).get("members")
  finally:
    checkpointer.close()
  if saved is None:
    return population_lib.read_summary(workdir)["best"]
  if saved.get("best") is not None:
    return saved["best"]
  return population_lib.summary(
    {int(k): v for k, v in saved["held_out"].items()},
    population,
    {int(k): v for k, v in saved["dropped"].items()},
    config.population.select_metric,
  )["best"]


def _restore_params(
  workdir: str,
  params_shape: Any,
  step: int | None,
  average_last: int = 0,
  directory: str | None = None,
) -> tuple[int, Any]:
  """The parameters at `step` (default: the newest intact checkpoint), or the mean of the last
  `average_last` intact checkpoints up to it. A damaged checkpoint is skipped with a warning and
  left where it is (the training run that owns the workdir moves it aside); one named by `step`
  is an error. A training may remove old checkpoints while this reads: a step that vanishes
  mid-read sends it back to list the steps again. `directory`: the checkpoints' (default
  <workdir>/checkpoints; <workdir>/best for an early-stopped run's best)."""
  if average_last < 0:
    raise TextgenError(f"--average_last must be >= 0, got {average_last}")
  directory = directory or checkpoint_dir(workdir)
  for _ in range(_READ_ATTEMPTS):
    try:
      checkpointer = Checkpointer(directory)
    except FileNotFoundError:  # A step removed while orbax listed the steps: list again.
      continue
    listed = checkpointer.all_steps()
    try:
      return _restore_listed(checkpointer, workdir, listed, params_shape, step, average_last)
    except (OSError, TextgenError):
      if all(os.path.isdir(checkpointer.step_dir(s)) for s in listed):
        raise  # Nothing vanished: the error is the reader's to see.
    finally:
      checkpointer.close()
  raise TextgenError(
    f"{directory}: checkpoints were removed while they were read, "
    f"{_READ_ATTEMPTS} times in a row (a training rotating them?); try again"
  )


# Reads of a workdir whose steps vanish under them (a training rotating its checkpoints) before
# giving up: each retry follows a removal, so more than a few means something else is wrong.
_READ_ATTEMPTS = 5


def _restore_listed(
  checkpointer: Checkpointer,
  workdir: str,
  available: list[int],
  params_shape: Any,
  step: int | None,
  average_last: int,
) -> tuple[int, Any]:
  """_restore_params over the steps `available` as listed once."""
  if step is not None and step not in available:
    raise TextgenError(f"{workdir}: no checkpoint at step {step}; it has steps {available}")
  candidates = [s for s in available if step is None or s <= step]
  steps = []
  for candidate in reversed(candidates):
    try:
      checkpointer.verify(candidate)
    except CorruptCheckpoint as e:
      if candidate == step:  # Named by --step: no other checkpoint stands in for it.
        raise CorruptCheckpoint(
          f"{e}; choose another --step (the workdir has steps {available})"
        ) from None
      print(f"warning: {e}; skipped", file=sys.stderr)
      continue
    steps.append(candidate)
    if len(steps) == max(average_last, 1):
      break
  if not steps:
    raise TextgenError(
      f"{checkpointer.directory}: no intact checkpoint (steps {available} "
      "are all damaged, see the warnings above)"
    )
  if len(steps) < average_last:
    damaged = len(candidates) - len(steps)  # The loop read them all: fewer than asked.
    raise TextgenError(
      f"--average_last={average_last}: {workdir} keeps {len(steps)} "
      f"checkpoints up to step {steps[0]} ({steps[::-1]}"
      f"{f', and {damaged} damaged' if damaged else ''}); "
      "train.keep_checkpoints sets how many are kept"
    )
  return steps[0], average_params(
    [checkpointer.restore_params(params_shape, s) for s in reversed(steps)]
  )


def average_params(params_list: Sequence[Any]) -> Any:
  """The elementwise mean of parameter trees of one structure, returned in each leaf's dtype.

  Summed in float64, where float32 sums of a few trees are exact: the mean of identical trees is
  each of them, bit for bit. One tree is returned as it is.
  """
  if len(params_list) == 1:
    return params_list[0]
  return jax.tree.map(
    lambda *leaves: (sum(np.asarray(x, np.float64) for x in leaves) / len(leaves)).astype(
      leaves[0].dtype
    ),
    *params_list,
  )


def save(
  directory: str,
  config: ml_collections.ConfigDict,
  tokenizer: Tokenizer,
  vocabularies: Mapping[str, Vocabulary],
  params: Any,
  step: int = 0,
) -> None:
  """Writes an inference-only copy (config, vocabularies, parameters) that `load` reads."""
  if os.path.exists(checkpoint_dir(directory)):
    raise TextgenError(
      f"{directory} already holds a saved model or a training run; save to a new directory"
    )
  check_writable_path(directory, directory)
  os.makedirs(directory, exist_ok=True)
  write_assets(directory, config, tokenizer, vocabularies)
  checkpointer = Checkpointer(checkpoint_dir(directory))
  checkpointer.save_params(params, step)
  checkpointer.close()
