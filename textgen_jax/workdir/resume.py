"""The checks that make resuming and loading safe: the settings a checkpoint was trained with
must still describe it, and a workdir written before a field existed reads as it behaved then."""

import difflib
import json
import os
from collections.abc import Mapping
from typing import Any

import ml_collections

from textgen_jax import config as config_lib
from textgen_jax import families
from textgen_jax.data.vocab import Vocabulary, load_vocabulary
from textgen_jax.errors import TextgenError
from textgen_jax.workdir.assets import (
  CONFIG_FILE,
  DATA_CHECKSUMS,
  DATA_FIELDS,
  changed_data_files,
  family_of,
  read_config,
  read_data_checksums,
)


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
    ("data", "vocab_size"),
    ("data", "subword_model"),
    ("data", "subword_vocabularies"),
    ("data", "subword_sampling"),
    ("data", "train_examples"),
    ("model", "lstm_backend"),
    ("model", "cell"),
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


def values_before(family: str) -> dict[tuple[str, str], Any]:
  """What each field of added_later(family) was for a workdir written before it existed: the
  family's default, or the old value OLD_VALUES or the Family names where that differs."""
  registered = families.get(family)
  defaults = registered.get_config()
  old_values = {**OLD_VALUES, **registered.old_values}
  return {
    (section, field): old_values.get((section, field), defaults[section][field])
    for section, field in added_later(family)
  }


# Fields of those sections that change speed only, never the checkpoint's meaning: a run may
# resume with other values (trained on a GPU with cuDNN, resumed on a CPU with the scan).
SPEED_ONLY = {("model", "lstm_backend"), ("model", "scan_unroll"), ("population", "vmap_size")}


# Fields that may change on resume: the speed-only ones, and how the members are ranked at the
# end (which reads the records, not the checkpoints).
FREE_ON_RESUME = SPEED_ONLY | {("population", "select_metric")}


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
  for (section, field), value in values_before(family).items():
    if isinstance(saved.get(section), dict) and field in current.get(section, {}):
      saved[section].setdefault(field, value)
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
