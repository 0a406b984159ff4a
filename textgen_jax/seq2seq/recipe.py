"""The seq2seq recipe: train (or resume) a translator in a workdir, or `fit` a TSV file."""

import functools
from typing import Any

import ml_collections

from textgen_jax import parallel, recipe, run_spec, loop
from textgen_jax.data import readers
from textgen_jax.errors import TextgenError
from textgen_jax.seq2seq import config as schema
from textgen_jax.seq2seq.loss import loss
from textgen_jax.seq2seq.model import build_model, init_params
from textgen_jax.seq2seq.translator import VOCABULARY_FILES, Translator


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Translator:
  """Trains (or resumes) a translator in workdir; prints held-out metrics and examples."""
  parallel.initialize(config.parallel)  # Before any JAX work: may join other hosts.
  schema.validate(config)
  spec = run_spec.build(config, schema.FAMILY, schema.PER_MEMBER_FIELDS)
  data = recipe.read_data(config, readers.read_pairs, VOCABULARY_FILES)
  recipe.prepare_workdir(workdir, config, data)
  model = build_model(spec.model_config, *data.vocabularies.values())
  translator = Translator(config, model, None, data.tokenizer, *data.vocabularies.values())

  def evaluate_generation(params):
    translator.params = params
    return translator.evaluate(
      data.valid_examples,
      config.train.num_examples_to_print,
      max_sources=config.train.max_greedy_eval_pairs,
    )

  loss_fn = functools.partial(loss, model=model, label_smoothing=config.train.label_smoothing)

  def member_hooks(hyperparameters, keys):
    del keys  # Members differ in seed through their init and dropout keys alone.
    smoothing = hyperparameters.get("train.label_smoothing", config.train.label_smoothing)
    return functools.partial(
      loss, model=recipe.member_model(model, hyperparameters), label_smoothing=smoothing
    ), None

  task = loop.Task(
    init_params=functools.partial(init_params, model),
    loss_fn=loss_fn,
    train_batches=data.train_batches,
    valid_batches=data.valid_batches,
    evaluate_generation=evaluate_generation,
    vocabulary_matrices=model.VOCABULARY_MATRICES,
    member_hooks=member_hooks,
  )
  translator.params = recipe.train(spec, workdir, task)
  return translator


def fit(
  train_path: str,
  workdir: str,
  config: ml_collections.ConfigDict | None = None,
  **train_overrides: Any,
) -> Translator:
  """Trains on a TSV file of pairs with the default config (or `config`); returns a Translator.

  Keyword arguments override `config.train` fields, e.g. `fit(path, workdir, num_steps=500)`.
  """
  config = schema.get_config() if config is None else ml_collections.ConfigDict(config.to_dict())
  config.data.train_path = train_path
  for name, value in train_overrides.items():
    if name not in config.train:
      raise TextgenError(
        f"fit() got an unknown train setting {name!r}; known: {sorted(config.train.keys())}"
      )
    config.train[name] = value
  return train_and_evaluate(config, workdir)
