"""Dropout whose rate may be a traced value: a population member's own rate.

flax.linen's Dropout tests `rate == 0.0` in Python, which a traced rate cannot answer. This one
skips the mask only for a Python zero and otherwise draws exactly what linen's Dropout draws
(the same key from make_rng("dropout") under the same module name, the same Bernoulli mask and
scaling), so a run with a fixed rate takes the same random path as before it existed.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from textgen_jax.models.static import is_static_zero


class Dropout(nn.Module):
  """Zeroes each input with probability `rate` and scales the rest by 1 / (1 - rate)."""

  rate: Any  # A float in [0, 1), or a traced scalar.

  @nn.compact
  def __call__(self, inputs: jax.Array, deterministic: bool) -> jax.Array:
    if deterministic or is_static_zero(self.rate):
      return inputs
    keep_prob = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng("dropout"), p=keep_prob, shape=inputs.shape)
    return jax.lax.select(mask, inputs / keep_prob, jnp.zeros_like(inputs))
