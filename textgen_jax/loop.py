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
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils
from tqdm import tqdm

from textgen_jax import metrics as metrics_lib
from textgen_jax import parallel, plateau
from textgen_jax.checkpointing import Checkpointer
from textgen_jax.data.batching import Batch, BucketedBatches
from textgen_jax.errors import TextgenError, TrainingStopped
from textgen_jax.run_spec import RunSpec
from textgen_jax import population as population_lib
from textgen_jax.training import (
  LossFn,
  MemberHooks,
  StateHook,
  TrainState,
  create_train_state,
  jit_eval_step,
  jit_population_steps,
  jit_train_step,
  make_optimizer,
  step_of,
)
from textgen_jax.workdir import best_dir, checkpoint_dir


class Clock:
  """The run's wall time, written in its train records for reading: `seconds` spent in the
  training loop over all its sessions (the checkpoint keeps it, so a resumed run counts on from
  its checkpoint, and steps that a killed session did after its last checkpoint count once, when
  they are redone), and the seconds of train steps between two log points (held-out
  evaluations left out; compilation of a new shape is in)."""

  def __init__(self, seconds: float = 0.0):
    self._seconds = seconds
    self._mark = self._interval_start = time.perf_counter()
    self._left_out = 0.0

  @property
  def seconds(self) -> float:
    now = time.perf_counter()
    self._seconds, self._mark = self._seconds + now - self._mark, now
    return self._seconds

  @contextlib.contextmanager
  def left_out(self) -> Iterator[None]:
    """Time spent inside is not train-step time (it still counts in `seconds`)."""
    start = time.perf_counter()
    try:
      yield
    finally:
      self._left_out += time.perf_counter() - start

  def interval(self) -> float:
    """Seconds of train steps since the last call (or the start)."""
    now = time.perf_counter()
    seconds = now - self._interval_start - self._left_out
    self._interval_start, self._left_out = now, 0.0
    return max(seconds, 1e-9)


def no_generation(params: Any) -> tuple[dict[str, float], list[str]]:
  """The held-out evaluation of a family that has nothing beyond the loss."""
  del params
  return {}, []


@dataclasses.dataclass
class Task:
  """What the loop needs to know about a model family and its data (recipe.train_and_evaluate
  builds it from the family's hooks)."""

  init_params: Callable[[jax.Array], Any]  # rng -> params
  loss_fn: LossFn  # (params, batch, rng, deterministic, *, step) -> (loss, metric sums)
  train_batches: BucketedBatches
  valid_batches: Sequence[Batch]
  # Held-out evaluation beyond the loss: params -> (metrics such as greedy exact match, or a
  # VAE's mutual information; lines to print, such as translations or samples).
  evaluate_generation: Callable[[Any], tuple[dict[str, float], list[str]]] = no_generation
  # Runs inside the compiled step before the update (see training.train_step).
  before_update: StateHook | None = None
  # A host-side procedure around the compiled step, for recipes that are not one update per
  # step (the VAE's aggressive encoder training); see StepProcedure.
  procedure: "StepProcedure | None" = None
  # Populations (textgen_jax/population.py): the choice fields' values, and
  # (member hyperparameters, member RunKeys) -> (loss_fn, before_update) for one member. None
  # serves families whose members vary only in seed and learning rate.
  member_choices: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
  member_hooks: MemberHooks | None = None
  # The family's train metrics averaged over steps rather than tokens (the VAE's KL weight).
  per_step: tuple[str, ...] = ()
  # Loss sums -> the family's metrics derived from them (metrics.summarize's `derived`).
  summary: Callable[[dict[str, float]], dict[str, float]] | None = None

  def hooks(self, hyperparameters: Any, keys: Any) -> tuple[LossFn, StateHook | None]:
    if self.member_hooks is None:
      return self.loss_fn, self.before_update
    return self.member_hooks(hyperparameters, keys)


StepFn = Callable[[TrainState, int], tuple[TrainState, Any]]  # (state, step index) -> (state, sums)


