"""Tests for textgen_jax.loop: overfitting, bit-identical reruns and resumes, non-finite steps,
mixed precision."""

import functools
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.helpers import (
  assert_trees_equal,
  make_pairs,
  opt_config,
  read_metrics,
  tiny_config,
  write_tsv,
)
from textgen_jax import (
  checkpointing,
  families,
  loop,
  metrics,
  population,
  run_spec,
  seq2seq,
  training,
)
from textgen_jax.data import pipeline
from textgen_jax.checkpointing import Checkpointer
from textgen_jax.data import batching, readers
from textgen_jax.data.tokenizers import make_tokenizer
from textgen_jax.data.vocab import Vocabulary
from textgen_jax.errors import TextgenError

# Every test here trains whole runs (seconds to tens of seconds each).
pytestmark = pytest.mark.slow


# Overfitting.

OVERFIT_PAIRS = [
  ("Go.", "Va !"),
  ("Hi.", "Salut !"),
  ("Run!", "Cours !"),
  ("Who?", "Qui ?"),
  ("Wow!", "Ça alors !"),
  ("Help!", "À l'aide !"),
]


def spec_of(config):
  """The run spec of a seq2seq config."""
  return run_spec.build(config, families.get("seq2seq"))


def test_tiny_model_overfits_a_handful_of_pairs():
  config = seq2seq.get_config()
  config.data.max_len, config.data.num_buckets = 6, 1
  config.model.embed_dim, config.model.hidden_size, config.model.dropout_rate = 16, 32, 0.0
  tokenizer = make_tokenizer("word", lowercase=True)
  source_vocab, target_vocab = (
    Vocabulary.build([tokenizer.tokenize(p[side]) for p in OVERFIT_PAIRS]) for side in (0, 1)
  )
  model = seq2seq.model.build_model(config.model, source_vocab, target_vocab)
  length = batching.bucket_lengths(config.data.max_len, config.data.num_buckets)[-1]
  batch = batching.pad_batch(
    batching.encode_texts([s for s, _ in OVERFIT_PAIRS], tokenizer, source_vocab, 6)[0],
    batching.encode_texts([t for _, t in OVERFIT_PAIRS], tokenizer, target_vocab, 6)[0],
    8,
    length,
  )
  loss_fn = functools.partial(seq2seq.loss.loss, model=model)
  train_step, eval_step = training.jit_train_step(loss_fn), training.jit_eval_step(loss_fn)
  state = training.create_train_state(
    None,
    jax.jit(functools.partial(seq2seq.model.init_params, model))(jax.random.key(0)),
    training.make_optimizer(opt_config(learning_rate=3e-2), 400),
  )
  num_steps, exact_match = 0, 0.0
  while exact_match < 1.0 and num_steps < 400:
    for _ in range(25):
      state, _ = train_step(state, batch, jax.random.key(0))
    num_steps += 25
    exact_match = metrics.summarize(jax.device_get(eval_step(state.params, batch)))["exact_match"]
  assert exact_match == 1.0, f"no exact match after {num_steps} steps"

  translator = seq2seq.Translator(
    config, model, state.params, (tokenizer, tokenizer), source_vocab, target_vocab
  )
  outputs = translator.translate([s for s, _ in OVERFIT_PAIRS])
  assert outputs == [tokenizer.normalize(t) for _, t in OVERFIT_PAIRS]


# Reproducibility and resuming a run.


def test_same_config_and_seed_give_bit_identical_metrics(tmp_path):
  """Two fresh runs (dropout on, an epoch boundary crossed): every logged number is equal."""
  train_path = write_tsv(tmp_path / "pairs.tsv", make_pairs(40))
  config = tiny_config(train_path, train__num_steps=6, train__log_every=1, train__eval_every=3)
  first = seq2seq.train_and_evaluate(config, str(tmp_path / "first"))
  second = seq2seq.train_and_evaluate(config, str(tmp_path / "second"))
  records = [read_metrics(str(tmp_path / name)) for name in ("first", "second")]
  assert len(records[0]) == 6 + 2 and records[0] == records[1]  # All but the run's timing.
  assert_trees_equal(first.params, second.params)


