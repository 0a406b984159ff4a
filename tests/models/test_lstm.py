"""Tests for textgen_jax.models.lstm: initialisation, padded reversal, final states at true ends."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from textgen_jax.models import lstm
from tests.helpers import random_like

E, H = 8, 16


def test_forget_bias_init():
  bias = lstm.forget_bias_init(jax.random.key(0), (4 * 3,))
  np.testing.assert_array_equal(bias, [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0])


def test_reverse_padded():
  x = jnp.arange(10).reshape(2, 5).T  # Time-major: [T=5, B=2].
  reversed_x = lstm.reverse_padded(x, jnp.array([3, 5]))
  np.testing.assert_array_equal(reversed_x.T, [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]])
  x3 = jnp.swapaxes(jnp.arange(20).reshape(2, 5, 2), 0, 1)
  np.testing.assert_array_equal(
    lstm.reverse_padded(x3, jnp.array([0, 2]))[:, :, 0].T, [[0, 2, 4, 6, 8], [12, 10, 14, 16, 18]]
  )


@pytest.mark.parametrize("bidirectional", [False, True])
def test_stacked_lstm_final_carry_is_the_state_at_each_true_end(bidirectional):
  layer = lstm.StackedLSTM(H, num_layers=2, bidirectional=bidirectional)
  x = jax.random.normal(jax.random.key(0), (6, 3, E))  # Time-major.
  lengths = jnp.array([6, 2, 4])
  params = random_like(jax.eval_shape(layer.init, jax.random.key(1), x, lengths))
  carries, outputs = jax.jit(layer.apply)(params, x, lengths)
  width = 2 * H if bidirectional else H
  assert outputs.shape == (6, 3, width)
  outputs = jnp.swapaxes(outputs, 0, 1)
  c, h = carries[-1]
  assert c.shape == h.shape == (3, width)
  for row, length in enumerate(lengths.tolist()):
    np.testing.assert_allclose(h[row, :H], outputs[row, length - 1, :H], rtol=1e-6, atol=1e-6)
    if bidirectional:  # The backward direction ends at the first token.
      np.testing.assert_allclose(h[row, H:], outputs[row, 0, H:], rtol=1e-6, atol=1e-6)
