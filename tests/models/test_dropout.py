"""Tests for textgen_jax.models.dropout: linen's Dropout, with a rate that may be traced."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from textgen_jax.models.dropout import Dropout


class Wrapped(nn.Module):
  """The layer under the attribute name a model gives it, so both draw the same key."""

  layer: nn.Module

  def __call__(self, x, deterministic):
    return self.layer(x, deterministic=deterministic)


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.9])
def test_a_fixed_or_traced_rate_draws_what_linen_dropout_draws(rate):
  x = jnp.arange(1.0, 241.0).reshape(8, 30)
  rngs = {"dropout": jax.random.key(7)}
  expected = Wrapped(nn.Dropout(rate)).apply({}, x, False, rngs=rngs)
  np.testing.assert_array_equal(Wrapped(Dropout(rate)).apply({}, x, False, rngs=rngs), expected)
  traced = jax.jit(lambda r: Wrapped(Dropout(r)).apply({}, x, False, rngs=rngs))(rate)
  np.testing.assert_allclose(traced, expected, rtol=1e-6)
  kept = np.asarray(traced) != 0
  assert 0 < kept.mean() < 1 if rate else kept.all()


def test_deterministic_returns_the_inputs_whatever_the_rate():
  x = jnp.ones((3, 4))
  out = jax.jit(lambda r: Wrapped(Dropout(r)).apply({}, x, True))(0.5)
  np.testing.assert_array_equal(out, x)


def test_a_vmapped_rate_gives_each_member_its_own_rate():
  x = jnp.ones((100, 100))
  rates = jnp.array([0.1, 0.5, 0.8])
  out = jax.vmap(
    lambda r: Wrapped(Dropout(r)).apply({}, x, False, rngs={"dropout": jax.random.key(0)})
  )(rates)
  dropped = np.mean(np.asarray(out) == 0, axis=(1, 2))
  np.testing.assert_allclose(dropped, rates, atol=0.02)