class StepProcedure(Protocol):
  """What a recipe wraps around the compiled step. Its host-side state (a phase, a last
  measurement) is saved in every checkpoint's run state under `name`, so resuming restores it
  from the checkpoint, never from the log."""

  name: str
  # params -> ENCODER_SIDE / DECODER_SIDE per leaf: an optimizer state per side
  # (training.make_optimizer) for a procedure that updates one side alone; None otherwise.
  sides: Callable[[Any], Any] | None

  def wrap(
    self, step: StepFn, device_batch: Callable[[int], Any], writer: metrics_lib.MetricWriter
  ) -> StepFn:
    """The loop's step; device_batch(index) is the batch of step `index`, on the devices."""

  def run_state(self) -> dict[str, Any]:
    """Its state as a JSON object."""

  def restore(self, saved: Mapping[str, Any] | None, records: Sequence[dict[str, Any]]) -> None:
    """Its state from `saved` (what run_state returned), or, for a checkpoint written before
    checkpoints held it (saved None), from the log's records up to the restored step."""


def evaluation_sums(eval_step: Callable, params: Any, batches: Sequence[Batch]) -> Any:
  """Metric sums over all batches, on the host (stacked per member for a population)."""
  totals = None
  for batch in batches:
    sums = eval_step(params, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  return jax.device_get(totals)


@dataclasses.dataclass
class Members:
  """How the loop sees a run: one ordinary run, or a population stacked on a member axis."""

  population: population_lib.Population | None = None
  dropped: dict[int, int] = dataclasses.field(default_factory=dict)  # member -> step
  # member -> its last evaluation ("step", "valid_*" values), which rank the members at the end.
  held_out: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)
  best: int | None = None  # The best member, once the run has ranked them at its end.

  def split(self, tree: Any) -> list[Any]:
    """The tree of each member: [tree] for one run."""
    if self.population is None:
      return [tree]
    return [population_lib.member(tree, k) for k in range(self.population.size)]

  @property
  def own_data_order(self) -> bool:
    """Whether each member reads batches in its own seed's order (population.data_order)."""
    return self.population is not None and self.population.data_order == "member"

  def run_state(self) -> dict[str, Any]:
    """What ranks the members, as JSON (member indices as strings); {} for one run."""
    if self.population is None:
      return {}
    return population_lib.ranking_to_json(self.held_out, self.dropped, self.best)

  def restore(self, saved: Mapping[str, Any] | None, records: Sequence[dict[str, Any]]) -> None:
    """From a checkpoint's run state, or from the log's records (saved None: a checkpoint
    written before checkpoints held it)."""
    if self.population is None:
      return
    if saved is None:
      self.held_out = population_lib.held_out_from_records(records)
      return
    self.held_out, dropped, self.best = population_lib.ranking_from_json(saved)
    self.dropped.update(dropped)

  def rank(self, select_metric: str) -> dict[str, Any]:
    """The members' table (population.summary), its best kept as `best`."""
    table = population_lib.summary(self.held_out, self.population, self.dropped, select_metric)
    self.best = table["best"]
    return table

  def label(self, index: int) -> dict[str, int]:
    return {} if self.population is None else {"member": index}

  def drop(self, index: int, step: int) -> None:
    """Member `index` went non-finite: it is left out from now on; the others go on."""
    self.dropped.setdefault(index, step)
    _log(
      f"member {index}: non-finite loss or gradient by step {step}; it is dropped, the "
      "other members go on (its checkpoints before that step are kept)"
    )
    if len(self.dropped) == self.population.size:
      raise TextgenError(
        f"every member went non-finite by step {step}; stopping. Lower "
        "--config.opt.learning_rate (or the varied rates) and rerun"
      )

  def check(self, sums: Any, step: int, skip_allowed: bool) -> None:
    """Stops one run, or drops each member, that trained on a non-finite loss or gradient."""
    for index, member_sums in enumerate(self.split(jax.device_get(sums))):
      if index in self.dropped:
        continue
      try:
        _raise_if_non_finite(member_sums, step, skip_allowed)
      except TextgenError:
        if self.population is None:
          raise
        self.drop(index, step)


