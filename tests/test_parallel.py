"""The device layout on one device: which parameters split over the model axis, batch rows."""

import functools

import jax
import numpy as np
import optax
import pytest

from tests.helpers import tiny_config, tiny_vae_config
from textgen_jax import parallel, seq2seq, vae
from textgen_jax.data.vocab import Vocabulary
from textgen_jax.errors import TextgenError

SOURCE_VOCAB, TARGET_VOCAB = 10, 30


def split_leaves(params, vocabulary_matrices):
  """Paths of the leaves placed on the model axis, with the dimension they split."""
  layout = parallel.make_layout(tiny_config("unused").parallel, vocabulary_matrices)
  shardings = layout.tree_shardings(params)
  return {
    jax.tree_util.keystr(path): tuple(sharding.spec)
    for path, sharding in jax.tree_util.tree_leaves_with_path(shardings)
    if parallel.MODEL_AXIS in tuple(sharding.spec)
  }


def vocabulary(size):
  return Vocabulary(["<pad>", "<bos>", "<eos>", "<unk>"] + [f"w{i}" for i in range(size - 4)])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_seq2seq_vocabulary_matrices_are_the_split_leaves(bidirectional):
  config = tiny_config("unused", model__bidirectional=bidirectional, model__encoder_layers=2)
  model = seq2seq.model.build_model(
    config.model, vocabulary(SOURCE_VOCAB), vocabulary(TARGET_VOCAB)
  )
  params = jax.eval_shape(functools.partial(seq2seq.model.init_params, model), jax.random.key(0))
  assert split_leaves(params, model.VOCABULARY_MATRICES) == {
    "['params']['source_inputs']['embedding']['embedding']": ("model", None),
    "['params']['target_inputs']['embedding']['embedding']": ("model", None),
    "['params']['output_layer']['kernel']": (None, "model"),
    "['params']['output_layer']['bias']": ("model",),
  }
  assert not split_leaves(params, {})  # Only what the model declares is split.
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):  # Each splits its vocabulary.
    spec = split_leaves(params, model.VOCABULARY_MATRICES).get(jax.tree_util.keystr(path))
    if spec:
      assert leaf.shape[spec.index("model")] in (SOURCE_VOCAB, TARGET_VOCAB)


@pytest.mark.parametrize("kind", ["vae", "lm"])
def test_vae_vocabulary_matrices_are_the_split_leaves(kind):
  config = tiny_vae_config("unused", model__kind=kind)
  model = vae.model.build_model(config.model, vocabulary(TARGET_VOCAB))
  params = jax.eval_shape(functools.partial(vae.model.init_params, model), jax.random.key(0))
  expected = {
    "['params']['decoder_embedding']['embedding']": ("model", None),
    "['params']['output_layer']['kernel']": (None, "model"),
    "['params']['output_layer']['bias']": ("model",),
  }
  if kind == "vae":
    expected["['params']['encoder_embedding']['embedding']"] = ("model", None)
  assert split_leaves(params, model.VOCABULARY_MATRICES) == expected


def test_optimizer_moments_follow_their_parameters():
  params = {"params": {"output_layer": {"kernel": np.zeros((4, 6)), "bias": np.zeros(6)}}}

  state = optax.adam(1e-3).init(params)
  assert set(split_leaves(state, seq2seq.Seq2Seq.VOCABULARY_MATRICES)) == {
    f"[0].{moment}['params']['output_layer']['{name}']"
    for moment in ("mu", "nu")
    for name in ("kernel", "bias")
  }


def test_one_device_layout_holds_every_row():
  layout = parallel.make_layout(tiny_config("unused").parallel)
  assert (layout.num_data_shards, layout.num_model_shards) == (1, 1)
  assert layout.local_slice(8) == slice(0, 8)
  batch = {"inputs": np.arange(16, dtype=np.int32).reshape(8, 2)}
  np.testing.assert_array_equal(np.asarray(layout.shard_batch(batch)["inputs"]), batch["inputs"])


def test_device_count_errors_name_the_flag():
  config = tiny_config("unused", parallel__num_devices=jax.device_count() + 1)
  with pytest.raises(TextgenError, match="--config.parallel.num_devices"):
    parallel.make_layout(config.parallel)
  config = tiny_config("unused", parallel__model_shards=0)
  with pytest.raises(TextgenError, match="--config.parallel.model_shards=0"):
    parallel.make_layout(config.parallel)
