"""The model families, found by name: each family's package registers itself on import.

The engine (workdir, the scripts' dispatch) looks a family up here by the name a config records
(`config.family`) and never names one: a new family is a package that calls `register`.
"""

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections

from textgen_jax.errors import TextgenError


@dataclasses.dataclass(frozen=True)
class Family:
  """What the engine needs to know about a model family."""

  name: str  # As configs record it (config.family).
  get_config: Callable[[], ml_collections.ConfigDict]  # Its default config.
  vocabulary_files: Mapping[str, str]  # File name in the workdir -> what its column holds.
  train_script: str  # The script that trains it (named in messages, run by sweeps).
  train_and_evaluate: Callable[[ml_collections.ConfigDict, str], Any]  # (config, workdir).
  # The inference class: `inference.load(workdir, step, member, average_last)` reads a workdir.
  inference: Any
  # Compatibility with older workdirs (textgen_jax/workdir/resume.py): the family's fields
  # added after its first workdirs, which take its default config's values unless `old_values`
  # names another ((section, field) -> value); and fields outside the model, data, seed and
  # population sections whose change also makes a checkpoint meaningless on resume.
  added_later: frozenset[tuple[str, str]] = frozenset()
  old_values: Mapping[tuple[str, str], Any] = dataclasses.field(default_factory=dict)
  must_match: tuple[tuple[str, str], ...] = ()


_REGISTERED: dict[str, Family] = {}


def register(family: Family) -> Family:
  _REGISTERED[family.name] = family
  return family


def get(name: str) -> Family:
  """The family `name`; the packages of textgen_jax register on their first import."""
  if name not in _REGISTERED and name.isidentifier():
    try:
      importlib.import_module(f"textgen_jax.{name}")
    except ModuleNotFoundError:
      pass
  if name not in _REGISTERED:
    raise TextgenError(
      f"no model family {name!r}; known: {', '.join(sorted(_REGISTERED)) or 'none registered'}"
    )
  return _REGISTERED[name]
