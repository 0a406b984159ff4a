"""experiments/sweep.py: a grid of programs, each a population of seeds; table, plot, resume."""

import json
import os

import pytest

from experiments import sweep
from tests.helpers import assert_one_line_error, make_pairs, run_script, write_tsv
from textgen_jax.errors import TextgenError


TINY = [
  "--config=experiments/configs/seq2seq_tiny.py",
  "--config.data.max_examples=0",
  "--config.data.valid_fraction=0.2",
  "--config.model.embed_dim=8",
  "--config.train.num_steps=3",
  "--config.train.log_every=1",
  "--config.train.eval_every=3",
  "--config.train.checkpoint_every=3",
  "--config.train.num_examples_to_print=0",
  "--config.data.batch_size=8",
  "--config.data.num_buckets=1",
  "--config.data.max_len=6",
  "--config.data.min_count=1",
  "--config.train.max_greedy_eval_pairs=4",
]


@pytest.mark.slow  # Trains a population per grid point in a subprocess.
def test_a_sweep_trains_each_point_as_a_population_and_reads_finished_points_back(tmp_path):
  pairs = write_tsv(tmp_path / "pairs.tsv", make_pairs(40))
  args = [
    *TINY,
    f"--config.data.train_path={pairs}",
    f"--workdir={tmp_path / 'sweep'}",
    "--grid=model.hidden_size=8,16",
    "--seeds=2",
  ]
  first = run_script("sweep.py", *args)
  assert first.returncode == 0, first.stderr[-3000:]
  rows = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
  assert [row["model.hidden_size"] for row in rows] == [8, 16]
  assert all(row["num_seeds"] == 2 and row["std"] >= 0 for row in rows)
  assert rows[0]["mean"] != rows[1]["mean"]
  assert "--config.model.hidden_size=8" in rows[0]["command"]
  assert os.path.exists(tmp_path / "sweep" / "sweep.png")
  assert (
    "| model.hidden_size | valid_loss mean | valid_loss std | seeds | minutes | CPU minutes |"
    in first.stdout
  )
  assert all(row["minutes"] > 0 and row["cpu_minutes"] > 0 for row in rows)
  assert all(row["metrics"]["valid_loss"]["mean"] == row["mean"] for row in rows)
  again = run_script("sweep.py", *args)  # Every point finished: read back, not retrained.
  assert again.returncode == 0, again.stderr[-3000:]
  assert json.loads((tmp_path / "sweep" / "sweep.json").read_text()) == rows
  assert "Resuming" not in again.stdout and "train:" not in again.stderr
  # One knob around its first value: here the same two points, read back.
  around = run_script("sweep.py", *args, "--design=around", "--metric=valid_loss,valid_greedy_bleu")
  assert around.returncode == 0, around.stderr[-3000:]
  assert "| valid_greedy_bleu mean |" in around.stdout and "train:" not in around.stderr


@pytest.mark.slow  # A subprocess.
def test_a_bad_grid_is_a_one_line_error(tmp_path):
  result = run_script(
    "sweep.py", *TINY, f"--workdir={tmp_path / 'sweep'}", "--grid=model.hidden_size=big"
  )
  assert_one_line_error(result, "--grid: model.hidden_size takes int values")


def test_around_design_is_the_centre_each_knob_alone_and_the_interaction():
  knobs = {"a.x": [1, 2, 3], "b.y": [10, 20], "c.z": [5, 6]}
  assert sweep.design_points(knobs, "around", []) == [
    {"a.x": 1, "b.y": 10, "c.z": 5},
    {"a.x": 2, "b.y": 10, "c.z": 5},
    {"a.x": 3, "b.y": 10, "c.z": 5},
    {"a.x": 1, "b.y": 20, "c.z": 5},
    {"a.x": 1, "b.y": 10, "c.z": 6},
  ]
  with_interaction = sweep.design_points(knobs, "around", ["a.x", "b.y"])
  assert len(with_interaction) == 5 + 2  # (2, 20) and (3, 20) are new; the rest repeat.
  assert {"a.x": 3, "b.y": 20, "c.z": 5} in with_interaction
  assert len(sweep.design_points(knobs, "grid", [])) == 12
  with pytest.raises(TextgenError, match="--interaction needs --design=around"):
    sweep.design_points(knobs, "grid", ["a.x", "b.y"])
  with pytest.raises(TextgenError, match="--interaction: give two knobs of --grid"):
    sweep.design_points(knobs, "around", ["a.x", "d.w"])