def test_train_records_time_the_steps_and_the_run_and_a_resume_counts_on(tmp_path):
  train_path = write_tsv(tmp_path / "pairs.tsv", make_pairs(40))
  workdir = tmp_path / "w"
  config = tiny_config(train_path, train__num_steps=3, train__checkpoint_every=3)
  seq2seq.train_and_evaluate(config, str(workdir))
  records = [r for r in read_metrics(str(workdir), timing=True) if "train_loss" in r]
  assert all(r["train_steps_per_second"] > 0 for r in records)
  # 8 pairs a batch, each target its words and EOS: at least 16 tokens a step.
  assert all(r["train_tokens_per_second"] >= 16 * r["train_steps_per_second"] for r in records)
  walls = [r["wall_seconds"] for r in records]
  assert 0 < walls[0] < walls[1] < walls[2]
  # The checkpoint keeps the run's wall time: as if the first session had taken 1000 s.
  step_dir = workdir / "checkpoints" / "3"
  run_state = json.loads((step_dir / checkpointing.RUN_STATE).read_text())
  assert walls[-1] <= run_state["wall_seconds"] < walls[-1] + 60
  run_state["wall_seconds"] = 1000.0
  (step_dir / checkpointing.RUN_STATE).write_text(json.dumps(run_state))
  checkpointing.write_checksums(str(step_dir))
  seq2seq.train_and_evaluate(tiny_config(train_path, train__num_steps=5), str(workdir))
  resumed = [
    r for r in read_metrics(str(workdir), timing=True) if r["step"] > 3 and "train_loss" in r
  ]
  assert [r["step"] for r in resumed] == [4, 5]
  assert 1000 < resumed[0]["wall_seconds"] < resumed[1]["wall_seconds"] < 1060


def test_resumed_run_matches_an_uninterrupted_run(tmp_path, capsys):
  # 32 training pairs in batches of 8: 6 steps cross an epoch boundary; dropout is on.
  train_path = write_tsv(tmp_path / "pairs.tsv", make_pairs(40))
  uninterrupted = seq2seq.train_and_evaluate(
    tiny_config(train_path, train__num_steps=6), str(tmp_path / "one_go")
  )
  resumed_dir = str(tmp_path / "resumed")
  seq2seq.train_and_evaluate(tiny_config(train_path, train__num_steps=3), resumed_dir)
  capsys.readouterr()
  resumed = seq2seq.train_and_evaluate(tiny_config(train_path, train__num_steps=6), resumed_dir)
  assert f"Resuming from the checkpoint at step 3 in {resumed_dir}" in capsys.readouterr().out

  assert_trees_equal(resumed.params, uninterrupted.params)
  assert Checkpointer(os.path.join(resumed_dir, "checkpoints")).latest_step() == 6

  def train_records(workdir):
    return [r for r in read_metrics(workdir) if "train_loss" in r]

  resumed_records = train_records(resumed_dir)
  assert [r["step"] for r in resumed_records] == list(range(1, 7))  # No step twice.
  assert resumed_records == train_records(str(tmp_path / "one_go"))
  valid_steps = [r["step"] for r in metrics.MetricWriter(resumed_dir).read() if "valid_loss" in r]
  assert len(valid_steps) == len(set(valid_steps)) and valid_steps[-1] == 6
  assert os.path.exists(os.path.join(resumed_dir, "loss_curve.png"))


def test_non_finite_loss_stops_the_run():
  sums = {
    "nll_sum": float("nan"),
    "correct_tokens": 0.0,
    "tokens": 1.0,
    "exact_sequences": 0.0,
    "sequences": 1.0,
    "grad_norm": 1.0,
    "param_norm": 1.0,
  }
  with pytest.raises(TextgenError, match="non-finite"):
    loop._train_record(sums, 1, 7)
  sums["nll_sum"] = 1.0
  assert loop._train_record(sums, 2, 7)["grad_norm"] == 0.5


