"""Tests for textgen_jax.population: N members in one vmapped program equal N separate runs.

Each member is compared with the ordinary run of its `member_config` (its seed and values, the
population's data order): losses at every step and final parameters, to float rounding (the
batched matmuls and the learning-rate factor round differently from one run's).
"""

import itertools
import os

import jax
import numpy as np
import pytest

from tests.helpers import (
  SENTENCES,
  assert_trees_equal,
  make_pairs,
  read_metrics,
  tiny_config,
  tiny_vae_config,
  write_text,
  write_tsv,
)
from textgen_jax import population, seq2seq, vae
from textgen_jax.errors import TextgenError

# Whole training runs, one per member and one for the population.
pytestmark = pytest.mark.slow


def seq2seq_population(tmp_path, **overrides):
  config = tiny_config(
    write_tsv(tmp_path / "pairs.tsv", make_pairs(40)),
    train__num_steps=5,
    train__log_every=1,
    train__eval_every=5,
    **overrides,
  )
  config.population.num_members = 2
  config.population.seeds = "0,5"
  config.population.vary = "opt.learning_rate=1e-2,3e-2; train.label_smoothing=0,0.1"
  return config


def vae_population(tmp_path):
  corpus = write_text(tmp_path / "corpus.txt", "\n".join(SENTENCES * 4) + "\n")
  config = tiny_vae_config(corpus, train__num_steps=6, train__log_every=1, train__eval_every=6)
  config.population.num_members = 2
  config.population.vary = (
    "vae.kl_schedule=linear,cyclical; vae.beta_max=1,0.5; vae.free_bits=0.1,0.5; "
    "vae.free_bits_mode=per_dimension,per_batch; vae.word_dropout=0,0.2; "
    "vae.pretrain_steps=0,3; opt.learning_rate=1e-2,2e-2; model.embedding_dropout=0.2,0; "
    "model.output_dropout=0,0.3"
  )
  return config


def train_losses(records, member=None):
  return [
    r["train_loss"]
    for r in records
    if "train_loss" in r and (member is None or r["member"] == member)
  ]


def assert_members_equal_single_runs(family, config, tmp_path):
  workdir = str(tmp_path / "population")
  family.train_and_evaluate(config, workdir)
  records = read_metrics(workdir)
  inference = seq2seq.Translator if family is seq2seq else vae.SentenceModel
  members = population.parse(config, None)
  for k in range(members.size):
    single_dir = str(tmp_path / f"member{k}")
    single = family.train_and_evaluate(population.member_config(config, k, members), single_dir)
    np.testing.assert_allclose(
      train_losses(records, k), train_losses(read_metrics(single_dir)), rtol=2e-5
    )
    loaded = inference.load(workdir, member=k)
    assert_close(loaded.params, single.params)
  # The members really differ, by far more than the tolerance.
  assert train_losses(records, 0) != train_losses(records, 1)
  first, second = (inference.load(workdir, member=k).params for k in (0, 1))
  assert (
    max(
      float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second))
    )
    > 1e-2
  )


def assert_close(params, expected):
  """Equal to float rounding: Adam's normalisation turns last-bit differences of a near-zero
  gradient into update differences of a fraction of the learning rate (1-2e-2 here; 1.7e-4 seen
  in one of 4096 weights of a VAE's decoder after 6 steps). The members differ by over 1e-2."""
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-4), params, expected
  )


def test_a_seq2seq_population_equals_its_members_trained_alone(tmp_path):
  """Per-member dropout rates, and each member's own data order (three buckets, so the
  shared sequence of batch lengths matters)."""
  config = seq2seq_population(tmp_path, data__num_buckets=3)
  config.population.vary += "; model.dropout_rate=0.3,0"
  config.population.data_order = "member"
  assert_members_equal_single_runs(seq2seq, config, tmp_path)


def test_a_gru_seq2seq_population_equals_its_members_trained_alone(tmp_path):
  config = seq2seq_population(tmp_path, model__cell="gru", model__bidirectional=True)
  assert_members_equal_single_runs(seq2seq, config, tmp_path)


