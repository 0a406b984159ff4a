"""The sentence VAE's training objective and its remedies for posterior collapse.

  loss = mean over sentences of  reconstruction(x | z)  +  beta(step) * KL_objective(q(z|x) || p(z))

Remedies, each a field of the config's `vae` section (see `VAEObjective`):
  * KL annealing: beta follows a linear, sigmoid (Bowman et al. 2016) or cyclical (Fu et al. 2019)
    schedule up to beta_max.
  * Word dropout (Bowman et al. 2016): whole decoder-input words replaced by UNK.
  * Free bits / KL thresholding (Kingma et al. 2016): the KL term is max(lambda, KL), per latent
    dimension or for the whole code, on the batch mean, so below lambda it gives no gradient.
  * Encoder pretraining (Li et al. 2019): train as an autoencoder (beta = 0) for pretrain_steps,
    then reset the decoder's parameters and the optimizer, and anneal from there.
Reported metrics always use the true KL and beta = 1, whatever the objective.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from textgen_jax import training
from textgen_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from textgen_jax.errors import TextgenError
from textgen_jax.losses import sequence_metric_sums, token_cross_entropy
from textgen_jax.models.static import is_static_zero
from textgen_jax.models.tokens import shift_right
from textgen_jax.training import TrainState
from textgen_jax.vae.model import SentenceVAE

KL_SCHEDULES = ("constant", "linear", "sigmoid", "cyclical")
FREE_BITS_MODES = ("per_dimension", "per_batch")


@dataclasses.dataclass(frozen=True)
class VAEObjective:
  """The `vae` config section: how the KL term is weighted and what the decoder reads."""

  kl_schedule: str = "linear"  # One of KL_SCHEDULES.
  beta_max: float = 1.0  # Final (or constant) KL weight.
  anneal_steps: int = 10000  # linear: 0 -> beta_max; sigmoid: from ~0.7% to ~99.3%.
  cycle_steps: int = 10000  # cyclical: period of each cycle.
  cycle_ratio: float = 0.5  # cyclical: share of each cycle spent increasing (Fu et al.'s R).
  free_bits: float = 0.0  # Nats; per latent dimension or per sentence (0: off).
  free_bits_mode: str = "per_dimension"  # One of FREE_BITS_MODES.
  word_dropout: float = 0.0  # Rate at which decoder-input words become UNK.
  pretrain_steps: int = 0  # Autoencoder steps before the decoder is reset (0: off).
  # He et al. 2019's aggressive encoder training (vae/aggressive.py): while on, each step first
  # updates the encoder alone until its loss stops falling (checked every check_every updates,
  # at most max_steps), then the decoder alone; it stops once the held-out MI falls at an
  # epoch's end.
  aggressive: bool = False
  aggressive_max_steps: int = 100
  aggressive_check_every: int = 15


# The valid range of each numeric field above (see textgen_jax/config.py).
RANGES = {
  "vae.beta_max": ">= 0",
  "vae.anneal_steps": ">= 1",
  "vae.cycle_steps": ">= 1",
  "vae.cycle_ratio": "(0, 1]",
  "vae.free_bits": ">= 0",
  "vae.word_dropout": "[0, 1]",
  "vae.pretrain_steps": ">= 0",
  "vae.aggressive_max_steps": ">= 1",
  "vae.aggressive_check_every": ">= 1",
}


def check_objective(vae_cfg: ml_collections.ConfigDict) -> VAEObjective:
  """The objective the config describes, or an error naming the bad flag."""
  try:
    objective = VAEObjective(**vae_cfg.to_dict())
  except TypeError as e:
    raise TextgenError(f"config section vae: {e}") from None
  if objective.kl_schedule not in KL_SCHEDULES:
    raise TextgenError(
      f"--config.vae.kl_schedule={objective.kl_schedule!r}: choose one of {', '.join(KL_SCHEDULES)}"
    )
  if objective.free_bits_mode not in FREE_BITS_MODES:
    raise TextgenError(
      f"--config.vae.free_bits_mode={objective.free_bits_mode!r}: choose one of "
      f"{', '.join(FREE_BITS_MODES)}"
    )
  return objective  # Its numeric fields are checked against RANGES with the rest of the config.


def gaussian_kl(mean_BxZ: jax.Array, logvar_BxZ: jax.Array) -> jax.Array:
  """KL(N(mean, exp(logvar)) || N(0, I)) per latent dimension, in nats: [B, Z]."""
  return 0.5 * (jnp.exp(logvar_BxZ) + mean_BxZ**2 - 1.0 - logvar_BxZ)


def reparameterize(rng: jax.Array, mean_BxZ: jax.Array, logvar_BxZ: jax.Array) -> jax.Array:
  """z = mean + sigma * eps with eps ~ N(0, I) drawn from `rng`; differentiable in both."""
  return mean_BxZ + jnp.exp(0.5 * logvar_BxZ) * jax.random.normal(rng, mean_BxZ.shape)


def _choose(
  choice: str | jax.Array, choices: Sequence[str], value_of: Callable[[str], jax.Array]
) -> jax.Array:
  """value_of(choice); a population member's choice is a traced index into `choices`, and then
  every choice's value is computed and the member's picked."""
  if isinstance(choice, str):
    return value_of(choice)
  values = jnp.stack([value_of(name) for name in choices])
  return values[jnp.asarray(choice).astype(jnp.int32)]


def _schedule_fraction(schedule: str, s: jax.Array, objective: VAEObjective) -> jax.Array:
  """The share of beta_max reached `s` steps into the schedule (s may be negative)."""
  if schedule == "constant":
    return jnp.ones_like(s)
  if schedule == "linear":
    return jnp.clip(s / objective.anneal_steps, 0.0, 1.0)
  if schedule == "sigmoid":
    # Centred at anneal_steps / 2; the steepness puts the ends at sigmoid(+-5).
    return jax.nn.sigmoid(10.0 * (s / objective.anneal_steps - 0.5))
  position = jnp.mod(jnp.maximum(s, 0.0), objective.cycle_steps) / objective.cycle_steps
  return jnp.clip(position / objective.cycle_ratio, 0.0, 1.0)  # cyclical


def kl_weight(objective: VAEObjective, step: jax.Array) -> jax.Array:
  """beta at `step` (0-based); 0 during encoder pretraining, the schedule counted after it."""
  s = jnp.asarray(step, jnp.float32) - objective.pretrain_steps
  fraction = _choose(
    objective.kl_schedule, KL_SCHEDULES, lambda schedule: _schedule_fraction(schedule, s, objective)
  )
  return jnp.where(s < 0, 0.0, objective.beta_max * fraction)


def kl_objective(
  kl_BxZ: jax.Array, sentence_mask_B: jax.Array, objective: VAEObjective
) -> jax.Array:
  """The KL term to minimise, per sentence on average over the batch's real sentences.

  With free bits, max(lambda, batch-mean KL) per latent dimension (Kingma et al. 2016) or for the
  whole code: below lambda the term is constant, so it pushes nothing towards the prior.
  """
  num_sentences = jnp.maximum(sentence_mask_B.sum(), 1.0)
  mean_kl_Z = jnp.sum(kl_BxZ * sentence_mask_B[:, None], 0) / num_sentences
  if is_static_zero(objective.free_bits):
    return mean_kl_Z.sum()
  return _choose(
    objective.free_bits_mode,
    FREE_BITS_MODES,
    lambda mode: (
      jnp.maximum(mean_kl_Z, objective.free_bits).sum()
      if mode == "per_dimension"
      else jnp.maximum(mean_kl_Z.sum(), objective.free_bits)
    ),
  )


def word_dropout(rng: jax.Array, decoder_inputs_BxT: jax.Array, rate: float) -> jax.Array:
  """Replaces each word (never BOS, EOS or PAD) by UNK with probability `rate`."""
  if is_static_zero(rate):
    return decoder_inputs_BxT
  is_word_BxT = ~jnp.isin(decoder_inputs_BxT, jnp.array([PAD_ID, BOS_ID, EOS_ID]))
  drop_BxT = jax.random.bernoulli(rng, rate, decoder_inputs_BxT.shape) & is_word_BxT
  return jnp.where(drop_BxT, UNK_ID, decoder_inputs_BxT)


def sentence_loss(
  params: Any,
  batch: dict[str, jax.Array],
  rng: jax.Array,
  deterministic: bool,
  *,
  model: SentenceVAE,
  objective: VAEObjective,
  step: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The objective per sentence (mean over the batch) and metric sums, for the VAE and the LM.

  With step=None (evaluation) beta is 1 and free bits are off: the loss is the negative ELBO.
  Metric sums: nll_sum (reconstruction nats over words + EOS), kl_sum (true KL, summed over
  sentences; VAE only), kl_weight (beta at this step) and the token/sequence counts.
  """
  z_rng, dropout_rng, word_rng = jax.random.split(rng, 3)
  tokens_BxT, lengths_B, targets_BxT = batch["inputs"], batch["input_lengths"], batch["targets"]
  sentence_mask_B = (lengths_B > 0).astype(jnp.float32)
  decoder_inputs_BxT = shift_right(targets_BxT)
  if not deterministic:
    decoder_inputs_BxT = word_dropout(word_rng, decoder_inputs_BxT, objective.word_dropout)
  rngs = {"dropout": dropout_rng}

  z_BxZ, kl_BxZ = None, None
  if model.config.has_latent:
    mean_BxZ, logvar_BxZ = model.apply(
      params, tokens_BxT, lengths_B, deterministic, method=SentenceVAE.posterior, rngs=rngs
    )
    z_BxZ = reparameterize(z_rng, mean_BxZ, logvar_BxZ)
    kl_BxZ = gaussian_kl(mean_BxZ, logvar_BxZ)

  def logits(module):
    return module.teacher_forced_logits(
      module.decoder_start(z_BxZ, tokens_BxT.shape[0]), decoder_inputs_BxT, deterministic
    )

  logits_BxTxV = model.apply(params, method=logits, rngs=rngs)
  nll_BxT = token_cross_entropy(logits_BxTxV, targets_BxT)
  sums = sequence_metric_sums(logits_BxTxV, targets_BxT, nll_BxT)
  num_sentences = jnp.maximum(sums["sequences"], 1.0)
  loss = sums["nll_sum"] / num_sentences
  if kl_BxZ is not None:
    if step is None:
      beta, kl_term = jnp.float32(1.0), jnp.sum(kl_BxZ.sum(-1) * sentence_mask_B) / num_sentences
    else:
      beta, kl_term = kl_weight(objective, step), kl_objective(kl_BxZ, sentence_mask_B, objective)
    loss = loss + beta * kl_term
    sums["kl_sum"] = jnp.sum(kl_BxZ.sum(-1) * sentence_mask_B)
    sums["kl_weight"] = beta
  return loss, sums