# Train metrics averaged over steps rather than tokens (a family adds its own: Task.per_step).
_PER_STEP_KEYS = ("grad_norm", "param_norm")


def _raise_if_non_finite(sums: dict[str, Any], step: int, skip_allowed: bool = False) -> None:
  """Stops the run before a state trained on a NaN/Inf loss or gradient is logged or saved.

  With opt.skip_non_finite such steps were skipped (their update not applied): they only count,
  until more in a row than allowed make the parameters non-finite.
  """
  if not all(math.isfinite(float(sums[k])) for k in ("nll_sum", "grad_norm", "param_norm")) or (
    sums.get("non_finite_steps", 0) and not skip_allowed
  ):
    raise TextgenError(
      f"non-finite loss or gradient by step {step}; stopping. The last good "
      "checkpoint is kept: lower --config.opt.learning_rate and rerun to resume "
      "(or let --config.opt.skip_non_finite=N skip up to N such steps in a row)"
    )


def _train_record(
  sums: dict[str, Any],
  num_steps: int,
  step: int,
  skip_allowed: bool = False,
  per_step: Sequence[str] = (),
  summary: Callable[[dict[str, float]], dict[str, float]] | None = None,
) -> dict[str, float]:
  """Host-side summary of accumulated train sums; stops the run on a non-finite loss."""
  sums = jax.device_get(sums)
  _raise_if_non_finite(sums, step, skip_allowed)
  record = {f"train_{k}": v for k, v in metrics_lib.summarize(sums, summary).items()}
  record["non_finite_steps"] = int(sums.get("non_finite_steps", 0))
  finite_steps = max(num_steps - record["non_finite_steps"], 1)
  for key in (*_PER_STEP_KEYS, *per_step):  # Averaged over steps rather than tokens.
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


def train(spec: RunSpec, workdir: str, task: Task) -> TrainState:
  """Trains to config.train.num_steps, resuming from the latest checkpoint in workdir.

  With a population (config.population) the state is stacked on a member axis and every member
  trains in the one compiled step. On SIGTERM or SIGINT it saves a checkpoint after the current
  step and raises TrainingStopped (the scripts then exit with 128 + the signal's number); the
  same command resumes.
  """
  config, train_cfg = spec.config, spec.config.train
  members = Members(spec.population)
  layout = spec.layout
  batch_size = task.train_batches.batch_size
  layout.check_batch_size(batch_size)
  state, state_sharding, step_inputs = _initial_state(spec, task, layout, members)
  checkpointer = Checkpointer(
    checkpoint_dir(workdir),
    train_cfg.checkpoint_every,
    train_cfg.keep_checkpoints,
    for_training=True,
  )
  checkpointer.check_space(state, train_cfg.keep_checkpoints)
  _set_aside_corrupt(checkpointer)
  resumed = checkpointer.latest_step() is not None
  if resumed:
    state = checkpointer.restore(state)
    _log(f"Resuming from the checkpoint at step {step_of(state)} in {workdir}")
  writer = metrics_lib.MetricWriter(workdir, enabled=parallel.is_primary())
  writer.truncate_after(step_of(state))
  procedure = task.procedure
  clock = Clock()
  if resumed:
    saved = checkpointer.restore_run_state(step_of(state))
    _restore_run_state(saved, members, procedure, writer)
    _drop_non_finite(members, state)
    # Checkpoints from before the clock was kept: the wall time counts from this resume.
    clock = Clock(float((saved or {}).get("wall_seconds", 0.0)))

  compiled_step, compiled_eval = _compile(task, members, state_sharding, layout)
  row_slice = layout.local_slice(batch_size)  # Of every global batch, this host pads its own.
  device_batch = lambda step: layout.global_batch(
    task.train_batches.batch_at(step, row_slice), batch_size
  )
  if members.own_data_order:
    member_batches = [
      dataclasses.replace(task.train_batches, shuffle_seed=seed)
      for seed in members.population.seeds
    ]  # One shape per step for all.
    train_step = lambda state, step: compiled_step(
      state,
      layout.global_member_batch(
        jax.tree.map(
          lambda *rows: np.stack(rows), *[b.batch_at(step, row_slice) for b in member_batches]
        ),
        batch_size,
      ),
      step_inputs,
    )
  else:
    train_step = lambda state, step: compiled_step(state, device_batch(step), step_inputs)
  if procedure is not None:  # Around whichever step the data order gave.
    train_step = procedure.wrap(train_step, device_batch, writer)
  eval_step = lambda params, batch: (
    compiled_eval(params, layout.shard_batch(batch))
    if members.population is None
    else compiled_eval(params, layout.shard_batch(batch), step_inputs)
  )
  best = (
    Checkpointer(best_dir(workdir), keep=1) if config.train.early_stopping_patience > 0 else None
  )
  follow = HeldOutFollower(config, writer, members, best) if plateau.tracked(config) else None
  run_state = lambda: {
    "wall_seconds": clock.seconds,
    "members": members.run_state(),
    **({} if procedure is None else {procedure.name: procedure.run_state()}),
  }
  with _stop_requests() as stop:  # Until the last checkpoint is on disk.
    try:
      state = _train_steps(
        state,
        task,
        train_step,
        eval_step,
        checkpointer,
        run_state,
        writer,
        train_cfg,
        stop,
        members,
        skip_allowed=bool(config.opt.skip_non_finite),
        follow=follow,
        clock=clock,
      )
      ended = "signal" not in stop
      if ended and members.population is not None:
        with contextlib.suppress(TextgenError):  # No member has the metric: _finish says so.
          members.rank(config.population.select_metric)  # Saved with the last checkpoint.
      checkpointer.save(state, force=True, run_state=run_state)
    finally:
      checkpointer.close()  # Waits for pending asynchronous writes, even when a step raised.
      if best is not None:
        best.close()
  if "signal" in stop:
    name = signal.Signals(stop["signal"]).name
    raise TrainingStopped(
      f"stopped by {name} at step {step_of(state)} of "
      f"{train_cfg.num_steps}; the checkpoint is saved in "
      f"{checkpoint_dir(workdir)}. Run the same command again to resume.",
      128 + stop["signal"],
    )
  _finish(workdir, writer, members, config)
  return state


