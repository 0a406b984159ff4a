"""The training loop shared by every model family: resume, step, log, evaluate, checkpoint.

A model family describes itself as a `Task`; `train` does the rest. The loop reads top to
bottom; each concern (evaluation, logging, checkpoints) is a small helper.
"""

import contextlib
import dataclasses
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from tqdm import tqdm

from textgen_jax import metrics as metrics_lib
from textgen_jax.checkpointing import Checkpointer
from textgen_jax.data.batching import Batch, BucketedBatches
from textgen_jax.errors import TextgenError, TrainingStopped
from textgen_jax.training import (LossFn, StateHook, TrainState, create_train_state,
                                  jit_eval_step, jit_train_step, make_optimizer)
from textgen_jax.workdir import checkpoint_dir


@dataclasses.dataclass
class Task:
  """What the loop needs to know about a model family and its data."""

  init_params: Callable[[jax.Array], Any]  # rng -> params
  loss_fn: LossFn  # (params, batch, rng, deterministic, *, step) -> (loss, metric sums)
  train_batches: BucketedBatches
  valid_batches: Sequence[Batch]
  # Held-out evaluation beyond the loss: params -> (metrics such as greedy exact match, or a
  # VAE's mutual information; lines to print, such as translations or samples).
  evaluate_generation: Callable[[Any], tuple[dict[str, float], list[str]]] = (
      lambda params: ({}, []))
  # Runs inside the compiled step before the update (see training.train_step).
  before_update: StateHook | None = None


def evaluate(eval_step: Callable, params: Any, batches: Sequence[Batch]) -> dict[str, float]:
  """Metrics summed over all batches, then summarised."""
  totals = None
  for batch in batches:
    sums = eval_step(params, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  return metrics_lib.summarize(jax.device_get(totals))


_PER_STEP_KEYS = ("grad_norm", "param_norm", "kl_weight")


def _raise_if_non_finite(sums: dict[str, Any], step: int) -> None:
  """Stops the run before a state trained on a NaN/Inf loss or gradient is logged or saved."""
  if not all(math.isfinite(float(sums[k])) for k in ("nll_sum", "grad_norm")):
    raise TextgenError(f"non-finite loss or gradient by step {step}; stopping. The last good "
                       "checkpoint is kept: lower --config.opt.learning_rate and rerun to resume")


def _train_record(sums: dict[str, Any], num_steps: int, step: int) -> dict[str, float]:
  """Host-side summary of accumulated train sums; stops the run on a non-finite loss."""
  sums = jax.device_get(sums)
  _raise_if_non_finite(sums, step)
  record = {f"train_{k}": v for k, v in metrics_lib.summarize(sums).items()}
  for key in _PER_STEP_KEYS:  # Averaged over steps rather than tokens.
    if key in sums:
      record[key] = float(sums[key]) / num_steps
  return record


@contextlib.contextmanager
def _stop_requests() -> Iterator[dict[str, int]]:
  """While training, SIGTERM and SIGINT only record themselves ({"signal": number}); the loop
  checks between steps, so a step or a checkpoint write in progress always completes."""
  received = {}
  if threading.current_thread() is not threading.main_thread():  # Handlers need the main thread.
    yield received
    return
  handler = lambda signum, frame: received.setdefault("signal", signum)
  previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield received
  finally:
    for s, old in previous.items():
      signal.signal(s, old)


def train(config: ml_collections.ConfigDict, workdir: str, task: Task) -> TrainState:
  """Trains to config.train.num_steps, resuming from the latest checkpoint in workdir.

  On SIGTERM or SIGINT it saves a checkpoint after the current step and raises TrainingStopped
  (the scripts then exit with 128 + the signal's number); the same command resumes.
  """
  train_cfg = config.train
  params_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
  state = create_train_state(None, task.init_params(params_rng),
                             make_optimizer(config.opt, train_cfg.num_steps))
  checkpointer = Checkpointer(checkpoint_dir(workdir), train_cfg.checkpoint_every,
                              train_cfg.keep_checkpoints)
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore(state)
    print(f"Resuming from the checkpoint at step {int(state.step)} in {workdir}")
  writer = metrics_lib.MetricWriter(workdir)
  writer.truncate_after(int(state.step))

  compiled_step = jit_train_step(task.loss_fn, task.before_update)
  eval_step = jit_eval_step(task.loss_fn)
  train_step = lambda state, batch: compiled_step(state, batch, dropout_rng)
  try:
    with _stop_requests() as stop:
      state = _train_steps(state, task, train_step, eval_step, checkpointer, writer, train_cfg,
                           stop)
    checkpointer.save(state, force=True)
  finally:
    checkpointer.close()  # Waits for pending asynchronous writes, even when a step raised.
  if "signal" in stop and int(state.step) < train_cfg.num_steps:
    name = signal.Signals(stop["signal"]).name
    raise TrainingStopped(f"stopped by {name} at step {int(state.step)} of "
                          f"{train_cfg.num_steps}; the checkpoint is saved in "
                          f"{checkpoint_dir(workdir)}. Run the same command again to resume.",
                          128 + stop["signal"])
  records = writer.read()
  if records:
    metrics_lib.plot_loss_curves(records, os.path.join(workdir, "loss_curve.png"))
  return state


def _train_steps(state: TrainState, task: Task, train_step: Callable, eval_step: Callable,
                 checkpointer: Checkpointer, writer: metrics_lib.MetricWriter,
                 train_cfg: ml_collections.ConfigDict, stop: dict[str, int]) -> TrainState:
  """Steps from state.step to num_steps, logging, evaluating and checkpointing when due;
  returns early, after the current step, once `stop` holds a signal."""
  start_step, accumulated, accumulated_steps = int(state.step), None, 0
  progress = tqdm(range(start_step, train_cfg.num_steps), initial=start_step,
                  total=train_cfg.num_steps, desc="train", dynamic_ncols=True,
                  mininterval=1.0 if sys.stderr.isatty() else 60.0)  # Quiet in log files.
  for step in progress:
    state, sums = train_step(state, task.train_batches.batch_at(step))
    accumulated = sums if accumulated is None else jax.tree.map(jnp.add, accumulated, sums)
    accumulated_steps += 1
    done = step + 1
    is_last = done == train_cfg.num_steps
    if done % train_cfg.log_every == 0 or is_last:
      record = _train_record(accumulated, accumulated_steps, done)
      writer.write(done, record)
      progress.set_postfix(loss=f"{record['train_loss']:.3f}",
                           acc=f"{record['train_token_accuracy']:.3f}")
      accumulated, accumulated_steps = None, 0
    if done % train_cfg.eval_every == 0 or is_last:
      _evaluate_and_report(eval_step, state.params, task, writer, done, progress)
    if checkpointer.is_due(done) and accumulated is not None:
      _raise_if_non_finite(jax.device_get(accumulated), done)  # A host sync, at saves only.
    checkpointer.save(state)  # When due; train() saves the final state.
    if "signal" in stop:
      break
  progress.close()
  return state


def _evaluate_and_report(eval_step: Callable, params: Any, task: Task,
                         writer: metrics_lib.MetricWriter, step: int, progress: tqdm) -> None:
  summary = evaluate(eval_step, params, task.valid_batches)
  generation_metrics, example_lines = task.evaluate_generation(params)
  summary.update(generation_metrics)
  writer.write(step, {f"valid_{k}": v for k, v in summary.items()})
  header = f"step {step}, held-out: " + ", ".join(f"{k} {v:.4g}" for k, v in summary.items())
  progress.write("\n".join([header] + example_lines))
