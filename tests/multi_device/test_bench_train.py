"""experiments.bench.train's 1-versus-8-device and bfloat16-versus-float32 columns (needs 8
devices)."""

import jax
import pytest

from tests.experiments.test_bench import run_bench

pytestmark = pytest.mark.skipif(
  jax.device_count() < 8, reason="needs 8 devices; tests/test_multi_device.py runs it"
)


def test_bench_train_compares_device_counts_and_dtypes():
  records, _ = run_bench(
    "train",
    "--shapes=seq2seq",
    "--length=4",
    "--batch_sizes=8",
    "--torch=false",
    "--flax=false",
    "--num_devices=1,8",
    "--dtypes=float32,bfloat16",
    "--rounds=1",
  )
  train = records[1:]
  assert sorted((r["num_devices"], r["dtype"]) for r in train) == [
    (1, "bfloat16"),
    (1, "float32"),
    (8, "bfloat16"),
    (8, "float32"),
  ]
  rate = {(r["num_devices"], r["dtype"]): r["tokens_per_s"] for r in train}  # Rounded.
  for r in train:
    key = (r["num_devices"], r["dtype"])
    assert r["speedup_vs_1_device"] == pytest.approx(rate[key] / rate[(1, r["dtype"])], rel=1e-4)
    assert r["speedup_vs_float32"] == pytest.approx(
      rate[key] / rate[(r["num_devices"], "float32")], rel=1e-4
    )