def _compile(
  task: Task, members: Members, state_sharding: Any, layout: parallel.Layout
) -> tuple[Callable, Callable]:
  """The compiled train and eval steps: one run's, or the population's vmapped over members."""
  if members.population is not None:
    return jit_population_steps(
      task.hooks,
      state_sharding=state_sharding,
      batch_sharding=layout.batch,
      member_batch_sharding=layout.member_batch if members.own_data_order else None,
      vmap_size=members.population.vmap_size,
    )
  train_step = jit_train_step(
    task.loss_fn, task.before_update, state_sharding=state_sharding, batch_sharding=layout.batch
  )
  return train_step, jit_eval_step(
    task.loss_fn, params_sharding=state_sharding.params, batch_sharding=layout.batch
  )


def _initial_state(
  spec: RunSpec, task: Task, layout: parallel.Layout, members: Members
) -> tuple[TrainState, Any, Any]:
  """(fresh train state, its shardings, the step's last input), all from the seeds. The state
  is made in place on the mesh (every host computes the same), so a vocabulary matrix too big
  for one device is never whole. The last input is one run's dropout key, or a population's
  (member RunKeys, member hyperparameters), each stacked."""
  config, population = spec.config, members.population
  optimizer = make_optimizer(
    config.opt,
    config.train.num_steps,
    per_member_rate=population is not None,
    sides=None if task.procedure is None else task.procedure.sides,
    follow_held_out=plateau.tracked(config),
  )
  if population is None:
    inputs = lambda: spec.keys.dropout
    make_state = lambda: create_train_state(None, task.init_params(spec.keys.params), optimizer)
  else:
    member_keys = lambda: spec.member_keys(jnp.asarray(population.seeds, jnp.int32))
    inputs = lambda: (member_keys(), population.hyperparameters(task.member_choices))

    def make_state():
      # lax.map, not vmap: a batched orthogonal initialiser runs LAPACK's QR for all members at
      # once, which deadlocked XLA:CPU (OpenBLAS threads) at the seq2seq tutorial's shape.
      state = jax.lax.map(
        lambda key: create_train_state(None, task.init_params(key), optimizer), member_keys().params
      )
      return state.replace(
        opt_state=population_lib.set_learning_rates(
          state.opt_state, population, config.opt.learning_rate
        )
      )

  abstract_state = jax.eval_shape(make_state)
  if population is None:
    layout.check_vocabulary_divides(abstract_state.params)
  state_sharding = (
    layout.tree_shardings(abstract_state)
    if population is None
    else jax.tree.map(lambda _: layout.members, abstract_state)
  )
  state = jax.jit(make_state, out_shardings=state_sharding)()
  return state, state_sharding, jax.jit(inputs, out_shardings=layout.replicated)()


