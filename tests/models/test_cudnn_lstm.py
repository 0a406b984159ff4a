"""Tests for textgen_jax.models.cudnn_lstm on CPU (CI has no GPU).

cuDNN itself cannot run here, so its kernel is replaced by jax's pure-JAX reference
`rnn.lstm_ref`, reading the same packed weights through jax's own `unpack_lstm_weights`. The
cudnn path of StackedRNN must then equal the scan on the same parameters: outputs at real
positions, final states and gradients, uni- and bidirectional, multi-layer, padded batches.
On a GPU (experiments/gpu_check.sh) the same test also runs cuDNN's real kernel.
That checks our packing (the layout cuDNN reads), the per-layer wiring and the state at each
true end. Backend choice: cudnn on a CPU is a one-line error; auto falls back to the scan.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import rnn

from textgen_jax.errors import TextgenError
from textgen_jax.models import cudnn_lstm
from textgen_jax.models.rnn import StackedRNN

T, B, E, H = 6, 4, 5, 3
LENGTHS = jnp.array([6, 2, 4, 0])


def refusing_length_zero(x, h_0, c_0, weights, seq_lengths, *args, **kwargs):
  """jax's reference kernel, refusing a sequence of length 0 as cuDNN does (jax issue #17966:
  cuDNN's LSTM fails when any sequence in the batch has length 0; our batches pad with such
  filler rows): every output is NaN then, so a caller that passes one fails its comparison."""
  y, h, c = cudnn_lstm.reference_lstm(x, h_0, c_0, weights, seq_lengths, *args, **kwargs)
  refused = jnp.any(seq_lengths < 1)
  return tuple(jnp.where(refused, jnp.nan, a) for a in (y, h, c))


def test_the_strict_reference_refuses_length_zero():
  weights = cudnn_lstm.pack_weights(
    [(jnp.ones((E, 4 * H)), jnp.zeros(4 * H), jnp.ones((H, 4 * H)))]
  )
  zeros = jnp.zeros((1, 2, H))
  y, _, _ = refusing_length_zero(
    jnp.ones((2, T, E)),
    zeros,
    zeros,
    weights,
    jnp.array([3, 0], jnp.int32),
    input_size=E,
    hidden_size=H,
    num_layers=1,
    dropout=0.0,
    bidirectional=False,
  )
  assert np.all(np.isnan(y))


@pytest.fixture(params=["reference", "cudnn"])
def cudnn_kernel(request, monkeypatch):
  """jax's reference kernel, strict about length 0 as cuDNN is, everywhere; cuDNN's own where
  there is a GPU (experiments/gpu_check.sh runs these tests there). LENGTHS holds a 0: the
  filler rows our batches pad with."""
  if request.param == "reference":
    monkeypatch.setattr(cudnn_lstm, "lstm_kernel", refusing_length_zero)
  elif not cudnn_lstm.cudnn_available():
    pytest.skip("cuDNN's kernel needs a GPU")
  return request.param


def test_packed_weights_unpack_to_our_matrices():
  """jax's unpack_lstm_weights reads our kernels back, transposed, with b_hh = 0."""
  k = jax.random.split(jax.random.key(0), 6)
  forward = (
    jax.random.normal(k[0], (E, 4 * H)),
    jax.random.normal(k[1], (4 * H,)),
    jax.random.normal(k[2], (H, 4 * H)),
  )
  backward = (
    jax.random.normal(k[3], (E, 4 * H)),
    jax.random.normal(k[4], (4 * H,)),
    jax.random.normal(k[5], (H, 4 * H)),
  )
  packed = cudnn_lstm.pack_weights([forward, backward])
  assert packed.shape == (rnn.get_num_params_in_lstm(E, H, 1, True),)
  w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(packed, E, H, 1, True)
  for direction, (kernel, bias, recurrent) in enumerate([forward, backward]):
    np.testing.assert_array_equal(w_ih[direction], kernel.T)
    np.testing.assert_array_equal(w_hh[direction], recurrent.T)
    np.testing.assert_array_equal(b_ih[direction], bias)
    np.testing.assert_array_equal(b_hh[direction], 0.0)


