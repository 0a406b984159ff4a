"""Tests for textgen_jax.models.rnn: initialisation, padded reversal, final states at true ends,
the GRU step against Flax's own nn.GRUCell."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from textgen_jax.errors import TextgenError
from textgen_jax.models import cudnn_lstm, rnn
from tests.helpers import random_like

E, H = 8, 16


def test_forget_bias_init():
  bias = rnn.forget_bias_init(jax.random.key(0), (4 * 3,))
  np.testing.assert_array_equal(bias, [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0])


def test_reverse_padded():
  x = jnp.arange(10).reshape(2, 5).T  # Time-major: [T=5, B=2].
  reversed_x = rnn.reverse_padded(x, jnp.array([3, 5]))
  np.testing.assert_array_equal(reversed_x.T, [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]])
  x3 = jnp.swapaxes(jnp.arange(20).reshape(2, 5, 2), 0, 1)
  np.testing.assert_array_equal(
    rnn.reverse_padded(x3, jnp.array([0, 2]))[:, :, 0].T, [[0, 2, 4, 6, 8], [12, 10, 14, 16, 18]]
  )


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_stacked_final_carry_is_the_state_at_each_true_end(bidirectional, cell):
  layer = rnn.StackedRNN(H, num_layers=2, bidirectional=bidirectional, cell=cell)
  x = jax.random.normal(jax.random.key(0), (6, 3, E))  # Time-major.
  lengths = jnp.array([6, 2, 4])
  params = random_like(jax.eval_shape(layer.init, jax.random.key(1), x, lengths))
  carries, outputs = jax.jit(layer.apply)(params, x, lengths)
  width = 2 * H if bidirectional else H
  assert outputs.shape == (6, 3, width)
  outputs = jnp.swapaxes(outputs, 0, 1)
  assert len(carries[-1]) == (2 if cell == "lstm" else 1)
  h = carries[-1][-1]
  assert all(part.shape == (3, width) for part in carries[-1])
  for row, length in enumerate(lengths.tolist()):
    np.testing.assert_allclose(h[row, :H], outputs[row, length - 1, :H], rtol=1e-6, atol=1e-6)
    if bidirectional:  # The backward direction ends at the first token.
      np.testing.assert_allclose(h[row, H:], outputs[row, 0, H:], rtol=1e-6, atol=1e-6)


def test_gru_step_equals_flax_gru_cell_on_the_same_weights():
  """Flax's nn.GRUCell is the same GRU (r, z, n; b_hn inside r * (...)) in separate Dense
  layers: our fused kernels, split by gate, are its weights."""
  layer = rnn.GRULayer(H)
  x = jax.random.normal(jax.random.key(0), (3, E))
  carry = (jax.random.normal(jax.random.key(1), (3, H)),)
  init = functools.partial(layer.init, method="step")
  params = random_like(jax.eval_shape(init, jax.random.key(2), carry, x))
  ours = layer.apply(params, carry, x, method="step")[0]
  p = params["params"]
  kernel_x = jnp.split(p["input_projection"]["kernel"], 3, axis=-1)
  bias_x = jnp.split(p["input_projection"]["bias"], 3)
  kernel_h = jnp.split(p["recurrent_kernel"], 3, axis=-1)
  flax_params = {
    **{f"i{g}": {"kernel": k, "bias": b} for g, k, b in zip("rzn", kernel_x, bias_x)},
    "hr": {"kernel": kernel_h[0]},
    "hz": {"kernel": kernel_h[1]},
    "hn": {"kernel": kernel_h[2], "bias": p["recurrent_bias"]},
  }
  theirs, _ = nn.GRUCell(H).apply({"params": flax_params}, carry[0], x)
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
  assert float(jnp.max(jnp.abs(ours - carry[0]))) > 0.1  # The step did something.


def test_gru_stack_runs_the_scan_only():
  """jax.experimental.rnn has no GRU: the cuDNN backend is a one-line error naming the flags."""
  with pytest.raises(TextgenError, match=r"--config.model.lstm_backend=cudnn.*model.cell=gru"):
    cudnn_lstm.resolve_backend("cudnn", "float32", "gru")
  assert cudnn_lstm.resolve_backend("auto", "float32", "gru") == "scan"
