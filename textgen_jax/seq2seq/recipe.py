"""The seq2seq family's hooks and its `Family` (registered by the package): train (or resume) a
translator in a workdir, or `fit` a TSV file."""

import functools
from typing import Any

import ml_collections

from textgen_jax import families, recipe
from textgen_jax.data import readers
from textgen_jax.errors import TextgenError
from textgen_jax.seq2seq import config as seq2seq_config
from textgen_jax.seq2seq.loss import loss
from textgen_jax.seq2seq.model import Seq2Seq, build_model, init_params
from textgen_jax.seq2seq.translator import TRAIN_SCRIPT, VOCABULARY_FILES, Translator


def evaluation(run: recipe.FamilyRun):
  """params -> greedy exact match, BLEU and chrF on the held-out pairs, and a few translations."""
  train_cfg = run.spec.config.train

  def evaluate(params):
    run.inference.params = params
    return run.inference.evaluate(
      run.data.valid_examples,
      train_cfg.num_examples_to_print,
      max_sources=train_cfg.max_greedy_eval_pairs,
    )

  return evaluate


def hooks(run: recipe.FamilyRun):
  """The loss of a member, whose label smoothing and dropout rate may differ (traced values);
  members differ in seed through their init and dropout keys alone."""
  default_smoothing = run.spec.config.train.label_smoothing

  def member_hooks(hyperparameters, keys):
    del keys
    smoothing = hyperparameters.get("train.label_smoothing", default_smoothing)
    model = recipe.member_model(run.model, hyperparameters)
    return functools.partial(loss, model=model, label_smoothing=smoothing), None

  return member_hooks


FAMILY = families.Family(
  seq2seq_config.NAME,
  get_config=seq2seq_config.get_config,
  validate=seq2seq_config.validate,
  per_member_fields=seq2seq_config.PER_MEMBER_FIELDS,
  reader=readers.read_pairs,
  vocabulary_files=VOCABULARY_FILES,
  build_model=build_model,
  init_params=init_params,
  hooks=hooks,
  inference=Translator,
  train_script=TRAIN_SCRIPT,
  evaluation=evaluation,
  vocabulary_matrices=Seq2Seq.VOCABULARY_MATRICES,
  added_later=frozenset(
    {
      ("model", "attention"),
      ("model", "input_feeding"),
      ("model", "tie_embeddings"),
      ("model", "share_embeddings"),
    }
  ),
)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Translator:
  """Trains (or resumes) a translator in workdir; prints held-out metrics and examples."""
  return FAMILY.train_and_evaluate(config, workdir)


def fit(
  train_path: str,
  workdir: str,
  config: ml_collections.ConfigDict | None = None,
  **train_overrides: Any,
) -> Translator:
  """Trains on a TSV file of pairs with the default config (or `config`); returns a Translator.

  Keyword arguments override `config.train` fields, e.g. `fit(path, workdir, num_steps=500)`.
  """
  config = (
    seq2seq_config.get_config() if config is None else ml_collections.ConfigDict(config.to_dict())
  )
  config.data.train_path = train_path
  for name, value in train_overrides.items():
    if name not in config.train:
      raise TextgenError(
        f"fit() got an unknown train setting {name!r}; known: {sorted(config.train.keys())}"
      )
    config.train[name] = value
  return train_and_evaluate(config, workdir)
