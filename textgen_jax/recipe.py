"""Train and evaluate, written once for every model family: `train_and_evaluate(family, ...)`
reads top to bottom as

    parallel.initialize(config.parallel)     # before any JAX work: may join other hosts
    settings = family.validate(config)       # the family's checks (shared ones included)
    spec = run_spec.build(config, family)    # the config parsed once, passed down
    data = read_data(config, family.reader, family.vocabulary_files)  # data/pipeline.py
    prepare_workdir(workdir, config, data)   # lock, resume checks, assets
    model, inference = ...                   # built from spec.model_config
    task = loop.Task(...)                    # from the family's hooks: loss, evaluation
    inference.params = train(spec, workdir, task)
"""

import dataclasses
import functools
from typing import Any

import ml_collections

from textgen_jax import loop, parallel, population, run_spec, training
from textgen_jax import workdir as workdir_lib
from textgen_jax.data.pipeline import TextData, read_data
from textgen_jax.families import Family
from textgen_jax.run_spec import RunSpec


def section_values(hyperparameters: dict[str, Any], section: str) -> dict[str, Any]:
  """A population member's values of one config section's fields: field -> (traced) value."""
  return {
    name.split(".", 1)[1]: value
    for name, value in hyperparameters.items()
    if name.startswith(section + ".")
  }


def member_model(model: Any, hyperparameters: dict[str, Any]) -> Any:
  """The model with a population member's `model` fields (its dropout rates, traced): the same
  parameters, so one set of stacked parameters serves every member."""
  values = section_values(hyperparameters, "model")
  return model.clone(config=dataclasses.replace(model.config, **values)) if values else model


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict, data: TextData) -> None:
  """Creates and locks the workdir (one training at a time), refuses to resume checkpoints of
  other settings, writes the assets."""
  workdir_lib.make_workdir(workdir)
  if parallel.is_primary():  # One writer per workdir; other hosts write through process 0.
    workdir_lib.lock_for_training(workdir)
  try:
    if workdir_lib.has_checkpoints(workdir):
      workdir_lib.check_resumable(workdir, config, data.vocabularies)
    if parallel.is_primary():
      workdir_lib.write_assets(workdir, config, data.tokenizers, data.vocabularies)
      workdir_lib.write_data_checksums(workdir, config.data)
  except BaseException:
    workdir_lib.unlock(workdir)
    raise


def train(spec: RunSpec, workdir: str, task: loop.Task) -> Any:
  """Trains (or resumes) to the end; the final parameters, whole on this process's device. Of a
  population, those of its best member (workdir.best_member; export any other with
  export_member)."""
  try:
    state = loop.train(spec, workdir, task)
  finally:
    workdir_lib.unlock(workdir)
  params = parallel.local_copy(state.params)
  if spec.population is None:
    return params
  best = workdir_lib.best_member(workdir, training.step_of(state), spec.config, spec.population)
  return population.member(params, best)


@dataclasses.dataclass(frozen=True)
class FamilyRun:
  """What a family's hooks build a run's loss, evaluation and procedure from."""

  spec: RunSpec
  settings: Any  # What family.validate returned (the VAE's objective; None for seq2seq).
  data: TextData
  model: Any  # The linen module, built from spec.model_config.
  inference: Any  # The family's inference object; each evaluation sets its params.


def train_and_evaluate(family: Family, config: ml_collections.ConfigDict, workdir: str) -> Any:
  """Trains (or resumes) a model of `family` in workdir, printing held-out metrics and examples;
  the inference object (a Translator, a SentenceModel) with the final parameters."""
  parallel.initialize(config.parallel)  # Before any JAX work: may join other hosts.
  settings = family.validate(config)
  spec = run_spec.build(config, family)
  data = read_data(config, family.reader, family.vocabulary_files)
  prepare_workdir(workdir, config, data)
  model = family.build_model(spec.model_config, *data.vocabularies.values())
  inference = family.inference(config, model, None, data.tokenizers, *data.vocabularies.values())
  run = FamilyRun(spec, settings, data, model, inference)
  member_hooks = family.hooks(run)
  loss_fn, before_update = member_hooks({}, spec.keys)
  task = loop.Task(
    init_params=functools.partial(family.init_params, model),
    loss_fn=loss_fn,
    before_update=before_update,
    train_batches=data.train_batches,
    valid_batches=data.valid_batches,
    evaluate_generation=(
      loop.no_generation if family.evaluation is None else family.evaluation(run)
    ),
    procedure=None if family.procedure is None else family.procedure(run, loss_fn, before_update),
    member_choices=family.member_choices,
    member_hooks=member_hooks,
    per_step=family.per_step,
    summary=family.summary,
  )
  inference.params = train(spec, workdir, task)
  return inference