def run_stack(backend, params, x_TxBxE, carries, lengths, bidirectional, layers):
  stack = StackedRNN(H, layers, bidirectional=bidirectional, backend=backend)
  return stack.apply(params, x_TxBxE, lengths, carries)


@pytest.mark.slow
@pytest.mark.parametrize("bidirectional,layers", [(False, 1), (False, 2), (True, 1), (True, 2)])
def test_cudnn_path_equals_the_scan(cudnn_kernel, bidirectional, layers):
  k = jax.random.split(jax.random.key(1), 4)
  x_TxBxE = jax.random.normal(k[0], (T, B, E))
  carries = [(jax.random.normal(k[1], (B, H)), jax.random.normal(k[2], (B, H)))] * layers
  params = StackedRNN(H, layers, bidirectional=bidirectional).init(k[3], x_TxBxE, LENGTHS, carries)
  mask_TxBx1 = (jnp.arange(T)[:, None] < LENGTHS[None, :])[..., None]

  def loss(backend, params, x):
    finals, out_TxBxD = run_stack(backend, params, x, carries, LENGTHS, bidirectional, layers)
    weights = jnp.cos(jnp.arange(out_TxBxD.size, dtype=jnp.float32)).reshape(out_TxBxD.shape)
    return (
      jnp.sum(out_TxBxD * weights * mask_TxBx1)
      + sum(jnp.sum(jnp.sin(c)) + jnp.sum(h**2) for c, h in finals)
    ), (finals, out_TxBxD)

  results = {}
  for backend in ("scan", "cudnn"):
    grad_fn = jax.jit(
      jax.value_and_grad(functools.partial(loss, backend), argnums=(0, 1), has_aux=True)
    )
    results[backend] = grad_fn(params, x_TxBxE)
  (value, (finals, outputs)), grads = results["cudnn"]
  (ref_value, (ref_finals, ref_outputs)), ref_grads = results["scan"]
  # On a GPU both sides may use TF32 matmuls (XLA's and cuDNN's default for float32).
  tol = dict(rtol=1e-5, atol=1e-6) if cudnn_kernel == "reference" else dict(rtol=2e-2, atol=2e-3)
  np.testing.assert_allclose(value, ref_value, rtol=tol["rtol"])
  np.testing.assert_allclose(outputs * mask_TxBx1, ref_outputs * mask_TxBx1, **tol)
  for a, b in zip(jax.tree.leaves(finals), jax.tree.leaves(ref_finals)):
    np.testing.assert_allclose(a, b, **tol)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(a, b, rtol=10 * tol["rtol"], atol=10 * tol["atol"])
  assert jax.tree.structure(grads) == jax.tree.structure(ref_grads)


def test_cudnn_backend_where_it_cannot_run_is_a_one_line_error():
  if cudnn_lstm.cudnn_available():
    pytest.skip("this machine has a GPU with cuDNN")
  with pytest.raises(TextgenError, match=r"^--config.model.lstm_backend=cudnn: .*GPU"):
    cudnn_lstm.resolve_backend("cudnn", "float32")
  with pytest.raises(TextgenError, match=r"^--config.model.lstm_backend='rnn': choose"):
    cudnn_lstm.resolve_backend("rnn", "float32")
  assert cudnn_lstm.resolve_backend("auto", "float32") == "scan"
  assert cudnn_lstm.resolve_backend("scan", "bfloat16") == "scan"


def test_auto_takes_cudnn_only_on_a_gpu_in_float32(monkeypatch):
  monkeypatch.setattr(cudnn_lstm, "cudnn_available", lambda: True)
  assert cudnn_lstm.resolve_backend("auto", "float32") == "cudnn"
  assert cudnn_lstm.resolve_backend("auto", "bfloat16") == "scan"
  assert cudnn_lstm.resolve_backend("scan", "float32") == "scan"
  with pytest.raises(TextgenError, match="float32 only"):
    cudnn_lstm.resolve_backend("cudnn", "bfloat16")
