"""Training over several devices and hosts on CPU, each in subprocesses: XLA reads the device
count once, when JAX starts, so this process (1 device) cannot host those runs itself."""

import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests.helpers import REPO_ROOT, make_pairs, read_metrics, tiny_config, write_tsv
from textgen_jax import seq2seq
from textgen_jax.checkpointing import Checkpointer

pytestmark = pytest.mark.slow  # Subprocesses: the fast subset (-m 'not slow') skips them.


def _with_host_devices(count: int) -> dict[str, str]:
  env = dict(os.environ)
  env["XLA_FLAGS"] = " ".join(
    filter(None, [env.get("XLA_FLAGS"), f"--xla_force_host_platform_device_count={count}"])
  )
  return env


def test_data_parallel_suite_passes_on_8_host_devices():
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "pytest",
      "-p",
      "no:cacheprovider",
      "--rootdir",
      REPO_ROOT,
      os.path.join(REPO_ROOT, "tests", "multi_device"),
    ],
    cwd=REPO_ROOT,
    env=_with_host_devices(8),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]
  assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]


def _flags(config) -> list[str]:
  """--config.section.field=value for every field that differs from the script's default."""
  default, flags = seq2seq.get_config(), []
  for section, fields in config.items():
    for field, value in fields.items() if hasattr(fields, "items") else [(None, fields)]:
      name = section if field is None else f"{section}.{field}"
      if (default[section] if field is None else default[section][field]) != value:
        flags.append(f"--config.{name}={value}")
  return flags


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _two_hosts(workdir, config, port):
  """Two processes of 4 CPU devices each, joined by jax.distributed over localhost."""
  return [
    subprocess.Popen(
      [
        sys.executable,
        os.path.join(REPO_ROOT, "experiments", "train_seq2seq.py"),
        f"--workdir={workdir}",
        *_flags(config),
        "--config.parallel.distributed=True",
        f"--config.parallel.coordinator_address=localhost:{port}",
        "--config.parallel.num_processes=2",
        f"--config.parallel.process_id={index}",
      ],
      cwd=REPO_ROOT,
      env={**_with_host_devices(4), "PYTHONUNBUFFERED": "1"},
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for index in range(2)
  ]


def test_two_hosts_stop_together_resume_and_train_like_one_device(tmp_path):
  """SIGTERM to one host only: both stop after the same step with one checkpoint; rerun, they
  finish with the metrics and parameters of one device, and only process 0 reported."""
  train_path = write_tsv(tmp_path / "pairs.tsv", make_pairs(80))
  config = tiny_config(
    train_path,
    data__batch_size=16,
    train__num_steps=100_000,
    train__log_every=4,
    train__eval_every=100_000,
    train__checkpoint_every=100_000,
    train__num_examples_to_print=2,
  )
  workdir = str(tmp_path / "two")
  processes = _two_hosts(workdir, config, _free_port())
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + 120
  while not os.path.exists(metrics_path) and time.time() < deadline:
    time.sleep(0.05)
  processes[1].send_signal(signal.SIGTERM)
  outputs = [process.communicate(timeout=120) for process in processes]
  messages = [err.strip().splitlines()[-1] for _, err in outputs]
  for process, (out, err) in zip(processes, outputs):
    assert process.returncode == 128 + signal.SIGTERM, out[-3000:] + err[-3000:]
  assert messages[0] == messages[1] and messages[0].startswith("stopped by SIGTERM at step ")
  stopped_at = int(messages[0].split("at step ")[1].split()[0])
  assert stopped_at % 4 == 0  # Agreed at a log step.
  assert Checkpointer(os.path.join(workdir, "checkpoints")).all_steps() == [stopped_at]

  config.train.num_steps = stopped_at + 6
  processes = _two_hosts(workdir, config, _free_port())
  outputs = [process.communicate(timeout=300) for process in processes]
  for process, (out, err) in zip(processes, outputs):
    assert process.returncode == 0, out[-3000:] + err[-3000:]
  assert [out.count("held-out:") for out, _ in outputs] == [1, 0]  # Process 0 reports.

  reference = seq2seq.train_and_evaluate(config, str(tmp_path / "one"))
  two, one = (read_metrics(str(tmp_path / name)) for name in ("two", "one"))  # Timing left out.
  assert [r["step"] for r in two] == [r["step"] for r in one]  # Process 0 alone wrote.
  for got, expected in zip(two, one):
    assert got.keys() == expected.keys()
    np.testing.assert_allclose(
      [got[k] for k in sorted(got)], [expected[k] for k in sorted(expected)], rtol=1e-5
    )
  loaded = seq2seq.Translator.load(workdir)
  for x, y in zip(*(map(np.asarray, jax.tree.leaves(m.params)) for m in (loaded, reference))):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)


def test_two_hosts_set_a_damaged_checkpoint_aside_once_and_resume_from_the_intact_one(tmp_path):
  """Process 0 alone moves the damaged newest checkpoint; both resume from the one before and
  end with the parameters of one device trained without interruption."""
  train_path = write_tsv(tmp_path / "pairs.tsv", make_pairs(80))
  config = tiny_config(
    train_path,
    data__batch_size=16,
    train__num_steps=4,
    train__checkpoint_every=2,
    train__keep_checkpoints=3,
  )
  workdir = str(tmp_path / "two")
  seq2seq.train_and_evaluate(config, workdir)  # Checkpoints at 2 and 4, from one device.
  data_dir = os.path.join(workdir, "checkpoints", "4", "params", "ocdbt.process_0", "d")
  os.truncate(os.path.join(data_dir, sorted(os.listdir(data_dir))[0]), 10)

  config.train.num_steps = 6
  processes = _two_hosts(workdir, config, _free_port())
  outputs = [process.communicate(timeout=300) for process in processes]
  for process, (out, err) in zip(processes, outputs):
    assert process.returncode == 0, out[-3000:] + err[-3000:]
  reports = [out.count("corrupt checkpoint (params/ocdbt.process_0/d/") for out, _ in outputs]
  assert reports == [1, 0], outputs
  assert "The newest intact checkpoint is at step 2: 2 steps are lost" in outputs[0][0]
  assert Checkpointer(os.path.join(workdir, "checkpoints")).all_steps() == [2, 4, 6]
  assert os.listdir(os.path.join(workdir, "checkpoints", "corrupt")) == ["4"]
  reference = seq2seq.train_and_evaluate(config, str(tmp_path / "one"))
  loaded = seq2seq.Translator.load(workdir)
  for x, y in zip(*(map(np.asarray, jax.tree.leaves(m.params)) for m in (loaded, reference))):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)


def test_distributed_without_a_cluster_is_a_one_line_error(tmp_path):
  config = tiny_config(write_tsv(tmp_path / "pairs.tsv", make_pairs(20)))
  result = subprocess.run(
    [
      sys.executable,
      os.path.join(REPO_ROOT, "experiments", "train_seq2seq.py"),
      f"--workdir={tmp_path / 'run'}",
      *_flags(config),
      "--config.parallel.distributed=True",
    ],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=120,
    env={k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_", "JAX_"))},
  )
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stderr.startswith(
    "error: --config.parallel.distributed=True: jax.distributed.initialize() failed ("
  ), result.stderr[-3000:]
  assert "--config.parallel.coordinator_address" in result.stderr
  assert "Traceback" not in result.stderr