def test_non_finite_loss_between_logs_never_reaches_a_checkpoint(tmp_path):
  # loss = log(w) under SGD with rate 1: step 1 sees w=1 (finite) and moves w to 0, so step 2's
  # loss is -inf. Checkpoints are due every step but train metrics are logged only at step 100.
  config = seq2seq.get_config()
  config.opt.update(
    name="sgd", learning_rate=1.0, b1=0.0, warmup_steps=0, schedule="constant", grad_clip_norm=0.0
  )
  config.train.update(num_steps=10, log_every=100, eval_every=100, checkpoint_every=1)
  one_example = [np.array([4], np.int32)]
  task = loop.Task(
    init_params=lambda rng: {"w": jnp.float32(1.0)},
    loss_fn=lambda params, batch, rng, deterministic, step: (
      jnp.log(params["w"]),
      {
        "nll_sum": jnp.log(params["w"]),
        "correct_tokens": 0.0,
        "tokens": 1.0,
        "exact_sequences": 0.0,
        "sequences": 1.0,
      },
    ),
    train_batches=batching.BucketedBatches(one_example, one_example, 1, [2]),
    valid_batches=[],
  )
  with pytest.raises(TextgenError, match="non-finite loss or gradient by step 2"):
    loop.train(spec_of(config), str(tmp_path), task)
  checkpointer = Checkpointer(loop.checkpoint_dir(str(tmp_path)))
  assert checkpointer.latest_step() == 1
  assert float(checkpointer.restore_params({"w": jnp.float32(0.0)})["w"]) == 0.0


def _loss_that_is_nan_at_step(nan_step):
  """(w - 3)^2, plus NaN at one train step (the loss function sees the step)."""

  def loss_fn(params, batch, rng, deterministic, step):
    loss = (params["w"] - 3.0) ** 2
    if step is not None:
      loss = loss + jnp.where(step == nan_step - 1, jnp.nan, 0.0)  # state.step is 0-based.
    return loss, {
      "nll_sum": loss,
      "correct_tokens": 0.0,
      "tokens": 1.0,
      "exact_sequences": 0.0,
      "sequences": 1.0,
    }

  return loss_fn


def _scalar_task(loss_fn):
  one_example = [np.array([4], np.int32)]
  batches = batching.BucketedBatches(one_example, one_example, 1, [2])
  return loop.Task(
    init_params=lambda rng: {"w": jnp.float32(1.0)},
    loss_fn=loss_fn,
    train_batches=batches,
    valid_batches=batches.epoch(0),
  )


@pytest.mark.parametrize("skip_non_finite", [0, 2])
def test_a_non_finite_step_stops_the_run_or_is_skipped_and_counted(tmp_path, skip_non_finite):
  config = seq2seq.get_config()
  config.opt.update(
    name="sgd",
    learning_rate=0.1,
    b1=0.0,
    warmup_steps=0,
    schedule="constant",
    grad_clip_norm=0.0,
    skip_non_finite=skip_non_finite,
  )
  config.train.update(num_steps=6, log_every=1, eval_every=100, checkpoint_every=1)
  task = _scalar_task(_loss_that_is_nan_at_step(3))
  if not skip_non_finite:
    with pytest.raises(TextgenError, match="non-finite loss or gradient by step 3"):
      loop.train(spec_of(config), str(tmp_path), task)
    assert Checkpointer(loop.checkpoint_dir(str(tmp_path))).latest_step() == 2
    return
  state = loop.train(spec_of(config), str(tmp_path), task)
  records = [r for r in metrics.MetricWriter(str(tmp_path)).read() if "train_loss" in r]
  assert [r["non_finite_steps"] for r in records] == [0, 0, 1, 0, 0, 0]
  norms = [r["param_norm"] for r in records]
  assert norms[2] == norms[1] and len(set(norms)) == 5  # Step 3 changed nothing.
  assert all(math.isfinite(r["train_loss"]) for r in records)
  # Five SGD steps on (w - 3)^2 from w = 1: w - 3 shrinks by 1 - 2 * 0.1 each.
  assert float(state.params["w"]) == pytest.approx(3.0 - 2.0 * 0.8**5)


