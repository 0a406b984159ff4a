"""A third model family in a few lines (a character bigram LM), trained, resumed and loaded
through the engine alone: the proof that a family is one folder over textgen_jax's engine."""

import dataclasses
import functools
import os
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import pytest

from tests.helpers import SENTENCES, assert_trees_equal, write_text
from textgen_jax import config as config_lib
from textgen_jax import families, losses, population, recipe
from textgen_jax import workdir as workdir_lib
from textgen_jax.data import readers
from textgen_jax.errors import TextgenError
from textgen_jax.models.tokens import shift_right

NAME = "toy_char_lm"
RANGES = {**config_lib.RANGES, "model.embedding_size": ">= 1"}


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.family, config.seed = NAME, 0
  config.data = config_lib.data_section(tokenizer="char", max_len=12, batch_size=8, min_count=1)
  config.model = ml_collections.ConfigDict({"embedding_size": 8})
  config_lib.model_dtype_and_backend(config.model)
  config.opt = config_lib.opt_section(learning_rate=1e-2, warmup_steps=0, schedule="constant")
  config.train = config_lib.train_section(
    num_steps=4, log_every=1, eval_every=2, checkpoint_every=2, num_examples_to_print=0
  )
  config.parallel = config_lib.parallel_section()
  config.population = config_lib.population_section()
  return config


class BigramLM(nn.Module):
  vocab_size: int
  embedding_size: int

  @nn.compact
  def __call__(self, tokens_BxT):
    return nn.Dense(self.vocab_size)(nn.Embed(self.vocab_size, self.embedding_size)(tokens_BxT))


def build_model(model_config, vocab):
  return BigramLM(len(vocab), model_config.embedding_size)


def init_params(model, rng):
  return model.init(rng, jnp.zeros((1, 4), jnp.int32))


def loss(params, batch, rng, deterministic, *, step, model):
  del rng, deterministic, step
  logits_BxTxV = model.apply(params, shift_right(batch["targets"]))
  nll_BxT = losses.token_cross_entropy(logits_BxTxV, batch["targets"])
  sums = losses.sequence_metric_sums(logits_BxTxV, batch["targets"], nll_BxT)
  return sums["nll_sum"] / jnp.maximum(sums["tokens"], 1.0), sums


@dataclasses.dataclass
class CharLM:
  """The inference class: what a trained model is used with (here, nothing more)."""

  config: ml_collections.ConfigDict
  model: BigramLM
  params: Any
  tokenizers: Any
  vocab: Any
  step: int | None = None

  @classmethod
  def load(cls, workdir, step=None, member=None, average_last=0):
    loaded = workdir_lib.load(workdir, families.get(NAME), step, member, average_last)
    (vocab,) = loaded.vocabularies
    return cls(loaded.config, loaded.model, loaded.params, loaded.tokenizers, vocab, loaded.step)


def hooks(run):
  return lambda hyperparameters, keys: (
    functools.partial(loss, model=recipe.member_model(run.model, hyperparameters)),
    None,
  )


FAMILY = families.register(
  families.Family(
    NAME,
    get_config=get_config,
    validate=lambda config: config_lib.validate_shared(config, NAME, RANGES),
    per_member_fields=population.ENGINE_FIELDS,
    reader=readers.read_lines,
    vocabulary_files={"chars.json": "text"},
    build_model=build_model,
    init_params=init_params,
    hooks=hooks,
    inference=CharLM,
    train_script="tests/test_families.py",
  )
)


@pytest.mark.slow  # Three short trainings.
def test_a_family_of_a_few_lines_trains_resumes_and_loads_through_the_engine(tmp_path):
  config = get_config()
  config.data.train_path = write_text(tmp_path / "text.txt", "\n".join(SENTENCES * 2) + "\n")
  straight = str(tmp_path / "straight")
  params = FAMILY.train_and_evaluate(config, straight).params
  assert CharLM.load(straight).step == 4 and CharLM.load(straight).config.family == NAME
  assert_trees_equal(CharLM.load(straight).params, params)
  resumed = str(tmp_path / "resumed")
  config.train.num_steps = 2
  FAMILY.train_and_evaluate(config, resumed)
  os.remove(os.path.join(resumed, "metrics.jsonl"))
  config.train.num_steps = 4
  assert_trees_equal(FAMILY.train_and_evaluate(config, resumed).params, params)
  config.model.embedding_size = 16  # Another model: the engine's resume check refuses it.
  with pytest.raises(TextgenError, match="model.embedding_size"):
    FAMILY.train_and_evaluate(config, resumed)


def test_an_unknown_family_is_a_one_line_error_naming_the_known_ones():
  with pytest.raises(TextgenError, match=r"no model family 'nope'; known: .*seq2seq.*vae"):
    families.get("nope")
  assert families.get("seq2seq").vocabulary_files == {
    "source_vocab.json": "source",
    "target_vocab.json": "target",
  }