def _restore_run_state(
  saved: dict[str, Any] | None,
  members: Members,
  procedure: StepProcedure | None,
  writer: metrics_lib.MetricWriter,
) -> None:
  """The host-side state from the restored checkpoint's run state; from the log (read only
  then) for a checkpoint written before checkpoints held it (saved None)."""
  records = writer.read() if saved is None else []
  members.restore(None if saved is None else saved.get("members", {}), records)
  if procedure is not None:
    procedure.restore(None if saved is None else saved[procedure.name], records)


def _drop_non_finite(members: Members, state: TrainState) -> None:
  """After a resume: members whose parameters went non-finite before it stay dropped."""
  if members.population is None:
    return
  norms = np.asarray(jax.vmap(optax.tree.norm)(state.params))
  for index in np.flatnonzero(~np.isfinite(norms)):
    if int(index) not in members.dropped:  # Else the run state's record of when it dropped.
      members.drop(int(index), step_of(state))


def _train_steps(
  state: TrainState,
  task: Task,
  train_step: Callable,
  eval_step: Callable,
  checkpointer: Checkpointer,
  run_state: Callable[[], dict[str, Any]],
  writer: metrics_lib.MetricWriter,
  train_cfg: ml_collections.ConfigDict,
  stop: dict[str, int],
  members: Members,
  skip_allowed: bool,
  follow: "HeldOutFollower | None" = None,
  clock: Clock | None = None,
) -> TrainState:
  """Steps from state.step to num_steps, logging, evaluating and checkpointing when due;
  returns early, after the current step, once `stop` holds a signal or early stopping ends the
  run (`follow`: the held-out metric's plateau state, updated after each evaluation)."""
  if follow is not None and plateau.should_stop(plateau.read(state.opt_state), follow.config):
    return state  # Stopped early before this resume: the run is over.
  clock = clock or Clock()
  start_step, accumulated, accumulated_steps = step_of(state), None, 0
  progress = tqdm(
    range(start_step, train_cfg.num_steps),
    initial=start_step,
    total=train_cfg.num_steps,
    desc="train",
    dynamic_ncols=True,
    mininterval=1.0 if sys.stderr.isatty() else 60.0,  # Quiet in log files.
    disable=not parallel.is_primary(),
  )
  for step in progress:
    state, sums = train_step(state, step)
    accumulated = sums if accumulated is None else jax.tree.map(jnp.add, accumulated, sums)
    accumulated_steps += 1
    done = step + 1
    is_last = done == train_cfg.num_steps
    if done % train_cfg.log_every == 0 or is_last:
      _write_train_records(
        writer, members, accumulated, accumulated_steps, done, progress, skip_allowed, task, clock
      )
      accumulated, accumulated_steps = None, 0
    if done % train_cfg.eval_every == 0 or is_last:
      with clock.left_out():
        held_out = _evaluate_and_report(
          eval_step,
          state.params,
          task,
          writer,
          done,
          progress,
          members,
          None if follow is None else train_cfg.held_out_metric,
        )
        stopped_early = False
        if follow is not None:
          state, stopped_early = follow(state, held_out, done)
      if stopped_early:
        break
    if checkpointer.is_due(done) and accumulated is not None:
      members.check(accumulated, done, skip_allowed)  # Syncs at saves only.
    if not is_last:  # train() saves the last state, with the members' ranking.
      checkpointer.save(state, run_state=run_state)  # When due.
    if _stop_agreed(stop, done % train_cfg.log_every == 0 or is_last):
      break
  progress.close()
  return state