def test_more_non_finite_steps_in_a_row_than_allowed_stop_the_run(tmp_path):
  # loss = log(w) under SGD with rate 1: w reaches 0 at step 1, then every gradient is infinite.
  config = seq2seq.get_config()
  config.opt.update(
    name="sgd",
    learning_rate=1.0,
    b1=0.0,
    warmup_steps=0,
    schedule="constant",
    grad_clip_norm=0.0,
    skip_non_finite=3,
  )
  config.train.update(num_steps=10, log_every=100, eval_every=100, checkpoint_every=1)
  task = _scalar_task(
    lambda params, batch, rng, deterministic, step: (
      jnp.log(params["w"]),
      {
        "nll_sum": jnp.log(params["w"]),
        "correct_tokens": 0.0,
        "tokens": 1.0,
        "exact_sequences": 0.0,
        "sequences": 1.0,
      },
    )
  )
  with pytest.raises(TextgenError, match="by step 5"):  # Steps 2-4 skipped, step 5 applied.
    loop.train(spec_of(config), str(tmp_path), task)
  assert Checkpointer(loop.checkpoint_dir(str(tmp_path))).latest_step() == 4


def test_bfloat16_mixed_precision_keeps_parameters_and_optimizer_state_in_float32(tmp_path):
  """model.dtype=bfloat16: matmuls in bfloat16 (a different loss from float32), while the
  stored parameters and Adam moments stay float32."""
  train_path = write_tsv(tmp_path / "pairs.tsv", make_pairs(40))
  losses = {}
  for dtype in ("float32", "bfloat16"):
    workdir = str(tmp_path / dtype)
    seq2seq.train_and_evaluate(
      tiny_config(train_path, model__dtype=dtype, train__num_steps=2), workdir
    )
    losses[dtype] = [
      r["train_loss"] for r in metrics.MetricWriter(workdir).read() if "train_loss" in r
    ]
  for item in ("params", "optimizer"):
    dtypes = {
      str(leaf.dtype)
      for leaf in jax.tree.leaves(
        ocp.StandardCheckpointer()
        .metadata(tmp_path / "bfloat16" / "checkpoints" / "2" / item)
        .item_metadata.tree
      )
    }
    assert dtypes <= {"float32", "int32"} and "float32" in dtypes, (item, dtypes)
  assert losses["bfloat16"] != losses["float32"]
  np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=2e-2)


def test_a_batch_larger_than_the_training_data_is_capped_at_it(tmp_path, capsys):
  # 512 rows over 32 examples padded every batch with 480 empty rows that cost as much as real
  # ones; the batch now holds the whole set, and says so.
  config = tiny_config(write_tsv(tmp_path / "pairs.tsv", make_pairs(40)), data__batch_size=512)
  data = pipeline.read_data(config, readers.read_pairs, seq2seq.translator.VOCABULARY_FILES)
  num_train = len(data.train_batches.sources)
  assert data.train_batches.batch_size == num_train < 512
  assert (
    f"data.batch_size=512 is more than the {num_train} training examples: batches hold "
    f"{num_train} rows"
  ) in capsys.readouterr().out
  config.data.batch_size = 8  # Below the data: as asked.
  assert (
    pipeline.read_data(
      config, readers.read_pairs, seq2seq.translator.VOCABULARY_FILES
    ).train_batches.batch_size
    == 8
  )


def test_the_members_run_state_round_trips_through_json_and_old_logs_give_the_held_out_rows():
  members = loop.Members(population.Population(seeds=(0, 5, 7), values={}))
  members.dropped = {2: 40}
  members.held_out = {0: {"step": 50, "valid_loss": 2.5}, 1: {"step": 50, "valid_loss": 2.0}}
  assert members.rank("valid_loss")["best"] == 1 and members.best == 1
  saved = json.loads(json.dumps(members.run_state()))  # As a checkpoint's run_state.json.
  restored = loop.Members(members.population)
  restored.restore(saved, records=[{"step": 1, "member": 0, "valid_loss": 9.0}])  # Log unread.
  assert (restored.dropped, restored.held_out, restored.best) == (
    members.dropped,
    members.held_out,
    1,
  )
  old = loop.Members(members.population)  # A checkpoint from before the run state.
  old.restore(
    None,
    [
      {"step": 50, "member": 0, "valid_loss": 2.5, "valid_bleu": 3.0},
      {"step": 50, "member": 0, "learning_rate_scale": 0.5},
      {"step": 50, "member": 1, "train_loss": 1.0},
    ],
  )
  assert old.held_out == {0: {"step": 50, "valid_loss": 2.5, "valid_bleu": 3.0}}