def reset_decoder(
  state: TrainState, fresh_params: Any, decoder_modules: Sequence[str]
) -> TrainState:
  """Li et al.'s reset: the decoder's modules back to `fresh_params`'s, a fresh optimizer state
  (a population member keeps its learning rate)."""
  params = {
    "params": {
      name: fresh_params["params"][name] if name in decoder_modules else value
      for name, value in state.params["params"].items()
    }
  }
  return state.replace(
    params=params, opt_state=training.fresh_optimizer_state(state.tx, params, state.opt_state)
  )


def pretraining_reset(
  objective: VAEObjective,
  model: SentenceVAE,
  init_params: Callable[[jax.Array], Any],
  rng: jax.Array,
) -> Callable[[TrainState], TrainState] | None:
  """A compiled-step hook that resets the decoder when state.step == pretrain_steps (or None)."""
  if is_static_zero(objective.pretrain_steps):
    return None

  def before_update(state: TrainState) -> TrainState:
    # pretrain_steps = 0 (off) never resets, also when it is a population member's traced value.
    at_reset = (state.step == objective.pretrain_steps) & (objective.pretrain_steps > 0)
    return jax.lax.cond(
      at_reset,
      lambda s: reset_decoder(s, init_params(rng), model.decoder_modules()),
      lambda s: s,
      state,
    )

  return before_update