def _write_train_records(
  writer: metrics_lib.MetricWriter,
  members: Members,
  accumulated: Any,
  num_steps: int,
  step: int,
  progress: tqdm,
  skip_allowed: bool,
  task: Task,
  clock: Clock,
) -> None:
  """One train record per (live) member, with the pace of the steps since the last one; one
  run stops on a non-finite step, a member drops."""
  accumulated = jax.device_get(accumulated)  # One transfer for the check and the records.
  seconds = clock.interval()  # After the transfer: the steps are done.
  members.check(accumulated, step, skip_allowed)
  losses, accuracies = [], []
  for index, sums in enumerate(members.split(accumulated)):
    if index in members.dropped:
      continue
    record = _train_record(sums, num_steps, step, skip_allowed, task.per_step, task.summary)
    record["train_steps_per_second"] = num_steps / seconds
    record["train_tokens_per_second"] = float(sums["tokens"]) / seconds
    record["wall_seconds"] = clock.seconds
    writer.write(step, {**members.label(index), **record})
    losses.append(record["train_loss"])
    accuracies.append(record["train_token_accuracy"])
  progress.set_postfix(loss=f"{np.mean(losses):.3f}", acc=f"{np.mean(accuracies):.3f}")


@dataclasses.dataclass
class HeldOutFollower:
  """After each evaluation: the plateau state updated from the held-out metric (the rate's
  decays, early stopping's count), what changed said in a line and a record, and on improvement
  the parameters saved to <workdir>/best/ (with early stopping, what inference loads)."""

  config: ml_collections.ConfigDict
  writer: metrics_lib.MetricWriter
  members: Members
  best: Checkpointer | None  # <workdir>/best/ with early stopping; None without.

  def __call__(self, state: TrainState, held_out: np.ndarray, step: int) -> tuple[TrainState, bool]:
    """(the state with its plateau state updated, whether early stopping ends the run)."""
    metric = self.config.train.held_out_metric
    before = plateau.read(state.opt_state)
    # A dropped member's NaN never improves: its counts grow, which changes nothing it does.
    after = plateau.update(
      before,
      held_out.reshape(before.plateau_best.shape),
      step,
      self.config,
      plateau.higher_is_better(metric),
    )
    for index in range(held_out.size):
      if index in self.members.dropped:
        continue
      old, new = (jax.tree.map(lambda x, i=index: x.reshape(-1)[i], s) for s in (before, after))
      self.writer.write(
        step,
        {
          **self.members.label(index),
          "learning_rate_scale": float(new.plateau_scale),
          "best_step": int(new.plateau_best_step),
        },
      )
      who = "" if self.members.population is None else f"member {index}: "
      if new.plateau_decays > old.plateau_decays:
        _log(
          f"{who}{metric} has not improved for {self.config.opt.plateau_patience} "
          f"evaluations (best at step {int(new.plateau_best_step)}): learning rate x"
          f"{float(new.plateau_scale):g} (decay {int(new.plateau_decays)} of "
          f"{self.config.opt.plateau_max_decays})"
        )
    if self.best is not None and np.any(after.plateau_best_step == step):
      self.best.save_params(state.params, step)
    stopped_early = plateau.should_stop(after, self.config)
    if stopped_early:
      _log(
        f"early stopping at step {step}: {metric} has not improved for "
        f"{self.config.train.early_stopping_patience} evaluations; the best, at step "
        f"{int(np.max(after.plateau_best_step))}, is in {self.best.directory}"
      )
    return state.replace(opt_state=plateau.write(state.opt_state, after)), stopped_early


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


