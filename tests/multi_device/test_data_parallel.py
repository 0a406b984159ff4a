"""Training on 8 devices: the same run as on one, in every layout, across restores.

These need 8 devices; on CPU tests/test_multi_device.py runs this file in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (the flag must be set before JAX starts).
One process holds all 8, so the one-device reference runs beside them (num_devices=1).
"""

import os

import jax
import numpy as np
import pytest

from tests.helpers import SENTENCES, make_pairs, tiny_config, tiny_vae_config, write_text, write_tsv
import orbax.checkpoint as ocp

from textgen_jax import metrics, seq2seq, vae
from textgen_jax.checkpointing import Checkpointer
from textgen_jax.errors import TextgenError

pytestmark = pytest.mark.skipif(
  jax.device_count() < 8, reason="needs 8 devices; tests/test_multi_device.py runs it"
)

# Float32 sums reduced in another order (per device, then across) differ in the last bits. Adam
# divides by the gradient's running magnitude, so a parameter whose gradient is near zero can
# move by a visible fraction of the learning rate (1e-2): 3e-6 measured after 4 VAE steps,
# 1e-7 after 6 seq2seq steps. A wrong sharding (a gradient not all-reduced, rows dropped or
# doubled) changes losses in the first or second decimal.
RTOL, ATOL = 1e-5, 1e-5


def train_losses(workdir):
  return np.array(
    [r["train_loss"] for r in metrics.MetricWriter(workdir).read() if "train_loss" in r]
  )


def assert_trees_close(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=RTOL, atol=ATOL)


def config_for(pairs_path, **overrides):
  """The toy pairs have 13-token vocabularies; padded to 14 they split over 2 model shards."""
  return tiny_config(
    pairs_path, **{"data__batch_size": 16, "data__vocab_size_multiple": 2, **overrides}
  )


@pytest.fixture(scope="module")
def pairs_path(tmp_path_factory):
  return write_tsv(tmp_path_factory.mktemp("data") / "pairs.tsv", make_pairs(80))


@pytest.fixture(scope="module")
def one_device_seq2seq(pairs_path, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("one_device"))
  config = config_for(pairs_path, parallel__num_devices=1)
  return seq2seq.train_and_evaluate(config, workdir), workdir


def test_devices_are_there():
  assert jax.device_count() == 8


@pytest.mark.parametrize("num_devices, model_shards", [(8, 1), (8, 2), (2, 2)])
def test_seq2seq_on_8_devices_matches_one_device(
  pairs_path, one_device_seq2seq, tmp_path, num_devices, model_shards
):
  """Data parallel (8 x 1), data and vocabulary-parallel (4 x 2), vocabulary only (1 x 2)."""
  reference, reference_dir = one_device_seq2seq
  config = config_for(
    pairs_path, parallel__num_devices=num_devices, parallel__model_shards=model_shards
  )
  model = seq2seq.train_and_evaluate(config, str(tmp_path))
  np.testing.assert_allclose(train_losses(str(tmp_path)), train_losses(reference_dir), rtol=RTOL)
  assert len(train_losses(str(tmp_path))) == 6
  assert_trees_close(model.params, reference.params)


def test_vocabulary_matrices_are_stored_split_over_the_model_axis(pairs_path, tmp_path):
  """The checkpoint of a model_shards=2 run records how each array was laid out in training."""
  config = config_for(pairs_path, train__num_steps=1, parallel__model_shards=2)
  seq2seq.train_and_evaluate(config, str(tmp_path))
  stored = ocp.StandardCheckpointer().metadata(tmp_path / "checkpoints" / "1" / "params")
  specs = jax.tree.map(
    lambda leaf: tuple(leaf.sharding.partition_spec), dict(stored.item_metadata.tree)
  )["params"]
  assert specs["output_layer"] == {"kernel": (None, "model"), "bias": ("model",)}
  assert specs["target_inputs"]["embedding"]["embedding"] == ("model", None)
  assert specs["source_inputs"]["embedding"]["embedding"] == ("model", None)
  assert specs["decoder"]["forward_0"]["recurrent_kernel"] == ()  # Replicated.


