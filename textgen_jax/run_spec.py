"""A run's spec: its config parsed once, at the top of a family's train-and-evaluate.

    spec = run_spec.build(config, schema.FAMILY, schema.PER_MEMBER_FIELDS)  # once validated

The recipe and the loop below read the spec (the population or none, the run keys, the LSTM
backend the model runs) and never parse the config again.
"""

import dataclasses
from collections.abc import Collection
from typing import NamedTuple

import jax
import ml_collections

from textgen_jax import population as population_lib
from textgen_jax.models import cudnn_lstm


class RunKeys(NamedTuple):
  """The PRNG keys of a run, one per purpose, all from config.seed."""

  params: jax.Array  # Parameter initialisation.
  dropout: jax.Array  # Dropout and every other noise of the train step (folded with the step).
  evaluation: jax.Array  # Held-out sampling and importance samples at evaluations.
  root: jax.Array  # key(seed), which a family's own keys are folded from (family_key).


_ENGINE_KEYS = 3  # params, dropout, evaluation: fold_in indices 0, 1, 2.


def run_keys(seed: int) -> RunKeys:
  """Key i is fold_in(key(seed), i). For i = 0 and 1 those are jax.random.split(key(seed))'s two
  keys, the parameter and dropout keys runs have always used, so older runs resume exactly."""
  root = jax.random.key(seed)
  return RunKeys(*(jax.random.fold_in(root, i) for i in range(_ENGINE_KEYS)), root)


def family_key(keys: RunKeys, index: int) -> jax.Array:
  """A family's own key number `index` (0, 1, ...; one per purpose, the family numbers them):
  fold_in(key(seed), 3 + index), after the engine's. Traced per member in a population."""
  return jax.random.fold_in(keys.root, _ENGINE_KEYS + index)


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """A validated config and what it implies, computed once."""

  config: ml_collections.ConfigDict  # As validated; written to the workdir as it is.
  family: str
  population: population_lib.Population | None  # None: one ordinary run.
  keys: RunKeys  # One run's (a population's members have their own, from their seeds).
  lstm_backend: str  # What the model runs: "scan" or "cudnn" (config.model.lstm_backend resolved).

  @property
  def model_config(self) -> ml_collections.ConfigDict:
    """config.model for building the model, with the resolved LSTM backend."""
    model = ml_collections.ConfigDict(self.config.model.to_dict())
    model.lstm_backend = self.lstm_backend
    return model


def build(config: ml_collections.ConfigDict, family: str, per_member: Collection[str]) -> RunSpec:
  """The spec of a validated config. per_member: the fields the family's members may vary. A
  population runs the scan: cuDNN's LSTM in JAX cannot be vmapped over members (speed only:
  backends share parameters)."""
  population = population_lib.parse(config, per_member)
  backend = (
    "scan"
    if population is not None
    else cudnn_lstm.resolve_backend(config.model.lstm_backend, config.model.dtype)
  )
  return RunSpec(config, family, population, run_keys(config.seed), backend)