def _set_aside_corrupt(checkpointer: Checkpointer) -> None:
  """Moves damaged checkpoints out of the way (process 0, which alone writes the workdir) and
  says what that costs; every process then resumes from the newest intact one."""
  moved = checkpointer.set_aside_corrupt() if parallel.is_primary() else []
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("corrupt checkpoints set aside")
    checkpointer.reload()
  for step, problem, aside in moved:
    _log(f"{checkpointer.step_dir(step)}: corrupt checkpoint ({problem}); moved to {aside}")
  if moved:
    intact = checkpointer.latest_step()
    lost = moved[0][0] - (intact or 0)
    _log(
      f"The newest intact checkpoint is at step {intact}: {lost} steps are lost"
      if intact is not None
      else f"No intact checkpoint is left: training starts again from step 0 ({lost} steps lost)"
    )


def _log(message: str) -> None:
  if parallel.is_primary():
    print(message)


def _evaluate_and_report(
  eval_step: Callable,
  params: Any,
  task: Task,
  writer: metrics_lib.MetricWriter,
  step: int,
  progress: tqdm,
  members: Members,
  held_out_metric: str | None,
) -> np.ndarray | None:
  """Held-out metrics and generation for each (live) member, written and printed; returns
  `held_out_metric` of each member (NaN for a dropped one; None when no metric is followed), the
  same on every process: it comes from the held-out loss sums, which every process has."""
  totals = evaluation_sums(eval_step, params, task.valid_batches)
  held_out = (
    None
    if held_out_metric is None
    else _held_out_values(totals, members, held_out_metric, task.summary)
  )
  # Generation (decoding, sampling) runs on one device of process 0, from a whole copy.
  params_copy = parallel.local_copy(params)
  if not parallel.is_primary():
    return held_out
  lines = []
  for index, (sums, member_params) in enumerate(
    zip(members.split(totals), members.split(params_copy))
  ):
    if index in members.dropped:
      continue
    summary = metrics_lib.summarize(sums, task.summary)
    generation_metrics, example_lines = task.evaluate_generation(member_params)
    summary.update(generation_metrics)
    valid = {f"valid_{k}": v for k, v in summary.items()}
    writer.write(step, {**members.label(index), **valid})
    if members.population is not None:
      members.held_out[index] = {"step": step, **jax.tree.map(_json_number, valid)}
      members.best = None  # Ranked again at the end.
    who = "" if members.population is None else f" member {index}"
    lines.append(
      f"step {step}{who}, held-out: " + ", ".join(f"{k} {v:.4g}" for k, v in summary.items())
    )
    lines += example_lines
    writer.write_text(step, "samples", example_lines, members.label(index).get("member"))
  progress.write("\n".join(lines))
  return held_out


def _json_number(value: Any) -> Any:
  """A NumPy or JAX scalar as the Python number JSON takes."""
  return value.item() if hasattr(value, "item") else value


def _held_out_values(
  totals: Any,
  members: Members,
  metric: str,
  derived: Callable[[dict[str, float]], dict[str, float]] | None,
) -> np.ndarray:
  """`metric` ("valid_<summary key>") of each member's held-out sums; NaN for a dropped one."""
  values = []
  for index, sums in enumerate(members.split(totals)):
    summary = {f"valid_{k}": v for k, v in metrics_lib.summarize(sums, derived).items()}
    if metric not in summary:
      raise TextgenError(
        f"--config.train.held_out_metric={metric!r}: the held-out evaluation "
        f"gives {', '.join(sorted(summary))}"
      )
    values.append(np.nan if index in members.dropped else summary[metric])
  return np.asarray(values, np.float64)


def _finish(
  workdir: str,
  writer: metrics_lib.MetricWriter,
  members: Members,
  config: ml_collections.ConfigDict,
) -> None:
  """For a population, the members' table (printed and members.json); the loss curves (of
  the best member), from the log."""
  if not parallel.is_primary():
    return
  records = writer.read()
  if members.population is not None:
    table = members.rank(config.population.select_metric)  # Raises if no member has it.
    population_lib.write_summary(workdir, table)
    records = [r for r in records if r.get("member") == table["best"]]
  if records:
    metrics_lib.plot_loss_curves(records, os.path.join(workdir, "loss_curve.png"))
