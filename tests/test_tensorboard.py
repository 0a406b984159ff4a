"""Tests for textgen_jax.tensorboard_events: TensorBoard's own reader reads what is written, a
run's event file holds metrics.jsonl's numbers and its sample lines, and a resumed run leaves no
step twice."""

import collections
import os
import shutil

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.util import tensor_util

from tests.helpers import make_pairs, read_metrics, tiny_config, write_tsv
from textgen_jax import metrics, seq2seq
from textgen_jax import tensorboard_events as events
from textgen_jax.errors import TextgenError


def read_events(path: str) -> list[tuple[int, str, object]]:
  """(step, tag, value) of every summary value, read by TensorBoard's loader (which turns a
  simple_value into a scalar tensor, as TensorBoard shows it)."""
  found = []
  for event in event_file_loader.EventFileLoader(path).Load():
    for value in event.summary.value:
      array = tensor_util.make_ndarray(value.tensor)
      found.append((event.step, value.tag, array.item() if array.ndim == 0 else array))
  return found


def test_crc32c_is_castagnolis():
  assert events.crc32c(b"123456789") == 0xE3069283  # The check value of CRC-32C.
  assert events.crc32c(b"") == 0


def test_tensorboard_reads_scalars_and_text_as_written(tmp_path):
  writer = events.EventWriter(str(tmp_path))
  writer.scalars(1, {"train/loss": 2.5, "valid/bleu": 30.25})
  writer.scalars(-3, {"odd/negative_step": -1.0})
  writer.text(2, "samples", "'Go.' -> 'Va !'\nnaïve ✓")
  found = read_events(os.path.join(tmp_path, events.EVENT_FILE))
  assert found == [
    (1, "train/loss", 2.5),
    (1, "valid/bleu", 30.25),
    (-3, "odd/negative_step", -1.0),
    (2, "samples", "'Go.' -> 'Va !'\nnaïve ✓".encode()),
  ]
  plugins = {
    value.tag: value.metadata.plugin_data.plugin_name
    for event in event_file_loader.LegacyEventFileLoader(writer.path).Load()
    for value in event.summary.value
  }
  assert plugins["samples"] == "text"


def test_truncation_drops_later_steps_and_a_torn_record(tmp_path):
  writer = events.EventWriter(str(tmp_path))
  for step in range(1, 6):
    writer.scalars(step, {"train/loss": float(step)})
  with open(writer.path, "ab") as f:
    f.write(events.record(events.scalar_event(6, 0.0, {"train/loss": 6.0}))[:-3])  # Torn.
  records, torn = events.read_records(writer.path)
  assert torn and len(records) == 6  # The file version and five steps.
  writer.truncate_after(3)
  assert [step for step, _, _ in read_events(writer.path)] == [1, 2, 3]
  assert events.read_records(writer.path)[1] is False
  with open(writer.path, "r+b") as f:  # A damaged record that is not the last.
    f.seek(30)
    f.write(b"\xff")
  with pytest.raises(TextgenError, match="a damaged record at byte"):
    writer.truncate_after(2)


def test_scalar_tags_group_train_and_held_out_metrics_and_members():
  record = {"step": 5, "member": 2, "train_loss": 1.5, "valid_greedy_bleu": 3, "grad_norm": 0.5}
  assert metrics.scalar_tags({**record, "flag": True, "name": "x"}) == {
    "member_2/train/loss": 1.5,
    "member_2/valid/greedy_bleu": 3.0,
    "member_2/grad_norm": 0.5,
  }


@pytest.mark.slow  # Three short trainings.
def test_a_run_writes_metrics_jsonl_numbers_and_samples_and_resumes_without_duplicates(tmp_path):
  train_path = write_tsv(tmp_path / "train.tsv", make_pairs(40))
  overrides = dict(
    train__log_every=1,
    train__eval_every=3,
    train__checkpoint_every=3,
    train__num_steps=6,
    train__num_examples_to_print=2,
  )
  straight = str(tmp_path / "straight")
  seq2seq.train_and_evaluate(tiny_config(train_path, **overrides), straight)
  expected = sorted(
    (record["step"], tag, value)
    for record in read_metrics(straight, timing=True)
    for tag, value in metrics.scalar_tags(record).items()
  )
  found = read_events(os.path.join(straight, events.EVENT_FILE))
  scalars = sorted((step, tag, value) for step, tag, value in found if tag != "samples")
  assert [(s, t) for s, t, _ in scalars] == [(s, t) for s, t, _ in expected]
  np.testing.assert_allclose([v for *_, v in scalars], [v for *_, v in expected], rtol=1e-6)
  assert {"train/loss", "valid/loss", "valid/greedy_bleu"} <= {tag for _, tag, _ in scalars}
  samples = [(step, value) for step, tag, value in found if tag == "samples"]
  assert [step for step, _ in samples] == [3, 6] and all(b" -> " in v for _, v in samples)

  # Killed after step 6 was logged but before its checkpoint: the resumed run logs 4-6 again.
  resumed = str(tmp_path / "resumed")
  seq2seq.train_and_evaluate(tiny_config(train_path, **overrides), resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", "6"))
  seq2seq.train_and_evaluate(tiny_config(train_path, **overrides), resumed)
  again = read_events(os.path.join(resumed, events.EVENT_FILE))
  counts = collections.Counter((step, tag) for step, tag, _ in again)
  assert max(counts.values()) == 1
  assert sorted(counts) == sorted((step, tag) for step, tag, _ in found)


@pytest.mark.slow
def test_a_population_writes_each_members_scalars_and_samples(tmp_path):
  train_path = write_tsv(tmp_path / "train.tsv", make_pairs(40))
  config = tiny_config(
    train_path,
    train__log_every=2,
    train__eval_every=4,
    train__num_steps=4,
    train__num_examples_to_print=1,
  )
  config.population.num_members, config.population.seeds = 2, "0,5"
  workdir = str(tmp_path / "population")
  seq2seq.train_and_evaluate(config, workdir)
  found = read_events(os.path.join(workdir, events.EVENT_FILE))
  tags = {tag for _, tag, _ in found}
  for member in (0, 1):
    assert {f"member_{member}/train/loss", f"member_{member}/valid/loss"} <= tags
    assert f"member_{member}/samples" in tags
  losses = {tag: value for step, tag, value in found if step == 4 and tag.endswith("valid/loss")}
  assert losses["member_0/valid/loss"] != losses["member_1/valid/loss"]  # Each its own.
