"""experiments/sweep.py: a grid of programs, each a population of seeds; table, plot, resume."""

import json
import os

import pytest

from tests.helpers import assert_one_line_error, make_pairs, run_script, write_tsv

pytestmark = pytest.mark.slow  # Trains a population per grid point in a subprocess.

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


def test_a_bad_grid_is_a_one_line_error(tmp_path):
  result = run_script(
    "sweep.py", *TINY, f"--workdir={tmp_path / 'sweep'}", "--grid=model.hidden_size=big"
  )
  assert_one_line_error(result, "--grid: model.hidden_size takes int values")


def test_around_design_trains_the_centre_and_each_knob_alone(tmp_path):
  pairs = write_tsv(tmp_path / "pairs.tsv", make_pairs(40))
  args = [*TINY, f"--config.data.train_path={pairs}", f"--workdir={tmp_path / 'sweep'}"]
  grid = "--grid=model.hidden_size=8,16;model.embed_dim=8,4"
  result = run_script("sweep.py", *args, grid, "--design=around", "--seeds=1")
  assert result.returncode == 0, result.stderr[-3000:]
  rows = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
  assert [(row["model.hidden_size"], row["model.embed_dim"]) for row in rows] == [
    (8, 8),
    (16, 8),
    (8, 4),
  ]
  wrong = run_script("sweep.py", *args, grid, "--interaction=model.hidden_size,data.seed")
  assert_one_line_error(wrong, "--interaction needs --design=around")
  wrong = run_script(
    "sweep.py", *args, grid, "--design=around", "--interaction=model.hidden_size,data.seed"
  )
  assert_one_line_error(wrong, "--interaction: give two knobs of --grid")
