"""The seq2seq training objective: masked cross-entropy per target token, with metric sums."""

from typing import Any

import jax
import jax.numpy as jnp

from textgen_jax.data import batching
from textgen_jax.data.vocab import PAD_ID
from textgen_jax.losses import sequence_metric_sums, token_cross_entropy
from textgen_jax.models.static import is_static_zero
from textgen_jax.seq2seq.model import Seq2Seq


def loss(
  params: Any,
  batch: batching.Batch,
  rng: jax.Array,
  deterministic: bool,
  *,
  model: Seq2Seq,
  label_smoothing: float = 0.0,
  step: jax.Array | None = None,
) -> tuple[jax.Array, dict]:
  """Mean masked cross-entropy per target token (EOS included, PAD excluded), and metric sums.

  With label smoothing the loss is the smoothed cross-entropy; the metric sums stay the true NLL.
  """
  del step  # No schedule inside this loss.
  logits_BxTxV = model.apply(
    params,
    batch["inputs"],
    batch["input_lengths"],
    batch["targets"],
    deterministic=deterministic,
    rngs={"dropout": rng},
  )
  nll_BxT = token_cross_entropy(logits_BxTxV, batch["targets"])
  sums = sequence_metric_sums(logits_BxTxV, batch["targets"], nll_BxT)
  if not is_static_zero(label_smoothing):  # A population member's traced value included.
    objective_BxT = token_cross_entropy(logits_BxTxV, batch["targets"], label_smoothing)
    objective_sum = jnp.sum(objective_BxT * (batch["targets"] != PAD_ID))
  else:
    objective_sum = sums["nll_sum"]
  return objective_sum / jnp.maximum(sums["tokens"], 1.0), sums
