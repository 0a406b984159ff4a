"""Tests for textgen_jax.decoding with hand-made step functions (no model)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from textgen_jax import decoding
from textgen_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID
from textgen_jax.errors import TextgenError

V = 8
MAX_LEN = 6
BIG = 10.0


def eos_at_step_fn(k):
  """Row 0 emits 5 before step k, EOS at step k, and 6 after (which must never show).

  Row 1 never emits EOS: it emits the successor of the token it is fed (BOS -> 4, 4 -> 5, ...,
  7 -> 4), so its output also shows that each chosen token is fed back in.
  """

  def step_fn(t, tokens_B):
    row0 = jnp.where(t < k, 5, jnp.where(t == k, EOS_ID, 6))
    row1 = jnp.where(tokens_B[1] == BOS_ID, 4, 4 + (tokens_B[1] - 4 + 1) % 4)
    logits = jnp.zeros((2, V)).at[0, row0].set(BIG).at[1, row1].set(BIG)
    return t + 1, logits

  return step_fn


def expected_outputs(k, max_len=MAX_LEN):
  row0 = ([5] * k + [EOS_ID] + [PAD_ID] * max_len)[:max_len]
  row1 = [4 + i % 4 for i in range(max_len)]
  return np.array([row0, row1], np.int32)


@pytest.mark.parametrize("k", [0, 2, MAX_LEN - 1, MAX_LEN + 3])
def test_greedy_decode_stops_each_row_at_its_eos(k):
  tokens = decoding.greedy_decode(eos_at_step_fn(k), jnp.int32(0), 2, MAX_LEN)
  assert tokens.shape == (2, MAX_LEN) and tokens.dtype == jnp.int32
  np.testing.assert_array_equal(tokens, expected_outputs(k))


def test_greedy_decode_under_jit():
  @jax.jit
  def decode(t0):
    return decoding.greedy_decode(eos_at_step_fn(3), t0, 2, MAX_LEN)

  np.testing.assert_array_equal(decode(jnp.int32(0)), expected_outputs(3))


def test_loop_exits_once_every_row_is_done():
  calls = []

  def step_fn(t, tokens_B):
    jax.debug.callback(lambda: calls.append(1))
    token_B = jnp.where(t == jnp.array([1, 2, 1]), EOS_ID, 4)  # EOS at steps 1, 2 and 1.
    return t + 1, BIG * jax.nn.one_hot(token_B, V)

  tokens = jax.jit(lambda: decoding.greedy_decode(step_fn, jnp.int32(0), 3, 10))()
  jax.effects_barrier()
  np.testing.assert_array_equal(tokens[:, :4], [[4, EOS_ID, 0, 0], [4, 4, EOS_ID, 0],
                                                [4, EOS_ID, 0, 0]])
  assert np.all(np.asarray(tokens)[:, 3:] == PAD_ID)
  assert len(calls) == 3  # Steps 0, 1 and 2; not max_len = 10.


def test_pad_and_bos_are_never_generated():
  def step_fn(t, tokens_B):
    logits = jnp.zeros((2, V)).at[:, PAD_ID].set(3 * BIG).at[:, BOS_ID].set(2 * BIG)
    return t + 1, logits.at[:, jnp.where(t == 2, EOS_ID, 6)].set(BIG)

  tokens = decoding.greedy_decode(step_fn, jnp.int32(0), 2, MAX_LEN)
  np.testing.assert_array_equal(tokens, [[6, 6, EOS_ID, 0, 0, 0]] * 2)


def uniform_step_fn(batch_size, vocab_size=50):
  def step_fn(carry, tokens_B):
    return carry, jnp.zeros((batch_size, vocab_size))
  return step_fn


def test_sample_decode_same_key_same_output_different_key_different_output():
  sample = jax.jit(functools.partial(decoding.sample_decode, uniform_step_fn(4), None, 4, 12),
                   static_argnames="temperature")
  first = sample(jax.random.key(0), temperature=1.0)
  np.testing.assert_array_equal(sample(jax.random.key(0), temperature=1.0), first)
  assert not np.array_equal(sample(jax.random.key(1), temperature=1.0), first)
  for row in np.asarray(first):
    generated = row[:np.argmax(row == EOS_ID)] if EOS_ID in row else row
    assert not np.isin(generated, [PAD_ID, BOS_ID]).any()
    if EOS_ID in row:
      assert np.all(row[np.argmax(row == EOS_ID) + 1:] == PAD_ID)


def test_sample_decode_temperature_sharpens_and_flattens():
  """Token 4 has probability 3/4 against token 5 at temperature 1."""
  batch_size = 4000
  logits = jnp.full((batch_size, V), -1e9).at[:, 4].set(jnp.log(3.0)).at[:, 5].set(0.0)

  def step_fn(carry, tokens_B):
    return carry, logits

  def share_of_4(temperature):
    tokens = decoding.sample_decode(step_fn, None, batch_size, 1, jax.random.key(7), temperature)
    assert np.isin(np.asarray(tokens), [4, 5]).all()
    return float(np.mean(np.asarray(tokens) == 4))

  assert share_of_4(1.0) == pytest.approx(0.75, abs=0.03)
  assert share_of_4(0.05) > 0.99
  assert share_of_4(1e4) == pytest.approx(0.5, abs=0.03)


def test_low_temperature_sampling_matches_greedy():
  sampled = decoding.sample_decode(eos_at_step_fn(3), jnp.int32(0), 2, MAX_LEN,
                                   jax.random.key(3), temperature=0.01)
  np.testing.assert_array_equal(sampled, expected_outputs(3))


@pytest.mark.parametrize("max_len", [0, -1])
def test_max_len_below_one_raises(max_len):
  with pytest.raises(TextgenError, match="max_len"):
    decoding.greedy_decode(eos_at_step_fn(1), jnp.int32(0), 2, max_len)
  with pytest.raises(TextgenError, match="max_len"):
    decoding.sample_decode(eos_at_step_fn(1), jnp.int32(0), 2, max_len, jax.random.key(0))


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_non_positive_temperature_raises(temperature):
  with pytest.raises(TextgenError, match="temperature"):
    decoding.sample_decode(eos_at_step_fn(1), jnp.int32(0), 2, MAX_LEN, jax.random.key(0),
                           temperature)


def test_filter_logits_top_k_keeps_the_k_largest():
  logits = jnp.array([[1.0, 5.0, 3.0, 4.0, 2.0]])
  kept = np.asarray(decoding.filter_logits(logits, top_k=2)) > -1e30
  np.testing.assert_array_equal(kept, [[False, True, False, True, False]])
  np.testing.assert_array_equal(decoding.filter_logits(logits, top_k=0), logits)
  np.testing.assert_array_equal(decoding.filter_logits(logits, top_k=9), logits)


def test_filter_logits_top_p_keeps_the_nucleus():
  probs = jnp.array([[0.5, 0.3, 0.15, 0.05]])
  logits = jnp.log(probs)
  for top_p, expected in ((0.5, [True, False, False, False]), (0.6, [True, True, False, False]),
                          (0.8, [True, True, False, False]), (0.81, [True, True, True, False]),
                          (1.0, [True, True, True, True])):
    kept = np.asarray(decoding.filter_logits(logits, top_p=top_p)) > -1e30
    np.testing.assert_array_equal(kept[0], expected, err_msg=f"top_p={top_p}")


def test_top_p_sampling_never_leaves_the_nucleus():
  batch_size = 2000
  logits = jnp.broadcast_to(jnp.log(jnp.array([1e-9, 1e-9, 1e-9, 0.05, 0.5, 0.3, 0.1, 0.05])),
                            (batch_size, V))
  tokens = decoding.sample_decode(lambda c, t: (c, logits), None, batch_size, 1,
                                  jax.random.key(0), top_p=0.85)
  counts = np.bincount(np.asarray(tokens).ravel(), minlength=V)
  assert counts[4] > 0 and counts[5] > 0 and counts[6] > 0
  assert counts[3] == counts[7] == 0  # Outside the 0.5 + 0.3 + 0.1 nucleus.
  # Renormalised within the nucleus: 0.5 / 0.9 of the samples are token 4.
  assert counts[4] / batch_size == pytest.approx(0.5 / 0.9, abs=0.04)


def test_top_k_1_sampling_equals_greedy():
  sampled = decoding.sample_decode(eos_at_step_fn(3), jnp.int32(0), 2, MAX_LEN,
                                   jax.random.key(3), top_k=1)
  np.testing.assert_array_equal(sampled, expected_outputs(3))


@pytest.mark.parametrize("settings, flag", [(dict(top_k=-1), "top_k"), (dict(top_p=0.0), "top_p"),
                                            (dict(top_p=1.5), "top_p")])
def test_bad_filters_raise(settings, flag):
  with pytest.raises(TextgenError, match=flag):
    decoding.sample_decode(eos_at_step_fn(1), jnp.int32(0), 2, MAX_LEN, jax.random.key(0),
                           **settings)
