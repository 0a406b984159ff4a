"""Tests for textgen_jax.metrics: the metrics.jsonl writer."""

import json

import numpy as np

from textgen_jax import metrics


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