def test_a_vae_population_with_per_member_kl_settings_equals_its_members_alone(tmp_path):
  assert_members_equal_single_runs(vae, vae_population(tmp_path), tmp_path)


def test_a_resumed_population_is_bit_exact_and_exports_an_ordinary_workdir(tmp_path):
  config = seq2seq_population(tmp_path)
  straight = str(tmp_path / "straight")
  seq2seq.train_and_evaluate(config, straight)
  resumed = str(tmp_path / "resumed")
  config.train.num_steps = 2
  seq2seq.train_and_evaluate(config, resumed)
  os.remove(os.path.join(resumed, "metrics.jsonl"))  # A log only.
  config.train.num_steps = 5
  seq2seq.train_and_evaluate(config, resumed)
  after_resume = lambda records: train_losses([r for r in records if r["step"] > 2])
  assert after_resume(read_metrics(resumed)) == after_resume(read_metrics(straight))
  assert population.read_summary(resumed) == population.read_summary(straight)
  for k in (0, 1):
    member = seq2seq.Translator.load(straight, member=k)
    assert_trees_equal(seq2seq.Translator.load(resumed, member=k).params, member.params)
    member.save(str(tmp_path / f"export{k}"))
    exported = seq2seq.Translator.load(str(tmp_path / f"export{k}"))  # An ordinary workdir.
    assert exported.config.seed == (0, 5)[k] and exported.config.population.num_members == 0
    assert_trees_equal(exported.params, member.params)
  best = population.read_summary(straight)["best"]
  assert_trees_equal(
    seq2seq.Translator.load(straight).params, seq2seq.Translator.load(straight, member=best).params
  )


def test_the_members_ranking_is_in_the_checkpoint_and_the_logs_are_only_for_reading(tmp_path):
  """Without metrics.jsonl and members.json, loading takes the best member from the last
  checkpoint's run state, and rerunning the finished command writes the same table again."""
  config = seq2seq_population(tmp_path)
  config.population.select_metric = "valid_token_accuracy"  # Higher is better.
  workdir = str(tmp_path / "population")
  seq2seq.train_and_evaluate(config, workdir)
  table = population.read_summary(workdir)
  for log in ("metrics.jsonl", population.SUMMARY_FILE):
    os.remove(os.path.join(workdir, log))
  assert_trees_equal(
    seq2seq.Translator.load(workdir).params,
    seq2seq.Translator.load(workdir, member=table["best"]).params,
  )
  seq2seq.train_and_evaluate(config, workdir)  # Finished: it ranks the members again.
  assert population.read_summary(workdir) == table


def test_members_looped_in_groups_train_as_members_vmapped_together(tmp_path):
  """vmap_size=1 (one member at a time, no vmap) and 2 of 3 members (a group of two, then the
  remainder alone) against all three in one vmap; each member with its own batches."""
  config = seq2seq_population(tmp_path, data__num_buckets=3)
  config.population.data_order = "member"
  config.population.num_members, config.population.seeds = 3, "0,5,7"
  config.population.vary = "opt.learning_rate=1e-2,3e-2,2e-2"
  results = []
  for vmap_size in (0, 1, 2):
    config.population.vmap_size = vmap_size
    workdir = str(tmp_path / f"vmap_size{vmap_size}")
    seq2seq.train_and_evaluate(config, workdir)
    results.append(
      (read_metrics(workdir), [seq2seq.Translator.load(workdir, member=k).params for k in range(3)])
    )
  for (records, params), k in itertools.product(results[1:], range(3)):
    np.testing.assert_allclose(train_losses(records, k), train_losses(results[0][0], k), rtol=2e-5)
    assert_close(params[k], results[0][1][k])


