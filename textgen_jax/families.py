"""The model families, found by name: each family's package registers itself on import.

A `Family` says everything the engine needs: its config and validation, its data and model,
its loss and per-member hooks, its evaluation, its inference class and its compatibility with
older workdirs. The engine (recipe.train_and_evaluate, the loop, workdir, the scripts) looks a
family up here by the name a config records (`config.family`) and never names one of its
fields: a new family is a package that calls `register` (tests/test_families.py is one in a
test file).
"""

import dataclasses
import importlib
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import ml_collections

from textgen_jax.errors import TextgenError

# Hooks receive the run being built (recipe.FamilyRun: the spec, the family's settings, the data,
# the model and the inference object) and return what the loop calls.
Hook = Callable[[Any], Any]


def no_settings(config: ml_collections.ConfigDict) -> None:
  """For a family whose validation leaves nothing to pass on."""
  del config


@dataclasses.dataclass(frozen=True)
class Family:
  """What the engine needs to know about a model family."""

  name: str  # As configs record it (config.family).
  get_config: Callable[[], ml_collections.ConfigDict]  # Its default config.
  # config -> the family's settings for its hooks (FamilyRun.settings); raises TextgenError
  # naming the flag. Shared checks included (config.validate_shared).
  validate: Callable[[ml_collections.ConfigDict], Any]
  per_member_fields: Collection[str]  # The fields a population's members may vary.
  reader: Callable[..., Any]  # data.readers.Reader: a path's examples (pairs, sentences).
  vocabulary_files: Mapping[str, str]  # File name in the workdir -> what its column holds.
  build_model: Callable[..., Any]  # (model config, *vocabularies) -> linen module.
  init_params: Callable[[Any, Any], Any]  # (model, rng) -> params.
  # FamilyRun -> (member hyperparameters, member RunKeys) -> (loss_fn, before_update): a
  # member's loss and pre-update hook (training.MemberHooks); ({}, the run's keys) gives an
  # ordinary run's.
  hooks: Hook
  # The inference class: built as inference(config, model, params, tokenizers, *vocabularies)
  # (one tokenizer per vocabulary);
  # `inference.load(workdir, step, member, average_last)` reads a workdir.
  inference: Any
  train_script: str  # The script that trains it (named in messages, run by sweeps).
  # FamilyRun -> params -> (held-out metrics beyond the loss, lines to print); None: the loss only.
  evaluation: Hook | None = None
  # (FamilyRun, loss_fn, before_update) -> loop.StepProcedure or None: a host-side procedure
  # around the compiled step (the VAE's aggressive encoder training).
  procedure: Callable[..., Any] | None = None
  member_choices: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
  run_keys: tuple[str, ...] = ()  # Its own PRNG keys' purposes (run_spec.RunKeys.family).
  per_step: tuple[str, ...] = ()  # Its train metrics averaged over steps, not tokens.
  # Loss sums -> the metrics it derives from its own sums (the VAE's KL and ELBO), train and
  # held-out, beside the engine's loss, accuracy and perplexity (metrics.summarize).
  summary: Callable[[dict[str, float]], dict[str, float]] | None = None
  # The model's vocabulary matrices, which parallel.model_shards > 1 splits over devices.
  vocabulary_matrices: Mapping[tuple[str, ...], int] = dataclasses.field(default_factory=dict)
  # Compatibility with older workdirs (textgen_jax/workdir/resume.py): the family's fields
  # added after its first workdirs, which take its default config's values unless `old_values`
  # names another ((section, field) -> value); and fields outside the model, data, seed and
  # population sections whose change also makes a checkpoint meaningless on resume.
  added_later: frozenset[tuple[str, str]] = frozenset()
  old_values: Mapping[tuple[str, str], Any] = dataclasses.field(default_factory=dict)
  must_match: tuple[tuple[str, str], ...] = ()

  def train_and_evaluate(self, config: ml_collections.ConfigDict, workdir: str) -> Any:
    """Trains (or resumes) in workdir (recipe.train_and_evaluate); the inference object."""
    from textgen_jax import recipe  # The engine imports this module: import it when called.

    return recipe.train_and_evaluate(self, config, workdir)


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
