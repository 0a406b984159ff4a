"""Tests for textgen_jax.models.recurrence: the fast LSTM and GRU paths equal plain references.

The reference is the textbook cell (LSTM or GRU) differentiated by autodiff through `lax.scan` (separate
sigmoids and tanh, dW accumulated inside the loop, every input projected densely). The fast
path (hand-written backward pass, one sigmoid for all gates, the input-gate table for small
vocabularies) must give the same values, final states and gradients, to float32 rounding, on
padded batches, for the seq2seq model and the VAE/LM, uni- and bidirectional, multi-layer.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from textgen_jax.vae import loss as vae_loss
from textgen_jax import seq2seq
from textgen_jax.models import rnn
from textgen_jax.models.recurrence import gru_recurrence, lstm_recurrence
from textgen_jax.vae.model import SentenceVAE, SentenceVAEConfig
from textgen_jax.seq2seq.loss import loss as seq2seq_loss

T, B, H = 7, 4, 6


def plain_recurrence(dtype, unroll, gates_x_TxBxG, kernel_HxG, carry, mask_TxB=None):
  """The textbook LSTM under lax.scan, for autodiff to differentiate."""

  def time_step(carry, inputs):
    c_BxH, h_BxH = carry
    gates_x_BxG, mask_B = inputs
    gates_BxG = gates_x_BxG.astype(jnp.float32) + jnp.dot(
      h_BxH.astype(dtype), kernel_HxG.astype(dtype), preferred_element_type=jnp.float32
    )
    i, f, g, o = jnp.split(gates_BxG, 4, axis=-1)
    new_c = jax.nn.sigmoid(f) * c_BxH + jax.nn.sigmoid(i) * jnp.tanh(g)
    new_h = jax.nn.sigmoid(o) * jnp.tanh(new_c)
    if mask_B is not None:
      new_c = jnp.where(mask_B[:, None], new_c, c_BxH)
      new_h = jnp.where(mask_B[:, None], new_h, h_BxH)
    return (new_c, new_h), new_h

  return jax.lax.scan(time_step, carry, (gates_x_TxBxG, mask_TxB), unroll=unroll)


def plain_gru_recurrence(dtype, unroll, gates_x_TxBxG, kernel_HxG, bias_H, carry, mask_TxB=None):
  """The textbook GRU (Cho et al. 2014, cuDNN's and PyTorch's form) under lax.scan."""

  def time_step(carry, inputs):
    (h_BxH,) = carry
    gates_x_BxG, mask_B = inputs
    gates_h_BxG = jnp.dot(
      h_BxH.astype(dtype), kernel_HxG.astype(dtype), preferred_element_type=jnp.float32
    )
    x_r, x_z, x_n = jnp.split(gates_x_BxG.astype(jnp.float32), 3, axis=-1)
    h_r, h_z, h_n = jnp.split(gates_h_BxG, 3, axis=-1)
    r, z = jax.nn.sigmoid(x_r + h_r), jax.nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * (h_n + bias_H[None, :]))
    new_h = (1.0 - z) * n + z * h_BxH
    if mask_B is not None:
      new_h = jnp.where(mask_B[:, None], new_h, h_BxH)
    return (new_h,), new_h

  return jax.lax.scan(time_step, carry, (gates_x_TxBxG, mask_TxB), unroll=unroll)


def gru_inputs(seed=0):
  k = jax.random.split(jax.random.key(seed), 4)
  gates_x = jax.random.normal(k[0], (T, B, 3 * H))
  kernel = 0.5 * jax.random.normal(k[1], (H, 3 * H))
  bias = jax.random.normal(k[2], (H,))
  return gates_x, kernel, bias, (jax.random.normal(k[3], (B, H)),)


def gru_weighted_sum(recurrence, mask, gates_x, kernel, bias, carry):
  (h,), h_TxBxH = recurrence(jnp.float32, 1, gates_x, kernel, bias, carry, mask)
  w = jnp.cos(jnp.arange(h_TxBxH.size, dtype=jnp.float32)).reshape(h_TxBxH.shape)
  return jnp.sum(h_TxBxH * w) + 2.0 * jnp.sum(h**2)


@pytest.mark.parametrize("lengths", [None, [7, 3, 1, 0]], ids=["no-mask", "padded"])
def test_gru_values_and_every_gradient_equal_autodiff_of_the_plain_scan(lengths):
  mask = None if lengths is None else jnp.arange(T)[:, None] < jnp.array(lengths)[None, :]
  args = gru_inputs()
  grad = lambda f: jax.jit(
    jax.value_and_grad(functools.partial(gru_weighted_sum, f, mask), argnums=(0, 1, 2, 3))
  )
  value, grads = grad(gru_recurrence)(*args)
  ref_value, ref_grads = grad(plain_gru_recurrence)(*args)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  assert len(jax.tree.leaves(grads)) == 4  # gates_x, kernel, bias, h0.
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert float(jnp.max(jnp.abs(b))) > 0.1  # Every gradient is exercised.
  if lengths is not None:  # Held steps: no gradient reaches their input gates.
    np.testing.assert_array_equal(grads[0][3:, 1], 0.0)
    np.testing.assert_array_equal(grads[0][:, 3], 0.0)


def test_gru_final_state_is_held_at_each_true_end():
  gates_x, kernel, bias, carry = gru_inputs(1)
  lengths = jnp.array([7, 3, 1, 0])
  mask = jnp.arange(T)[:, None] < lengths[None, :]
  (h,), h_TxBxH = jax.jit(functools.partial(gru_recurrence, jnp.float32, 1))(
    gates_x, kernel, bias, carry, mask
  )
  for row, length in enumerate(lengths.tolist()):
    expected_h = h_TxBxH[length - 1, row] if length else carry[0][row]
    np.testing.assert_array_equal(h[row], expected_h)


def test_bfloat16_gru_gradients_stay_close_to_float32():
  args = gru_inputs(2)

  def loss(dtype, *a):
    (h,), h_TxBxH = gru_recurrence(dtype, 1, *a)
    return jnp.sum(h_TxBxH) + jnp.sum(h)

  f32 = jax.grad(functools.partial(loss, jnp.float32), argnums=(0, 1, 2))(*args)
  bf16 = jax.grad(functools.partial(loss, jnp.bfloat16), argnums=(0, 1, 2))(*args)
  for a, b in zip(f32, bf16):
    assert b.dtype == jnp.float32
    np.testing.assert_allclose(b, a, atol=0.1 * float(jnp.max(jnp.abs(a))))
    assert not np.array_equal(a, b)


def recurrence_inputs(seed=0):
  k = jax.random.split(jax.random.key(seed), 4)
  gates_x = jax.random.normal(k[0], (T, B, 4 * H))
  kernel = 0.5 * jax.random.normal(k[1], (H, 4 * H))
  carry = (jax.random.normal(k[2], (B, H)), jax.random.normal(k[3], (B, H)))
  return gates_x, kernel, carry


def weighted_sum(recurrence, mask, gates_x, kernel, carry):
  """A scalar touching every output, final c and final h with different weights."""
  (c, h), h_TxBxH = recurrence(jnp.float32, 1, gates_x, kernel, carry, mask)
  w = jnp.cos(jnp.arange(h_TxBxH.size, dtype=jnp.float32)).reshape(h_TxBxH.shape)
  return jnp.sum(h_TxBxH * w) + jnp.sum(jnp.sin(c)) + 2.0 * jnp.sum(h**2)


@pytest.mark.parametrize("lengths", [None, [7, 3, 1, 0]], ids=["no-mask", "padded"])
def test_recurrence_values_and_gradients_equal_autodiff_of_the_plain_scan(lengths):
  mask = None if lengths is None else jnp.arange(T)[:, None] < jnp.array(lengths)[None, :]
  args = recurrence_inputs()
  grad = lambda f: jax.jit(
    jax.value_and_grad(functools.partial(weighted_sum, f, mask), argnums=(0, 1, 2))
  )
  value, grads = grad(lstm_recurrence)(*args)
  ref_value, ref_grads = grad(plain_recurrence)(*args)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  if lengths is not None:  # Held steps: no gradient reaches their input gates.
    np.testing.assert_array_equal(grads[0][3:, 1], 0.0)
    np.testing.assert_array_equal(grads[0][:, 3], 0.0)


def test_final_state_is_held_at_each_true_end():
  gates_x, kernel, carry = recurrence_inputs(1)
  lengths = jnp.array([7, 3, 1, 0])
  mask = jnp.arange(T)[:, None] < lengths[None, :]
  (c, h), h_TxBxH = jax.jit(functools.partial(lstm_recurrence, jnp.float32, 1))(
    gates_x, kernel, carry, mask
  )
  for row, length in enumerate(lengths.tolist()):
    expected_h = h_TxBxH[length - 1, row] if length else carry[1][row]
    np.testing.assert_array_equal(h[row], expected_h)
  np.testing.assert_array_equal(c[3], carry[0][3])  # Length 0 keeps the initial state.


def test_bfloat16_recurrence_gradients_stay_close_to_float32():
  args = recurrence_inputs(2)

  def loss(dtype, *a):
    (c, _), h_TxBxH = lstm_recurrence(dtype, 1, *a)
    return jnp.sum(h_TxBxH) + jnp.sum(c)

  f32 = jax.grad(functools.partial(loss, jnp.float32), argnums=(0, 1))(*args)
  bf16 = jax.grad(functools.partial(loss, jnp.bfloat16), argnums=(0, 1))(*args)
  for a, b in zip(f32, bf16):
    assert b.dtype == jnp.float32
    np.testing.assert_allclose(b, a, atol=0.1 * float(jnp.max(jnp.abs(a))))
    assert not np.array_equal(a, b)


# ---- Whole models: fast path (custom backward pass, input table) against the reference ----


@pytest.fixture
def reference_rnn(monkeypatch):
  """Switches the models to the plain scan and dense input projections while active."""

  def use_reference():
    monkeypatch.setattr(rnn, "lstm_recurrence", plain_recurrence)
    monkeypatch.setattr(rnn, "gru_recurrence", plain_gru_recurrence)
    monkeypatch.setattr(seq2seq.model, "uses_input_table", lambda vocab_size, num_tokens: False)

  return use_reference


def loss_and_grads(loss_fn, params, batch):
  fn = jax.jit(
    jax.value_and_grad(functools.partial(loss_fn, deterministic=True, step=None), has_aux=True)
  )
  (loss, sums), grads = fn(params, batch, jax.random.key(0))
  return loss, sums, grads


def assert_same_loss_and_grads(fast, reference):
  np.testing.assert_allclose(fast[0], reference[0], rtol=1e-5)
  for key in fast[1]:
    np.testing.assert_allclose(fast[1][key], reference[1][key], rtol=1e-5, atol=1e-5)
  flat_fast = jax.tree_util.tree_flatten_with_path(fast[2])[0]
  flat_reference = jax.tree.leaves(reference[2])
  for (path, a), b in zip(flat_fast, flat_reference):
    scale = max(float(jnp.max(jnp.abs(b))), 1e-3)
    np.testing.assert_allclose(
      a, b, rtol=1e-4, atol=1e-5 * scale, err_msg=jax.tree_util.keystr(path)
    )


def padded_batch(vocab_size, seed=0):
  """Rows of lengths 6, 3, 1 and an all-PAD filler row; targets end in EOS (id 2)."""
  rng = np.random.default_rng(seed)
  lengths = np.array([6, 3, 1, 0], np.int32)
  tokens = np.zeros((4, 6), np.int32)
  for row, length in enumerate(lengths):
    tokens[row, :length] = rng.integers(4, vocab_size, length)
    if length:
      tokens[row, length - 1] = 2
  return dict(
    inputs=jnp.asarray(tokens), input_lengths=jnp.asarray(lengths), targets=jnp.asarray(tokens)
  )


SEQ2SEQ_VARIANTS = {
  "uni-1layer": dict(),
  "uni-2layer": dict(encoder_layers=2, decoder_layers=2),
  "bi-2layer": dict(bidirectional=True, encoder_layers=2, decoder_layers=2),
  "bi-onehot": dict(bidirectional=True, input_encoding="one_hot"),
  "gru-bi-2layer": dict(bidirectional=True, encoder_layers=2, decoder_layers=2, cell="gru"),
  "gru-uni-2layer-attention": dict(
    encoder_layers=2, decoder_layers=2, attention="additive", input_feeding=True, cell="gru"
  ),
}


@pytest.mark.slow
@pytest.mark.parametrize("vocab_size", [11, 40], ids=["table", "dense"])
@pytest.mark.parametrize("variant", list(SEQ2SEQ_VARIANTS))
def test_seq2seq_fast_path_equals_the_reference(reference_rnn, variant, vocab_size):
  """vocab 11 < 24 batch tokens takes the input table; 40 projects every embedding."""
  model = seq2seq.Seq2Seq(
    seq2seq.Seq2SeqConfig(
      vocab_size, vocab_size, embed_dim=5, hidden_size=H, **SEQ2SEQ_VARIANTS[variant]
    )
  )
  batch = padded_batch(vocab_size)
  params = model.init(jax.random.key(1), batch["inputs"], batch["input_lengths"], batch["targets"])
  loss_fn = functools.partial(seq2seq_loss, model=model)
  fast = loss_and_grads(loss_fn, params, batch)
  reference_rnn()
  assert_same_loss_and_grads(fast, loss_and_grads(loss_fn, params, batch))


@pytest.mark.slow
@pytest.mark.parametrize(
  "kind,layers,cell",
  [("vae", 1, "lstm"), ("vae", 2, "lstm"), ("lm", 2, "lstm"), ("vae", 2, "gru"), ("lm", 1, "gru")],
)
def test_vae_and_lm_fast_path_equals_the_reference(reference_rnn, kind, layers, cell):
  model = SentenceVAE(
    SentenceVAEConfig(
      30,
      kind=kind,
      embed_dim=5,
      hidden_size=H,
      latent_size=3,
      encoder_layers=layers,
      decoder_layers=layers,
      cell=cell,
    )
  )
  batch = padded_batch(30)
  params = model.init(jax.random.key(1), batch["inputs"], batch["input_lengths"], batch["targets"])
  loss_fn = functools.partial(
    vae_loss.sentence_loss, model=model, objective=vae_loss.VAEObjective()
  )
  fast = loss_and_grads(loss_fn, params, batch)
  reference_rnn()
  assert_same_loss_and_grads(fast, loss_and_grads(loss_fn, params, batch))


def test_input_table_is_used_only_without_embedding_dropout():
  model = seq2seq.Seq2Seq(
    seq2seq.Seq2SeqConfig(11, 11, embed_dim=5, hidden_size=H, dropout_rate=0.3)
  )
  tokens = jnp.ones((4, 6), jnp.int32)
  model = model.bind({})
  assert model._uses_table(11, tokens, deterministic=True)
  assert not model._uses_table(11, tokens, deterministic=False)
  assert not model._uses_table(40, tokens, deterministic=True)  # 40 >= 24 tokens.