def test_one_members_divergence_leaves_the_others_as_they_were(tmp_path, capsys):
  config = seq2seq_population(tmp_path)
  config.population.vary = "opt.learning_rate=1e-2,1e30"  # Member 1 overflows.
  config.opt.grad_clip_norm = 0.0
  workdir = str(tmp_path / "population")
  seq2seq.train_and_evaluate(config, workdir)
  assert "member 1: non-finite loss or gradient" in capsys.readouterr().out
  single_dir = str(tmp_path / "member0")
  single = seq2seq.train_and_evaluate(
    population.member_config(config, 0, population.parse(config, None)), single_dir
  )
  np.testing.assert_allclose(
    train_losses(read_metrics(workdir), 0), train_losses(read_metrics(single_dir)), rtol=2e-5
  )
  assert_close(seq2seq.Translator.load(workdir, member=0).params, single.params)
  summary = population.read_summary(workdir)
  assert summary["best"] == 0 and "dropped_at_step" in summary["members"][1]


@pytest.mark.parametrize(
  "vary, message",
  [
    ("model.hidden_size=16,32", "model.hidden_size cannot differ"),
    ("data.batch_size=8,16", "data.batch_size cannot differ"),
    ("opt.learning_rate=1e-2", "has 1 values for 2 members"),
    ("opt.no_such_field=1,2", "no config field opt.no_such_field"),
    ("opt.learning_rate=fast,slow", "opt.learning_rate takes numbers, got fast, slow"),
    ("vae.kl_schedule=linear,cyclical", "no config field vae.kl_schedule"),
    ("train.label_smoothing=0,fast", "is not field=v1,v2"),
    ("model.dropout_rate=0.1,1.5", "model.dropout_rate must be in"),
  ],
)
def test_bad_population_settings_are_one_line_errors_before_training(tmp_path, vary, message):
  config = seq2seq_population(tmp_path)
  config.population.vary = vary
  with pytest.raises(TextgenError, match=message):
    seq2seq.train_and_evaluate(config, str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w")


def test_member_counts_and_seeds_are_checked(tmp_path):
  config = seq2seq_population(tmp_path)
  config.population.num_members = -1
  with pytest.raises(TextgenError, match="num_members must be at least 1"):
    population.parse(config)
  config.population.num_members, config.population.vary = 3, ""
  with pytest.raises(TextgenError, match="2 seeds for 3 members"):
    population.parse(config)
  config.population.seeds = ""
  assert population.parse(config).seeds == (0, 1, 2)
  with pytest.raises(TextgenError, match="members 0 to 2"):
    population.member_config(config, 3, population.parse(config))


@pytest.mark.parametrize(
  "vary, message",
  [
    ("vae.kl_schedule=linear,steep", "--config.vae.kl_schedule='steep': choose one of"),
    ("vae.kl_schedule=0,1", "vae.kl_schedule takes words, got 0.0, 1.0"),
    ("model.output_dropout=0,1", "model.output_dropout must be in"),
  ],
)
def test_bad_vae_member_settings_are_one_line_errors(tmp_path, vary, message):
  config = vae_population(tmp_path)
  config.population.vary = vary
  with pytest.raises(TextgenError, match=message):
    vae.train_and_evaluate(config, str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w")


@pytest.mark.parametrize(
  "setting, message",
  [
    ({"population__data_order": "mine"}, "data_order='mine': choose shared or member"),
    ({"parallel__member_shards": 3}, "member_shards=3 must divide the population's 2 members"),
    ({"population__vmap_size": -1}, "vmap_size must not be negative"),
    ({"population__vmap_size": 1, "parallel__member_shards": 2}, "leave it 0"),
  ],
)
def test_bad_data_order_and_member_shards_are_one_line_errors(tmp_path, setting, message):
  config = seq2seq_population(tmp_path)
  for name, value in setting.items():
    section, field = name.split("__")
    config[section][field] = value
  with pytest.raises(TextgenError, match=message):
    seq2seq.train_and_evaluate(config, str(tmp_path / "w"))
  config.population.num_members, config.population.seeds, config.population.vary = 0, "", ""
  config.population.data_order, config.parallel.member_shards = "shared", 2
  with pytest.raises(TextgenError, match="member_shards > 1 needs a population"):
    seq2seq.train_and_evaluate(config, str(tmp_path / "w"))
