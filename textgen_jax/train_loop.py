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
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from textgen_jax import metrics as metrics_lib
from textgen_jax import parallel
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
  # The model's vocabulary matrices, which parallel.model_shards > 1 splits over devices.
  vocabulary_matrices: parallel.VocabularyMatrices = dataclasses.field(default_factory=dict)


class RunKeys(NamedTuple):
  """The PRNG keys of a run, one per purpose, all from config.seed."""

  params: jax.Array  # Parameter initialisation.
  dropout: jax.Array  # Dropout and every other noise of the train step (folded with the step).
  evaluation: jax.Array  # Held-out sampling and importance samples at evaluations.
  reset: jax.Array  # Fresh parameters for a reset during the run (the VAE's decoder).


def run_keys(seed: int) -> RunKeys:
  """Key i is fold_in(key(seed), i). For i = 0 and 1 those are jax.random.split(key(seed))'s two
  keys, the parameter and dropout keys runs have always used, so older runs resume exactly."""
  root = jax.random.key(seed)
  return RunKeys(*(jax.random.fold_in(root, i) for i in range(len(RunKeys._fields))))


def evaluate(eval_step: Callable, params: Any, batches: Sequence[Batch]) -> dict[str, float]:
  """Metrics summed over all batches, then summarised."""
  totals = None
  for batch in batches:
    sums = eval_step(params, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  return metrics_lib.summarize(jax.device_get(totals))


_PER_STEP_KEYS = ("grad_norm", "param_norm", "kl_weight")


def _raise_if_non_finite(sums: dict[str, Any], step: int, skip_allowed: bool = False) -> None:
  """Stops the run before a state trained on a NaN/Inf loss or gradient is logged or saved.

  With opt.skip_non_finite such steps were skipped (their update not applied): they only count,
  until more in a row than allowed make the parameters non-finite.
  """
  if (not all(math.isfinite(float(sums[k])) for k in ("nll_sum", "grad_norm", "param_norm"))
      or (sums.get("non_finite_steps", 0) and not skip_allowed)):
    raise TextgenError(f"non-finite loss or gradient by step {step}; stopping. The last good "
                       "checkpoint is kept: lower --config.opt.learning_rate and rerun to resume "
                       "(or let --config.opt.skip_non_finite=N skip up to N such steps in a row)")


def _train_record(sums: dict[str, Any], num_steps: int, step: int,
                  skip_allowed: bool = False) -> dict[str, float]:
  """Host-side summary of accumulated train sums; stops the run on a non-finite loss."""
  sums = jax.device_get(sums)
  _raise_if_non_finite(sums, step, skip_allowed)
  record = {f"train_{k}": v for k, v in metrics_lib.summarize(sums).items()}
  record["non_finite_steps"] = int(sums.get("non_finite_steps", 0))
  finite_steps = max(num_steps - record["non_finite_steps"], 1)
  for key in _PER_STEP_KEYS:  # Averaged over steps rather than tokens.
    if key in sums:  # The parameter norm is kept for skipped steps too, the others are not.
      record[key] = float(sums[key]) / (num_steps if key == "param_norm" else finite_steps)
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
  layout = parallel.make_layout(config.parallel, task.vocabulary_matrices)
  batch_size = task.train_batches.batch_size
  layout.check_batch_size(batch_size)
  state, state_sharding, dropout_rng = _initial_state(config, task, layout)
  checkpointer = Checkpointer(checkpoint_dir(workdir), train_cfg.checkpoint_every,
                              train_cfg.keep_checkpoints, for_training=True)
  checkpointer.check_space(state, train_cfg.keep_checkpoints)
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore(state)
    _log(f"Resuming from the checkpoint at step {int(state.step)} in {workdir}")
  writer = metrics_lib.MetricWriter(workdir, enabled=parallel.is_primary())
  writer.truncate_after(int(state.step))

  compiled_step = jit_train_step(task.loss_fn, task.before_update, state_sharding=state_sharding,
                                 batch_sharding=layout.batch)
  compiled_eval = jit_eval_step(task.loss_fn, params_sharding=state_sharding.params,
                                batch_sharding=layout.batch)
  row_slice = layout.local_slice(batch_size)  # Of every global batch, this host pads its own.
  train_step = lambda state, step: compiled_step(
      state, layout.global_batch(task.train_batches.batch_at(step, row_slice), batch_size), dropout_rng)
  eval_step = lambda params, batch: compiled_eval(params, layout.shard_batch(batch))
  try:
    with _stop_requests() as stop:
      state = _train_steps(state, task, train_step, eval_step, checkpointer, writer, train_cfg,
                           stop, skip_allowed=bool(config.opt.skip_non_finite))
    checkpointer.save(state, force=True)
  finally:
    checkpointer.close()  # Waits for pending asynchronous writes, even when a step raised.
  if "signal" in stop and int(state.step) < train_cfg.num_steps:
    name = signal.Signals(stop["signal"]).name
    raise TrainingStopped(f"stopped by {name} at step {int(state.step)} of "
                          f"{train_cfg.num_steps}; the checkpoint is saved in "
                          f"{checkpoint_dir(workdir)}. Run the same command again to resume.",
                          128 + stop["signal"])
  records = writer.read() if parallel.is_primary() else []
  if records:
    metrics_lib.plot_loss_curves(records, os.path.join(workdir, "loss_curve.png"))
  return state


def _initial_state(config: ml_collections.ConfigDict, task: Task,
                   layout: parallel.Layout) -> tuple[TrainState, Any, jax.Array]:
  """(fresh train state, its shardings, dropout key), all from config.seed. The state is made
  in place on the mesh (every host computes the same), so a vocabulary matrix too big for one
  device is never whole."""
  optimizer = make_optimizer(config.opt, config.train.num_steps)
  make_state = lambda: create_train_state(None, task.init_params(run_keys(config.seed).params),
                                          optimizer)
  abstract_state = jax.eval_shape(make_state)
  layout.check_vocabulary_divides(abstract_state.params)
  state_sharding = layout.tree_shardings(abstract_state)
  state = jax.jit(make_state, out_shardings=state_sharding)()
  dropout_rng = jax.jit(lambda: run_keys(config.seed).dropout, out_shardings=layout.replicated)()
  return state, state_sharding, dropout_rng


def _train_steps(state: TrainState, task: Task, train_step: Callable, eval_step: Callable,
                 checkpointer: Checkpointer, writer: metrics_lib.MetricWriter,
                 train_cfg: ml_collections.ConfigDict, stop: dict[str, int],
                 skip_allowed: bool) -> TrainState:
  """Steps from state.step to num_steps, logging, evaluating and checkpointing when due;
  returns early, after the current step, once `stop` holds a signal."""
  start_step, accumulated, accumulated_steps = int(state.step), None, 0
  progress = tqdm(range(start_step, train_cfg.num_steps), initial=start_step,
                  total=train_cfg.num_steps, desc="train", dynamic_ncols=True,
                  mininterval=1.0 if sys.stderr.isatty() else 60.0,  # Quiet in log files.
                  disable=not parallel.is_primary())
  for step in progress:
    state, sums = train_step(state, step)
    accumulated = sums if accumulated is None else jax.tree.map(jnp.add, accumulated, sums)
    accumulated_steps += 1
    done = step + 1
    is_last = done == train_cfg.num_steps
    if done % train_cfg.log_every == 0 or is_last:
      record = _train_record(accumulated, accumulated_steps, done, skip_allowed)
      writer.write(done, record)
      progress.set_postfix(loss=f"{record['train_loss']:.3f}",
                           acc=f"{record['train_token_accuracy']:.3f}")
      accumulated, accumulated_steps = None, 0
    if done % train_cfg.eval_every == 0 or is_last:
      _evaluate_and_report(eval_step, state.params, task, writer, done, progress)
    if checkpointer.is_due(done) and accumulated is not None:
      _raise_if_non_finite(jax.device_get(accumulated), done, skip_allowed)  # Syncs at saves only.
    checkpointer.save(state)  # When due; train() saves the final state.
    if _stop_agreed(stop, done % train_cfg.log_every == 0 or is_last):
      break
  progress.close()
  return state


def _stop_agreed(stop: dict[str, int], at_log_step: bool) -> bool:
  """Whether to stop after this step. Hosts must stop at the same step, so with several the
  signal (which may reach some hosts only) is shared at log steps, where the loop syncs anyway."""
  if jax.process_count() == 1:
    return "signal" in stop
  if not at_log_step:
    return False
  # Decided from the gathered values alone: a signal arriving after this process contributed
  # its value waits for the next log step, as it does on the hosts that did not see it.
  signals = multihost_utils.process_allgather(np.int32(stop.get("signal", 0)))
  if signals.max():
    stop.setdefault("signal", int(signals.max()))
    return True
  return False


def _log(message: str) -> None:
  if parallel.is_primary():
    print(message)


def _evaluate_and_report(eval_step: Callable, params: Any, task: Task,
                         writer: metrics_lib.MetricWriter, step: int, progress: tqdm) -> None:
  summary = evaluate(eval_step, params, task.valid_batches)
  # Generation (decoding, sampling) runs on one device of process 0, from a whole copy.
  params_copy = parallel.local_copy(params)
  if not parallel.is_primary():
    return
  generation_metrics, example_lines = task.evaluate_generation(params_copy)
  summary.update(generation_metrics)
  writer.write(step, {f"valid_{k}": v for k, v in summary.items()})
  header = f"step {step}, held-out: " + ", ".join(f"{k} {v:.4g}" for k, v in summary.items())
  progress.write("\n".join([header] + example_lines))
