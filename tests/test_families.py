"""A third model family in a few lines (a character bigram LM), trained, resumed and loaded
through the engine alone: the proof that a family is one folder over textgen_jax's engine."""

import functools
import os

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import pytest

from tests.helpers import SENTENCES, assert_trees_equal, write_text
from textgen_jax import config as config_lib
from textgen_jax import families, losses, parallel, population, recipe, run_spec, loop
from textgen_jax import workdir as workdir_lib
from textgen_jax.data import readers
from textgen_jax.errors import TextgenError
from textgen_jax.models.tokens import shift_right

FAMILY = "toy_char_lm"
VOCABULARY_FILES = {"chars.json": "text"}
RANGES = {**config_lib.RANGES, "model.embedding_size": ">= 1"}


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.family, config.seed = FAMILY, 0
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
  VOCABULARY_MATRICES = {}  # Nothing split over devices.

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


def train_and_evaluate(config, workdir):
  parallel.initialize(config.parallel)
  config_lib.validate_shared(config, FAMILY, RANGES)
  spec = run_spec.build(config, FAMILY, population.ENGINE_FIELDS)
  data = recipe.read_data(config, readers.read_lines, VOCABULARY_FILES)
  recipe.prepare_workdir(workdir, config, data)
  model = build_model(spec.model_config, *data.vocabularies.values())
  task = loop.Task(
    init_params=functools.partial(init_params, model),
    loss_fn=functools.partial(loss, model=model),
    train_batches=data.train_batches,
    valid_batches=data.valid_batches,
  )
  return recipe.train(spec, workdir, task)


families.register(
  families.Family(
    FAMILY, get_config, VOCABULARY_FILES, "tests/test_families.py", train_and_evaluate, None
  )
)


def load(workdir):
  return workdir_lib.load(
    workdir, get_config(), list(VOCABULARY_FILES), __file__, build_model, init_params
  )


@pytest.mark.slow  # Three short trainings.
def test_a_family_of_a_few_lines_trains_resumes_and_loads_through_the_engine(tmp_path):
  config = get_config()
  config.data.train_path = write_text(tmp_path / "text.txt", "\n".join(SENTENCES * 2) + "\n")
  straight = str(tmp_path / "straight")
  params = train_and_evaluate(config, straight)
  assert load(straight).step == 4 and load(straight).config.family == FAMILY
  assert_trees_equal(load(straight).params, params)
  resumed = str(tmp_path / "resumed")
  config.train.num_steps = 2
  train_and_evaluate(config, resumed)
  os.remove(os.path.join(resumed, "metrics.jsonl"))
  config.train.num_steps = 4
  assert_trees_equal(train_and_evaluate(config, resumed), params)
  config.model.embedding_size = 16  # Another model: the engine's resume check refuses it.
  with pytest.raises(TextgenError, match="model.embedding_size"):
    train_and_evaluate(config, resumed)


def test_an_unknown_family_is_a_one_line_error_naming_the_known_ones():
  with pytest.raises(TextgenError, match=r"no model family 'nope'; known: .*seq2seq.*vae"):
    families.get("nope")
  assert families.get("seq2seq").vocabulary_files == {
    "source_vocab.json": "source",
    "target_vocab.json": "target",
  }