@pytest.mark.parametrize("kind", ["vae", "lm"])
def test_vae_and_lm_on_8_devices_match_one_device(tmp_path, kind):
  corpus = write_text(tmp_path / "sentences.txt", "\n".join(SENTENCES * 2) + "\n")
  overrides = dict(
    data__batch_size=8,
    train__num_steps=4,
    train__log_every=1,
    model__kind=kind,
    vae__word_dropout=0.2,
  )  # Random draws must not depend on the layout.
  one = vae.train_and_evaluate(
    tiny_vae_config(corpus, parallel__num_devices=1, **overrides), str(tmp_path / "one")
  )
  eight = vae.train_and_evaluate(tiny_vae_config(corpus, **overrides), str(tmp_path / "eight"))
  np.testing.assert_allclose(
    train_losses(str(tmp_path / "eight")), train_losses(str(tmp_path / "one")), rtol=RTOL
  )
  assert_trees_close(eight.params, one.params)


def test_a_vocabulary_that_does_not_split_evenly_is_a_clear_error(pairs_path, tmp_path):
  config = config_for(pairs_path, data__vocab_size_multiple=1, parallel__model_shards=2)
  with pytest.raises(
    TextgenError,
    match=r"--config.parallel.model_shards=2 splits the vocabulary "
    r"matrices, but .* has a vocabulary of 13, .* "
    r"--config.data.vocab_size_multiple",
  ):
    seq2seq.train_and_evaluate(config, str(tmp_path))


def test_global_batch_not_divisible_by_the_devices_is_a_clear_error(pairs_path, tmp_path):
  config = config_for(pairs_path, data__batch_size=12)
  with pytest.raises(
    TextgenError,
    match=r"--config.data.batch_size=12 is the global batch; it "
    r"must be a multiple of the 8 data-parallel devices",
  ):
    seq2seq.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


def test_bad_device_settings_name_the_flag(pairs_path, tmp_path):
  for overrides, flag in [
    ({"parallel__num_devices": 9}, "parallel.num_devices=9"),
    ({"parallel__model_shards": 3}, "parallel.model_shards=3"),
  ]:
    with pytest.raises(TextgenError, match=f"--config.{flag}"):
      seq2seq.train_and_evaluate(config_for(pairs_path, **overrides), str(tmp_path))


def test_checkpoint_moves_from_8_devices_to_1_and_back(pairs_path, one_device_seq2seq, tmp_path):
  """Steps 1-2 on 8 devices (vocabulary sharded), 3-4 on one, 5-6 on 8 again: the same run."""
  reference, reference_dir = one_device_seq2seq
  workdir = str(tmp_path)
  for num_steps, num_devices, model_shards in [(2, 8, 2), (4, 1, 1), (6, 8, 1)]:
    config = config_for(
      pairs_path,
      train__num_steps=num_steps,
      parallel__num_devices=num_devices,
      parallel__model_shards=model_shards,
    )
    model = seq2seq.train_and_evaluate(config, workdir)
    assert Checkpointer(os.path.join(workdir, "checkpoints")).latest_step() == num_steps
  np.testing.assert_allclose(train_losses(workdir), train_losses(reference_dir), rtol=RTOL)
  assert_trees_close(model.params, reference.params)


@pytest.mark.parametrize("member_shards, data_order", [(1, "shared"), (2, "member")])
def test_a_population_on_8_devices_trains_as_on_one(
  pairs_path, tmp_path, member_shards, data_order
):
  """Members replicated and each batch split over the 8 devices, or members split over 2 groups
  of 4 devices (each member's own batches split over its group): the members of one device."""
  results = {}
  for num_devices in (1, 8):
    config = config_for(
      pairs_path,
      parallel__num_devices=num_devices,
      parallel__member_shards=1 if num_devices == 1 else member_shards,
    )
    config.population.num_members = 2
    config.population.vary = "opt.learning_rate=1e-2,3e-2"
    config.population.data_order = data_order
    workdir = str(tmp_path / f"devices{num_devices}")
    seq2seq.train_and_evaluate(config, workdir)
    results[num_devices] = (
      train_losses(workdir),
      [seq2seq.Translator.load(workdir, member=k).params for k in (0, 1)],
    )
  # The checkpoint records how the stacked state was laid out: members over "members".
  stored = ocp.StandardCheckpointer().metadata(
    tmp_path / "devices8" / "checkpoints" / "6" / "params"
  )
  shardings = [leaf.sharding for leaf in jax.tree.leaves(dict(stored.item_metadata.tree))]
  assert {tuple(sharding.partition_spec) for sharding in shardings} == {("members",)}
  assert {tuple(sharding.shape) for sharding in shardings} == {
    (member_shards, 8 // member_shards, 1)
  }
  np.testing.assert_allclose(results[8][0], results[1][0], rtol=RTOL, atol=ATOL)
  for got, expected in zip(results[8][1], results[1][1]):
    assert_trees_close(got, expected)
