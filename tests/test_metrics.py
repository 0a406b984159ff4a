"""Tests for textgen_jax.metrics: the metrics.jsonl writer."""

import json

import numpy as np
import pytest

from tests.helpers import make_pairs, read_metrics, tiny_config, write_tsv
from textgen_jax import metrics, seq2seq
from textgen_jax.errors import TextgenError


def test_metric_writer_truncate_after(tmp_path):
  writer = metrics.MetricWriter(str(tmp_path))
  assert writer.read() == []
  for step in (1, 2, 3, 3, 4):
    writer.write(step, {"train_loss": np.float32(step), "n": np.int32(step)})
  writer.truncate_after(2)
  records = writer.read()
  assert [r["step"] for r in records] == [1, 2]
  assert records[1] == {"step": 2, "train_loss": 2.0, "n": 2}
  with open(writer.path, encoding="utf-8") as f:
    assert all(json.loads(line) for line in f)


def _write_lines(writer: metrics.MetricWriter, text: str) -> None:
  with open(writer.path, "a", encoding="utf-8") as f:
    f.write(text)


def test_a_torn_last_line_is_dropped_with_a_note_on_resume(tmp_path, capsys):
  # A crash or a full disk while appending leaves half a record without its newline.
  writer = metrics.MetricWriter(str(tmp_path))
  for step in (1, 2):
    writer.write(step, {"train_loss": 1.0})
  _write_lines(writer, '{"step": 3, "train_lo')
  assert [r["step"] for r in writer.read()] == [1, 2]
  writer.truncate_after(3)
  assert "dropped its last line, cut short" in capsys.readouterr().out
  writer.write(3, {"train_loss": 0.5})  # Appends after whole lines only.
  assert [r["step"] for r in writer.read()] == [1, 2, 3]
  with open(writer.path, encoding="utf-8") as f:
    assert [json.loads(line)["step"] for line in f] == [1, 2, 3]


def test_a_bad_line_before_the_last_is_a_one_line_error_naming_it(tmp_path):
  writer = metrics.MetricWriter(str(tmp_path))
  writer.write(1, {"train_loss": 1.0})
  _write_lines(writer, '{"step": 2, "tra\n[1, 2]\n')
  writer.write(3, {"train_loss": 1.0})
  with pytest.raises(TextgenError, match=r"metrics.jsonl:2: not a metrics record"):
    writer.truncate_after(3)
  with open(writer.path, "w", encoding="utf-8") as f:  # A record that is not an object.
    f.write('{"step": 1}\n[1, 2]\n{"step": 3}\n')
  with pytest.raises(TextgenError, match=r"metrics.jsonl:2: not a metrics record"):
    writer.read()


@pytest.mark.slow  # Two short trainings.
def test_training_resumes_past_a_torn_last_line(tmp_path):
  train_path = write_tsv(tmp_path / "train.tsv", make_pairs(40))
  workdir = str(tmp_path / "w")
  seq2seq.train_and_evaluate(
    tiny_config(train_path, train__num_steps=2, train__checkpoint_every=2), workdir
  )
  _write_lines(metrics.MetricWriter(workdir), '{"step": 3, "train_lo')
  seq2seq.train_and_evaluate(tiny_config(train_path, train__num_steps=4), workdir)
  assert [r["step"] for r in read_metrics(workdir) if "train_loss" in r] == [1, 2, 3, 4]
