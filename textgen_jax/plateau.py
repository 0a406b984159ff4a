"""What the held-out metric has done: the `plateau` learning-rate schedule and early stopping.

The literature's way to decide "converged" (jxhe/vae-lagging-encoder, asyml/texar): halve the
learning rate after `opt.plateau_patience` held-out evaluations without improvement, at most
`opt.plateau_max_decays` times; stop after `train.early_stopping_patience` evaluations without
improvement, inference then loading the best checkpoint (<workdir>/best/).

The state (best value and its step, the counts, the rate's scale) is part of the optimizer state,
a transform at the end of the optimizer chain that scales the updates: it is saved and restored
with every checkpoint, so a resumed run decays and stops exactly where an uninterrupted one does.
It changes only at evaluations, on the host (`update`), never inside the compiled step. A
population holds one per member (stacked), each following its own held-out metric.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

# Held-out metrics where more is better; the rest (losses, NLL, perplexity) are better lower.
HIGHER_IS_BETTER = ("accuracy", "exact_match", "mutual_information", "active_units", "bleu", "chrf")


def higher_is_better(metric: str) -> bool:
  return any(word in metric for word in HIGHER_IS_BETTER)


class PlateauState(NamedTuple):
  """Field names are unique in the optimizer state, for optax.tree_utils.tree_get/tree_set."""

  plateau_scale: jax.Array  # Multiplies the updates: 1, then factor ** decays.
  plateau_best: jax.Array  # The best held-out value so far (as "lower is better"); inf at first.
  plateau_best_step: jax.Array  # The step of that evaluation (0: none yet).
  plateau_waits: jax.Array  # Evaluations without improvement since the best or the last decay.
  plateau_stale: jax.Array  # Evaluations without improvement since the best (early stopping).
  plateau_decays: jax.Array


def scale_by_plateau() -> optax.GradientTransformation:
  """Scales updates by the state's plateau_scale (1 at init; `update` lowers it)."""

  def init(params):
    del params
    return PlateauState(
      jnp.ones([], jnp.float32),
      jnp.full([], jnp.inf, jnp.float32),
      *(jnp.zeros([], jnp.int32) for _ in range(4)),
    )

  def scale(updates, state, params=None):
    del params
    return jax.tree.map(lambda u: u * state.plateau_scale.astype(u.dtype), updates), state

  return optax.GradientTransformation(init, scale)


def tracked(config: ml_collections.ConfigDict) -> bool:
  """Whether the run follows its held-out metric (the optimizer then holds a PlateauState)."""
  return config.opt.schedule == "plateau" or config.train.early_stopping_patience > 0


def read(opt_state: Any) -> PlateauState:
  """The PlateauState in an optimizer state, on the host (stacked for a population)."""
  return PlateauState(
    *(
      np.asarray(jax.device_get(optax.tree_utils.tree_get(opt_state, name)))
      for name in PlateauState._fields
    )
  )


def write(opt_state: Any, state: PlateauState) -> Any:
  """The optimizer state holding `state`, each leaf placed where the one it replaces was."""
  placed = {
    name: jax.device_put(jnp.asarray(value, old.dtype), old.sharding)
    for name, value, old in zip(
      PlateauState._fields,
      state,
      (optax.tree_utils.tree_get(opt_state, name) for name in PlateauState._fields),
    )
  }
  return optax.tree_utils.tree_set(opt_state, **placed)


def update(
  state: PlateauState,
  value: Any,
  step: int,
  config: ml_collections.ConfigDict,
  metric_is_higher_better: bool,
) -> PlateauState:
  """After an evaluation at `step` whose held-out metric is `value` (one per member, stacked
  like the state): the new state. Improvement resets both counts; otherwise they grow, and with
  the plateau schedule `opt.plateau_patience` of them halve the rate (by opt.plateau_factor) and
  start the count again, at most opt.plateau_max_decays times. Pure, numpy."""
  value = np.asarray(value, np.float32)
  lower = -value if metric_is_higher_better else value
  improved = lower < state.plateau_best
  waits = np.where(improved, 0, state.plateau_waits + 1)
  decay = (
    (config.opt.schedule == "plateau")
    & (waits >= config.opt.plateau_patience)
    & (state.plateau_decays < config.opt.plateau_max_decays)
  )
  return PlateauState(
    plateau_scale=np.where(
      decay, state.plateau_scale * config.opt.plateau_factor, state.plateau_scale
    ).astype(np.float32),
    plateau_best=np.where(improved, lower, state.plateau_best).astype(np.float32),
    plateau_best_step=np.where(improved, step, state.plateau_best_step).astype(np.int32),
    plateau_waits=np.where(decay, 0, waits).astype(np.int32),
    plateau_stale=np.where(improved, 0, state.plateau_stale + 1).astype(np.int32),
    plateau_decays=(state.plateau_decays + decay).astype(np.int32),
  )


def should_stop(state: PlateauState, config: ml_collections.ConfigDict) -> bool:
  """Whether early stopping ends the run: `train.early_stopping_patience` evaluations (of
  every member) without improvement."""
  patience = config.train.early_stopping_patience
  return bool(patience > 0 and np.all(state.plateau_stale >= patience))
