"""A training process killed with SIGKILL resumes from its last checkpoint and ends where an
uninterrupted run ends (same parameters, bitwise on CPU); one stopped with SIGTERM saves first."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO_ROOT, assert_trees_equal, make_pairs, tiny_config, write_tsv
from textgen_jax import seq2seq
from textgen_jax.checkpointing import Checkpointer

pytestmark = pytest.mark.slow  # Subprocesses: the fast subset (-m 'not slow') skips them.


NUM_STEPS, CHECKPOINT_EVERY = 3000, 100
# The SIGKILL test saves every 5 steps, so most of its time is spent writing checkpoints.
KILL_STEPS, KILL_EVERY = 300, 5


def _train_cli(
  train_path: str,
  workdir: str,
  num_steps: int = NUM_STEPS,
  checkpoint_every: int = CHECKPOINT_EVERY,
) -> subprocess.Popen:
  overrides = {
    "data.train_path": train_path,
    "data.valid_fraction": 0.2,
    "data.max_len": 6,
    "data.min_count": 1,
    "data.num_buckets": 1,
    "data.batch_size": 8,
    "model.embed_dim": 8,
    "model.hidden_size": 16,
    "model.dropout_rate": 0.1,
    "opt.learning_rate": 1e-2,
    "opt.warmup_steps": 2,
    "opt.schedule": "cosine",
    "train.num_steps": num_steps,
    "train.log_every": 50,
    "train.eval_every": 100000,
    "train.checkpoint_every": checkpoint_every,
    "train.keep_checkpoints": 2,
    "train.num_examples_to_print": 0,
  }
  return subprocess.Popen(
    [
      sys.executable,
      os.path.join(REPO_ROOT, "experiments", "train_seq2seq.py"),
      f"--workdir={workdir}",
    ]
    + [f"--config.{k}={v}" for k, v in overrides.items()],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    cwd=REPO_ROOT,
    env={**os.environ, "PYTHONUNBUFFERED": "1"},
  )  # What it printed survives a SIGKILL.


def _committed_steps(workdir: str) -> list[int]:
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(
    int(name)
    for name in os.listdir(directory)
    if name.isdigit() and os.path.exists(os.path.join(directory, name, "_CHECKPOINT_METADATA"))
  )


def _wait_for_a_checkpoint(process: subprocess.Popen, workdir: str, after: int = 0) -> None:
  """Until the run has committed a checkpoint past step `after` (or ended, or two minutes
  passed)."""
  deadline = time.time() + 120
  while (
    max(_committed_steps(workdir), default=0) <= after
    and time.time() < deadline
    and process.poll() is None
  ):
    time.sleep(0.02)


def _wait_for_a_write_in_progress(process: subprocess.Popen, workdir: str) -> None:
  """Until orbax is writing a checkpoint (its temporary directory exists), or the run ended."""
  directory = os.path.join(workdir, "checkpoints")
  while process.poll() is None and not any(
    "tmp" in name for name in (os.listdir(directory) if os.path.isdir(directory) else [])
  ):
    time.sleep(0.001)


def test_sigkilled_run_resumes_and_matches_an_uninterrupted_run(tmp_path):
  """Killed three times (at random moments, one of them inside a checkpoint write) while
  saving every few steps: every committed checkpoint stays loadable, each rerun resumes from the
  latest one, and the run ends with the parameters of a run never interrupted."""
  train_path = write_tsv(tmp_path / "pairs.tsv", make_pairs(60))
  workdir = str(tmp_path / "killed")
  rng = random.Random(0)
  resumed_from = []
  for kill in ("random", "mid-write", "random"):
    process = _train_cli(train_path, workdir, num_steps=KILL_STEPS, checkpoint_every=KILL_EVERY)
    _wait_for_a_checkpoint(process, workdir, after=max(_committed_steps(workdir), default=0))
    if kill == "random":
      time.sleep(rng.uniform(0.0, 1.0))
    else:
      _wait_for_a_write_in_progress(process, workdir)
    process.send_signal(signal.SIGKILL)
    out, _ = process.communicate()
    assert process.returncode == -signal.SIGKILL, "training ended before it could be killed"
    if "Resuming from the checkpoint at step " in out:
      resumed_from.append(int(out.split("Resuming from the checkpoint at step ")[1].split()[0]))
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
    for step in checkpointer.all_steps():  # None half-written, none lost.
      assert checkpointer.restore_params(seq2seq.Translator.load(workdir).params, step)
    checkpointer.close()
  assert len(resumed_from) == 2 and resumed_from == sorted(resumed_from)

  resumed = _train_cli(train_path, workdir, num_steps=KILL_STEPS, checkpoint_every=100)
  out, err = resumed.communicate(timeout=300)
  assert resumed.returncode == 0, err
  start = int(out.split("Resuming from the checkpoint at step ")[1].split()[0])
  assert resumed_from[-1] <= start < KILL_STEPS
  assert Checkpointer(os.path.join(workdir, "checkpoints")).latest_step() == KILL_STEPS

  config = tiny_config(
    train_path,
    train__num_steps=KILL_STEPS,
    opt__schedule="cosine",
    train__log_every=50,
    train__checkpoint_every=KILL_STEPS,
  )
  uninterrupted = seq2seq.train_and_evaluate(config, str(tmp_path / "one_go"))
  assert_trees_equal(seq2seq.Translator.load(workdir).params, uninterrupted.params)


def test_sigterm_saves_a_checkpoint_and_says_how_to_resume(tmp_path):
  """SIGTERM (SIGINT takes the same path) stops after the current step with a checkpoint at
  exactly that step, exit code 128 + 15, and a message; the same command resumes from it."""
  train_path = write_tsv(tmp_path / "pairs.tsv", make_pairs(60))
  workdir = str(tmp_path / "stopped")
  process = _train_cli(train_path, workdir)
  _wait_for_a_checkpoint(process, workdir)
  process.send_signal(signal.SIGTERM)
  _, err = process.communicate(timeout=120)
  assert process.returncode == 128 + signal.SIGTERM, err
  message = err.strip().splitlines()[-1]
  assert message.startswith("stopped by SIGTERM at step ")
  assert "Run the same command again to resume" in message
  stopped_at = int(message.split("at step ")[1].split()[0])
  assert CHECKPOINT_EVERY <= stopped_at < NUM_STEPS
  assert _committed_steps(workdir)[-1] == stopped_at
  assert "Traceback" not in err

  resumed = _train_cli(train_path, workdir, num_steps=stopped_at + 5)
  out, err = resumed.communicate(timeout=300)
  assert resumed.returncode == 0, err
  assert f"Resuming from the checkpoint at step {stopped_at} " in out
  assert _committed_steps(workdir)[-1] == stopped_at + 5


def test_a_second_training_on_a_running_workdir_stops_at_once_naming_the_first(tmp_path):
  """Two trainings on one workdir (a second terminal, a retried job): the second fails in one
  line naming the holder, before it writes anything; the first runs on, unharmed."""
  workdir = str(tmp_path / "workdir")
  first = _train_cli(write_tsv(tmp_path / "pairs.tsv", make_pairs(40)), workdir)
  try:
    _wait_for_a_checkpoint(first, workdir)
    with open(os.path.join(workdir, "train.lock"), encoding="utf-8") as f:
      assert f.read().strip().endswith(f"pid {first.pid}")
    second = _train_cli(str(tmp_path / "pairs.tsv"), workdir)
    _, stderr = second.communicate(timeout=120)
    assert second.returncode == 2, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in stderr and len(errors) == 1
    assert f"{workdir} is being trained by another process (host " in errors[0]
    assert f"pid {first.pid}, holding {workdir}/train.lock)" in errors[0]
    assert first.poll() is None  # Still training.
  finally:
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    steps = [json.loads(line)["step"] for line in f if "train_loss" in line]
  assert steps == sorted(set(steps))  # One writer: no record twice.


@pytest.mark.parametrize("delay", [0.3, 1.0, 2.0, 3.5])
def test_ctrl_c_at_any_moment_of_start_up_is_exit_130_and_one_line(tmp_path, delay):
  """Ctrl-C during imports, data reading, restore or compilation: before, Python's
  KeyboardInterrupt gave long tracebacks, was swallowed by XLA's callbacks (the run trained on
  to exit 0) or crashed the process. Now: exit 130, one line; once steps run, a checkpoint."""
  train_path = write_tsv(tmp_path / "pairs.tsv", make_pairs(60))
  workdir = str(tmp_path / "w")
  process = _train_cli(train_path, workdir)
  time.sleep(delay)
  process.send_signal(signal.SIGINT)
  _, err = process.communicate(timeout=120)
  assert process.returncode == 130, err
  assert "Traceback" not in err and "Exception ignored" not in err
  last = err.strip().splitlines()[-1]
  if last.startswith("stopped by SIGINT at step "):  # Training had begun: it saved first.
    assert _committed_steps(workdir)[-1] == int(last.split("at step ")[1].split()[0])
  else:
    assert last.startswith("error: interrupted (Ctrl-C); training had not started"), err
    assert len(err.strip().splitlines()) == 1, err
