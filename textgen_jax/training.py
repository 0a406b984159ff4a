"""Optimiser, train state, and the pure train and eval steps shared by every model family.

A model family supplies a `loss_fn(params, batch, rng, deterministic, *, step) -> (loss,
metric_sums)` (step is the train step, for schedules such as KL annealing, and None when
evaluating); these steps differentiate it, clip, update, and return on-device metric sums.
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state

from textgen_jax import plateau
from textgen_jax.errors import TextgenError

LossFn = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
# The two sides of a model whose optimizer is split (make_optimizer's `sides`).
ENCODER_SIDE, DECODER_SIDE = "encoder_side", "decoder_side"
TrainState = train_state.TrainState
StateHook = Callable[[TrainState], TrainState]


def make_learning_rate_schedule(opt: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  """Linear warmup, then constant, cosine or inverse-square-root decay; "plateau" is constant
  here, the decays being the plateau transform's (textgen_jax/plateau.py)."""
  warmup = optax.linear_schedule(0.0, opt.learning_rate, max(opt.warmup_steps, 1))
  if opt.schedule in ("constant", "plateau"):
    decay = optax.constant_schedule(opt.learning_rate)
  elif opt.schedule == "cosine":
    decay = optax.cosine_decay_schedule(
      opt.learning_rate, max(num_steps - opt.warmup_steps, 1), alpha=0.1
    )
  elif opt.schedule == "rsqrt":
    warmup_steps = max(opt.warmup_steps, 1)
    decay = lambda step: opt.learning_rate * jnp.sqrt(warmup_steps / (step + warmup_steps))
  else:
    raise TextgenError(
      f"--config.opt.schedule={opt.schedule!r}: choose constant, cosine, rsqrt or plateau"
    )
  return optax.join_schedules([warmup, decay], [opt.warmup_steps])


class LearningRateRatio(NamedTuple):
  """The optimizer state of `learning_rate_ratio`: this member's rate over the shared one."""

  learning_rate_ratio: jax.Array


def learning_rate_ratio() -> optax.GradientTransformation:
  """Scales updates by the ratio in its state (1 at init; a population sets it per member)."""
  return optax.GradientTransformation(
    lambda params: LearningRateRatio(jnp.ones([], jnp.float32)),
    lambda updates, state, params=None: (
      jax.tree.map(lambda u: u * state.learning_rate_ratio.astype(u.dtype), updates),
      state,
    ),
  )


def fresh_optimizer_state(tx: optax.GradientTransformation, params: Any, old_state: Any) -> Any:
  """tx.init(params), keeping a member's learning-rate ratio and the held-out plateau state
  (for a reset during training: the run's schedule goes on)."""
  fresh = tx.init(params)
  kept = {
    name: optax.tree_utils.tree_get(old_state, name)
    for name in ("learning_rate_ratio", *plateau.PlateauState._fields)
  }
  kept = {name: value for name, value in kept.items() if value is not None}
  return optax.tree_utils.tree_set(fresh, **kept) if kept else fresh


def make_optimizer(
  opt: ml_collections.ConfigDict,
  num_steps: int,
  per_member_rate: bool = False,
  sides: Callable[[Any], Any] | None = None,
  follow_held_out: bool = False,
) -> optax.GradientTransformation:
  """Gradient clipping by global norm, then Adam, AdamW or SGD on the schedule.

  per_member_rate: updates are then scaled by a ratio held in the optimizer state, which a
  population sets per member (population.set_learning_rates).
  sides: params -> a label per leaf, ENCODER_SIDE or DECODER_SIDE: each side then has an
  optimizer state of its own (its own moments and step count, as two optimizers would), so a
  step may update one side alone (train_step's after_update=keep_side); clipping stays global.
  follow_held_out: the plateau transform last (plateau.tracked): its state follows the held-out
  metric and scales the updates (the plateau schedule's decays).
  """
  learning_rate = make_learning_rate_schedule(opt, num_steps)
  if opt.name == "adam":
    optimizer = optax.adam(learning_rate, b1=opt.b1, b2=opt.b2)
  elif opt.name == "adamw":
    optimizer = optax.adamw(learning_rate, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay)
  elif opt.name == "sgd":
    optimizer = optax.sgd(learning_rate, momentum=opt.b1 or None)
  else:
    raise TextgenError(f"--config.opt.name={opt.name!r}: choose adam, adamw or sgd")
  if per_member_rate:
    optimizer = optax.chain(optimizer, learning_rate_ratio())
  if sides is not None:
    optimizer = optax.multi_transform({ENCODER_SIDE: optimizer, DECODER_SIDE: optimizer}, sides)
  if follow_held_out:  # After the sides: one state for the run, not one per side.
    optimizer = optax.chain(optimizer, plateau.scale_by_plateau())
  if opt.grad_clip_norm:
    optimizer = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), optimizer)
  if opt.skip_non_finite:
    # A non-finite gradient leaves parameters and moments as they were; more than this many in
    # a row are applied, and the loop then stops on the non-finite parameters.
    optimizer = optax.apply_if_finite(optimizer, max_consecutive_errors=opt.skip_non_finite)
  return optimizer


