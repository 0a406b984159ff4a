"""experiments/gpu_day.sh at toy size on the CPU: every part runs and the tables come out, so
the script works the day a GPU is lent."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.slow  # Ten script runs: 90 s alone on 2 cores.


def test_gpu_day_runs_every_part_at_toy_size(tmp_path):
  out = tmp_path / "out"
  result = subprocess.run(
    ["bash", os.path.join(REPO_ROOT, "experiments", "gpu_day.sh")],
    env={**os.environ, "GPU_DAY_TOY": "1", "OUT": str(out), "PYTHON": sys.executable},
    capture_output=True,
    text=True,
    timeout=900,
    cwd=REPO_ROOT,
  )
  assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
  parts = dict(line.split()[:2] for line in (out / "summary.txt").read_text().splitlines())
  assert list(parts) == [
    "tests",
    "bench_train",
    "bench_decode",
    "bench_population",
    "train_lm",
    "train_population",
    "train_aggressive",
    "test_lm",
    "test_population",
    "test_aggressive",
  ]
  failed = {
    name: (out / f"{name}.log").read_text()[-2000:] for name, code in parts.items() if code != "0"
  }
  assert not failed, failed
  tested = [json.loads(line) for line in (out / "ptb_test.jsonl").read_text().splitlines()]
  assert [os.path.basename(r["workdir"]) for r in tested] == ["lm", "population", "aggressive"]
  assert [r["importance_samples"] for r in tested] == [0, 4, 4]
  tables = (out / "tables.md").read_text()
  assert "## Populations at the study shape" in tables and '"num_members": 2' in tables
  assert "| seq2seq |" in tables  # The training-speed table of experiments.bench.report.
