"""He et al. 2019's aggressive inference-network training, with its stopping rule.

"Lagging Inference Networks and Posterior Collapse in Variational Autoencoders" (ICLR 2019),
Algorithm 1, as their code (vae-lagging-encoder, text.py) runs it on text:

  while aggressive, each training step first updates the encoder alone, on the step's batch and
  then on random training batches, until its loss stops falling: every `check_every` (15)
  encoder updates the mean loss per token of those updates is compared with the previous
  block's, and a rise ends the loop; at most `max_steps` (100) updates. Then the decoder alone
  is updated on the step's batch (the encoder's gradient is computed but not applied).
  At the end of every epoch the mutual information I(x; z) on the held-out sentences is
  measured; once it is lower than at the previous epoch's end, aggressive training stops for
  good and every step is the ordinary joint update.

Encoder and decoder have optimizer states of their own (two optimizers, as in their code: each
side's moments and step count move only with its own updates); gradients are clipped jointly.
Encoder updates do not advance the train step, so schedules (KL annealing) count outer steps.
All of it is a pure function of the seed and the step (random batches from
(data seed, step), the encoder updates' dropout keys from the VAE's own run key, the decoder
update's from RunKeys.dropout as an ordinary step's), so a resumed run is the uninterrupted
one; the state of the phase (on or off, the last MI) is saved in every checkpoint's run state
(loop.StepProcedure) and restored from it. Each epoch's check is also logged as a record
{"aggressive_mi", "aggressive"}, which only checkpoints written before the run state are resumed
from.
"""

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from textgen_jax import training
from textgen_jax.metrics import MetricWriter
from textgen_jax.training import DECODER_SIDE, ENCODER_SIDE, LossFn, StateHook, TrainState

StepFn = Callable[[TrainState, int], tuple[TrainState, dict[str, jax.Array]]]


def side_labels(decoder_modules: tuple[str, ...]) -> Callable[[Any], Any]:
  """params -> DECODER_SIDE for the leaves of the decoder's top-level modules, else ENCODER_SIDE
  (make_optimizer's `sides`)."""

  def sides(params):
    return {
      "params": {
        name: jax.tree.map(
          lambda _, side=DECODER_SIDE if name in decoder_modules else ENCODER_SIDE: side, module
        )
        for name, module in params["params"].items()
      }
    }

  return sides


@dataclasses.dataclass
class AggressiveTraining:
  """The procedure around the loop's compiled step (a loop.StepProcedure)."""

  name = "aggressive"  # Of its entry in a checkpoint's run state.

  loss_fn: LossFn
  before_update: StateHook | None
  sides: Callable[[Any], Any]
  num_batches: int  # Batches per epoch: the MI is checked at each epoch's end.
  mutual_information: Callable[[Any], float]  # params -> held-out I(x; z).
  data_seed: int
  dropout_key: jax.Array  # RunKeys.dropout: the decoder update's, as an ordinary step's.
  encoder_key: jax.Array  # The family's AGGRESSIVE_KEY (vae/recipe.py): the encoder updates'.
  max_steps: int = 100
  check_every: int = 15

  def __post_init__(self):
    keep = functools.partial(training.keep_side, sides=self.sides)
    # Donated like the loop's step; an encoder update keeps the step count where it was.
    self._encoder_step = jax.jit(
      lambda state, batch, rng: self._without_step_count(
        state,
        training.train_step(
          state,
          batch,
          rng,
          loss_fn=self.loss_fn,
          after_update=functools.partial(keep, side=DECODER_SIDE),
        ),
      ),
      donate_argnums=0,
    )
    self._decoder_step = jax.jit(
      functools.partial(
        training.train_step,
        loss_fn=self.loss_fn,
        before_update=self.before_update,
        after_update=functools.partial(keep, side=ENCODER_SIDE),
      ),
      donate_argnums=0,
    )
    self.active, self.last_mi = True, -np.inf

  @staticmethod
  def _without_step_count(old: TrainState, new_and_sums: tuple[TrainState, Any]):
    new, sums = new_and_sums
    return new.replace(step=old.step), sums

  def run_state(self) -> dict[str, Any]:
    return {"active": self.active, "last_mi": self.last_mi}

  def restore(self, saved: Mapping[str, Any] | None, records: Sequence[Mapping[str, Any]]) -> None:
    """The phase as the checkpoint's run state holds it, or (saved None: a checkpoint written
    before the run state) as the last epoch check in the log before the restored step left it."""
    if saved is not None:
      self.active, self.last_mi = bool(saved["active"]), float(saved["last_mi"])
      return
    checks = [r for r in records if "aggressive_mi" in r]
    if checks:
      self.active, self.last_mi = bool(checks[-1]["aggressive"]), checks[-1]["aggressive_mi"]

  def wrap(
    self, ordinary_step: StepFn, device_batch: Callable[[int], Any], writer: MetricWriter
  ) -> StepFn:
    """The loop's step: aggressive while the phase lasts, then `ordinary_step`. Every step's
    sums carry encoder_steps (0 once the phase is over)."""

    def step(state: TrainState, index: int) -> tuple[TrainState, dict[str, jax.Array]]:
      if not self.active:
        state, sums = ordinary_step(state, index)
        return state, {**sums, "encoder_steps": jnp.float32(0.0)}
      state, encoder_steps = self._train_encoder(state, index, device_batch)
      state, sums = self._decoder_step(state, device_batch(index), self.dropout_key)
      if (index + 1) % self.num_batches == 0:
        self._check(state.params, index + 1, writer)
      return state, {**sums, "encoder_steps": jnp.float32(encoder_steps)}

    return step

  def _train_encoder(
    self, state: TrainState, index: int, device_batch: Callable[[int], Any]
  ) -> tuple[TrainState, int]:
    """Encoder updates until the loss per token rises from one block to the next."""
    epoch_start = index - index % self.num_batches
    random_batches = np.random.default_rng((self.data_seed, index))
    step_key = jax.random.fold_in(self.encoder_key, index)
    block, previous = None, np.inf
    batch_index = index  # The step's own batch first, as in He et al.'s code.
    for update in range(1, self.max_steps + 1):
      state, sums = self._encoder_step(
        state, device_batch(batch_index), jax.random.fold_in(step_key, update)
      )
      block = sums if block is None else jax.tree.map(jnp.add, block, sums)
      batch_index = epoch_start + int(random_batches.integers(self.num_batches))
      if update % self.check_every == 0:
        block = jax.device_get(block)  # One host sync per block.
        loss = (block["nll_sum"] + block["kl_weight"] / self.check_every * block["kl_sum"]) / (
          max(block["tokens"], 1.0)
        )
        if loss > previous:
          break
        block, previous = None, loss
    return state, update

  def _check(self, params: Any, step: int, writer: MetricWriter) -> None:
    """The stopping rule at an epoch's end: off for good once the held-out MI falls."""
    mi = float(self.mutual_information(params))
    self.active, self.last_mi = mi >= self.last_mi, mi
    writer.write(step, {"aggressive_mi": mi, "aggressive": self.active})
    print(
      f"step {step}: held-out mutual information {mi:.3f}; aggressive encoder training "
      f"{'goes on' if self.active else 'stops here'}"
    )