def create_train_state(
  apply_fn: Callable, params: Any, optimizer: optax.GradientTransformation
) -> TrainState:
  return TrainState.create(apply_fn=apply_fn, params=params, tx=optimizer)


def step_of(state: TrainState) -> int:
  """The state's step; a population's members all share it (their step is stacked)."""
  return int(np.asarray(jax.device_get(state.step)).reshape(-1)[0])


def train_step(
  state: TrainState,
  batch: dict[str, jax.Array],
  rng: jax.Array,
  *,
  loss_fn: LossFn,
  before_update: StateHook | None = None,
  after_update: Callable[[TrainState, TrainState], TrainState] | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One update. `rng` is the run's dropout key; folding in the step makes each step's own.

  `before_update(state) -> state` runs first, inside the compiled step: a recipe that changes
  the state at a given step (the VAE's decoder reset) stays a pure function of the step.
  `after_update(new state, old state) -> state` may take back part of the update (keep_side).
  """
  if before_update is not None:
    state = before_update(state)
  step_rng = jax.random.fold_in(rng, state.step)
  grad_fn = jax.value_and_grad(
    functools.partial(loss_fn, deterministic=False, step=state.step), has_aux=True
  )
  (loss, metric_sums), grads = grad_fn(state.params, batch, step_rng)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  # A non-finite loss makes the whole gradient non-finite, so that opt.skip_non_finite (which
  # looks at gradients) skips it too.
  grads = jax.tree.map(lambda g: jnp.where(finite, g, jnp.nan), grads)
  old_state, state = state, state.apply_gradients(grads=grads)
  if after_update is not None:
    state = after_update(state, old_state)
  # A non-finite step counts in non_finite_steps, not in the metric sums, which then stay
  # readable; param_norm is left as is: non-finite parameters are what stops the run.
  metric_sums = jax.tree.map(lambda x: jnp.where(finite, x, 0.0), metric_sums)
  metric_sums["grad_norm"] = jnp.where(finite, grad_norm, 0.0)
  metric_sums["non_finite_steps"] = 1.0 - finite.astype(jnp.float32)
  metric_sums["param_norm"] = optax.tree.norm(state.params)
  return state, metric_sums


def keep_side(
  state: TrainState, old: TrainState, *, side: str, sides: Callable[[Any], Any]
) -> TrainState:
  """`state` with `old`'s parameters and optimizer state on `side` (an after_update hook for an
  optimizer made with `sides`, whose multi_transform keeps each side's state under its label).
  The step count still advances."""
  side_key = jax.tree_util.DictKey(side)
  opt_state = jax.tree_util.tree_map_with_path(
    lambda path, new, before: before if side_key in path else new, state.opt_state, old.opt_state
  )
  params = jax.tree.map(
    lambda label, new, before: before if label == side else new,
    sides(old.params),
    state.params,
    old.params,
  )
  return state.replace(params=params, opt_state=opt_state)


def eval_step(params: Any, batch: dict[str, jax.Array], *, loss_fn: LossFn) -> dict[str, jax.Array]:
  """Metric sums on one batch, no dropout."""
  _, metric_sums = loss_fn(params, batch, jax.random.key(0), deterministic=True, step=None)
  return metric_sums


def jit_train_step(
  loss_fn: LossFn,
  before_update: StateHook | None = None,
  *,
  state_sharding: Any = None,
  batch_sharding: Any = None,
) -> Callable:
  """The compiled step; the old state's buffers are donated to the new one.

  With shardings (see parallel.Layout) the step is compiled for them explicitly: the batch split
  over devices, the state as laid out, the metric sums replicated.
  """
  step = functools.partial(train_step, loss_fn=loss_fn, before_update=before_update)
  if batch_sharding is None:
    return jax.jit(step, donate_argnums=0)
  replicated = _replicated_like(batch_sharding)
  return jax.jit(
    step,
    in_shardings=(state_sharding, batch_sharding, replicated),
    out_shardings=(state_sharding, replicated),
    donate_argnums=0,
  )


def jit_eval_step(
  loss_fn: LossFn, *, params_sharding: Any = None, batch_sharding: Any = None
) -> Callable:
  step = functools.partial(eval_step, loss_fn=loss_fn)
  if batch_sharding is None:
    return jax.jit(step)
  return jax.jit(
    step,
    in_shardings=(params_sharding, batch_sharding),
    out_shardings=_replicated_like(batch_sharding),
  )


# A population's step: (state, batch, (member keys, member hyperparameters)), each stacked on a
# leading member axis; make_hooks(hyperparameters, keys) -> (loss_fn, before_update) is the
# family's, called once per member inside the vmap (so its scalars are traced).
MemberHooks = Callable[[Any, Any], tuple[LossFn, StateHook | None]]


def population_train_step(
  state: TrainState,
  batch: dict[str, jax.Array],
  members: Any,
  *,
  make_hooks: MemberHooks,
  batch_per_member: bool = False,
  vmap_size: int = 0,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One update of every member on the shared batch (or, batch_per_member, on its own batch,
  stacked [N, B, ...]); metric sums stacked per member.

  vmap_size: members computed together by one vmap; the step loops over such groups
  (lax.map), one member at a time without vmap when 1. 0: all members in one vmap.
  """

  def member_step(state, batch, keys, hyperparameters):
    loss_fn, before_update = make_hooks(hyperparameters, keys)
    return train_step(state, batch, keys.dropout, loss_fn=loss_fn, before_update=before_update)

  keys, hyperparameters = members
  if batch_per_member:
    step, inputs = lambda inputs: member_step(*inputs), (state, batch, keys, hyperparameters)
  else:  # The shared batch is closed over, not mapped.
    step = lambda inputs: member_step(inputs[0], batch, *inputs[1:])
    inputs = (state, keys, hyperparameters)
  if vmap_size == 1:
    return jax.lax.map(step, inputs)
  return jax.lax.map(step, inputs, batch_size=vmap_size) if vmap_size else jax.vmap(step)(inputs)


def population_eval_step(
  params: Any, batch: dict[str, jax.Array], members: Any, *, make_hooks: MemberHooks
) -> dict[str, jax.Array]:
  def member_eval(params, keys, hyperparameters):
    return eval_step(params, batch, loss_fn=make_hooks(hyperparameters, keys)[0])

  keys, hyperparameters = members
  return jax.vmap(member_eval)(params, keys, hyperparameters)


def jit_population_steps(
  make_hooks: MemberHooks,
  *,
  state_sharding: Any,
  batch_sharding: Any,
  member_batch_sharding: Any = None,
  vmap_size: int = 0,
) -> tuple[Callable, Callable]:
  """The compiled population train step (state donated) and eval step. With a
  member_batch_sharding, every member trains on its own batch (stacked, so sharded)."""
  replicated = _replicated_like(batch_sharding)
  per_member = member_batch_sharding is not None
  train = jax.jit(
    functools.partial(
      population_train_step, make_hooks=make_hooks, batch_per_member=per_member, vmap_size=vmap_size
    ),
    in_shardings=(
      state_sharding,
      member_batch_sharding if per_member else batch_sharding,
      replicated,
    ),
    out_shardings=(state_sharding, replicated),
    donate_argnums=0,
  )
  evaluate = jax.jit(
    functools.partial(population_eval_step, make_hooks=make_hooks),
    in_shardings=(state_sharding.params, batch_sharding, replicated),
    out_shardings=replicated,
  )
  return train, evaluate


def _replicated_like(sharding: jax.sharding.NamedSharding) -> jax.sharding.NamedSharding:
  return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
