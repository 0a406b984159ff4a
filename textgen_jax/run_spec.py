"""A run's spec: its config parsed once, at the top of recipe.train_and_evaluate.

    spec = run_spec.build(config, family)  # once the family validated it

The recipe and the loop below read the spec (the population or none, the run keys, the LSTM
backend the model runs, the device layout) and never parse the config again.
"""

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import jax
import ml_collections

from textgen_jax import parallel
from textgen_jax import population as population_lib
from textgen_jax.errors import TextgenError
from textgen_jax.families import Family
from textgen_jax.models import cudnn_lstm


class RunKeys(NamedTuple):
  """The PRNG keys of a run, one per purpose, all from config.seed."""

  params: jax.Array  # Parameter initialisation.
  dropout: jax.Array  # Dropout and every other noise of the train step (folded with the step).
  evaluation: jax.Array  # Held-out sampling and importance samples at evaluations.
  # The family's own keys by purpose (Family.run_keys), such as the VAE's "reset" key.
  family: dict[str, jax.Array]


_ENGINE_KEYS = 3  # params, dropout, evaluation: fold_in indices 0, 1, 2.


def run_keys(seed: int, family_keys: Sequence[str] = ()) -> RunKeys:
  """Key i is fold_in(key(seed), i): the engine's three, then the family's in the order it
  lists them (Family.run_keys). For i = 0 and 1 those are jax.random.split(key(seed))'s two
  keys, the parameter and dropout keys runs have always used, so older runs resume exactly."""
  root = jax.random.key(seed)
  return RunKeys(
    *(jax.random.fold_in(root, i) for i in range(_ENGINE_KEYS)),
    {name: jax.random.fold_in(root, _ENGINE_KEYS + i) for i, name in enumerate(family_keys)},
  )


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """A validated config and what it implies, computed once."""

  config: ml_collections.ConfigDict  # As validated; written to the workdir as it is.
  family: Family
  population: population_lib.Population | None  # None: one ordinary run.
  keys: RunKeys  # One run's (a population's members have their own: member_keys).
  lstm_backend: str  # What the model runs: "scan" or "cudnn" (config.model.lstm_backend resolved).
  layout: parallel.Layout  # The devices' mesh and how the train state and batches split over it.

  @property
  def model_config(self) -> ml_collections.ConfigDict:
    """config.model for building the model, with the resolved LSTM backend."""
    model = ml_collections.ConfigDict(self.config.model.to_dict())
    model.lstm_backend = self.lstm_backend
    return model

  def member_keys(self, seeds: jax.Array) -> RunKeys:
    """The RunKeys of each member seed, stacked."""
    return jax.vmap(lambda seed: run_keys(seed, self.family.run_keys))(seeds)


def build(config: ml_collections.ConfigDict, family: Family) -> RunSpec:
  """The spec of a config the family validated. A population runs the scan: cuDNN's LSTM in JAX
  cannot be vmapped over members (speed only: backends share parameters)."""
  population = population_lib.parse(config, family.per_member_fields)
  backend = (
    "scan"
    if population is not None
    else cudnn_lstm.resolve_backend(
      config.model.lstm_backend, config.model.dtype, config.model.cell
    )
  )
  return RunSpec(
    config,
    family,
    population,
    run_keys(config.seed, family.run_keys),
    backend,
    _layout(config.parallel, family, population),
  )


def _layout(
  parallel_cfg: ml_collections.ConfigDict,
  family: Family,
  population: population_lib.Population | None,
) -> parallel.Layout:
  if population is not None and parallel_cfg.model_shards > 1:
    raise TextgenError(
      "--config.parallel.model_shards > 1 does not combine with a population "
      "yet: its members split over parallel.member_shards, its batch over the "
      "other devices"
    )
  return parallel.make_layout(parallel_cfg, family.vocabulary_matrices)
