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
  np.testing.assert_array_equal(
    tokens[:, :4], [[4, EOS_ID, 0, 0], [4, 4, EOS_ID, 0], [4, EOS_ID, 0, 0]]
  )
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
  sample = jax.jit(
    functools.partial(decoding.sample_decode, uniform_step_fn(4), None, 4, 12),
    static_argnames="temperature",
  )
  first = sample(jax.random.key(0), temperature=1.0)
  np.testing.assert_array_equal(sample(jax.random.key(0), temperature=1.0), first)
  assert not np.array_equal(sample(jax.random.key(1), temperature=1.0), first)
  for row in np.asarray(first):
    generated = row[: np.argmax(row == EOS_ID)] if EOS_ID in row else row
    assert not np.isin(generated, [PAD_ID, BOS_ID]).any()
    if EOS_ID in row:
      assert np.all(row[np.argmax(row == EOS_ID) + 1 :] == PAD_ID)


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
  sampled = decoding.sample_decode(
    eos_at_step_fn(3), jnp.int32(0), 2, MAX_LEN, jax.random.key(3), temperature=0.01
  )
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
    decoding.sample_decode(
      eos_at_step_fn(1), jnp.int32(0), 2, MAX_LEN, jax.random.key(0), temperature
    )


def test_filter_logits_top_k_keeps_the_k_largest():
  logits = jnp.array([[1.0, 5.0, 3.0, 4.0, 2.0]])
  kept = np.asarray(decoding.filter_logits(logits, top_k=2)) > -1e30
  np.testing.assert_array_equal(kept, [[False, True, False, True, False]])
  np.testing.assert_array_equal(decoding.filter_logits(logits, top_k=0), logits)
  np.testing.assert_array_equal(decoding.filter_logits(logits, top_k=9), logits)


def test_filter_logits_top_p_keeps_the_nucleus():
  probs = jnp.array([[0.5, 0.3, 0.15, 0.05]])
  logits = jnp.log(probs)
  for top_p, expected in (
    (0.5, [True, False, False, False]),
    (0.6, [True, True, False, False]),
    (0.8, [True, True, False, False]),
    (0.81, [True, True, True, False]),
    (1.0, [True, True, True, True]),
  ):
    kept = np.asarray(decoding.filter_logits(logits, top_p=top_p)) > -1e30
    np.testing.assert_array_equal(kept[0], expected, err_msg=f"top_p={top_p}")


def test_top_p_sampling_never_leaves_the_nucleus():
  batch_size = 2000
  logits = jnp.broadcast_to(
    jnp.log(jnp.array([1e-9, 1e-9, 1e-9, 0.05, 0.5, 0.3, 0.1, 0.05])), (batch_size, V)
  )
  tokens = decoding.sample_decode(
    lambda c, t: (c, logits), None, batch_size, 1, jax.random.key(0), top_p=0.85
  )
  counts = np.bincount(np.asarray(tokens).ravel(), minlength=V)
  assert counts[4] > 0 and counts[5] > 0 and counts[6] > 0
  assert counts[3] == counts[7] == 0  # Outside the 0.5 + 0.3 + 0.1 nucleus.
  # Renormalised within the nucleus: 0.5 / 0.9 of the samples are token 4.
  assert counts[4] / batch_size == pytest.approx(0.5 / 0.9, abs=0.04)


def test_top_k_1_sampling_equals_greedy():
  sampled = decoding.sample_decode(
    eos_at_step_fn(3), jnp.int32(0), 2, MAX_LEN, jax.random.key(3), top_k=1
  )
  np.testing.assert_array_equal(sampled, expected_outputs(3))


@pytest.mark.parametrize(
  "settings, flag",
  [(dict(top_k=-1), "top_k"), (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p")],
)
def test_bad_filters_raise(settings, flag):
  with pytest.raises(TextgenError, match=flag):
    decoding.sample_decode(
      eos_at_step_fn(1), jnp.int32(0), 2, MAX_LEN, jax.random.key(0), **settings
    )


# ---- Per-row independence of sampling ------------------------------------------------------


def tiny_rnn(seed, vocab_size=7, hidden=5):
  """A random tanh RNN over a small vocabulary: carry h_BxH, a real state that beams reorder."""
  k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
  embed_VxH = 2.0 * jax.random.normal(k1, (vocab_size, hidden))
  recurrent_HxH = jax.random.normal(k2, (hidden, hidden)) / np.sqrt(hidden)
  output_HxV = 2.0 * jax.random.normal(k3, (hidden, vocab_size))
  h0 = jax.random.normal(k4, (hidden,))

  def step_fn(h_BxH, tokens_B):
    h_BxH = jnp.tanh(h_BxH @ recurrent_HxH + embed_VxH[tokens_B])
    return h_BxH, h_BxH @ output_HxV

  def start(batch_size, offset=0.0):
    """Distinct initial states per row, so rows decode differently."""
    return h0[None, :] + offset + 0.7 * jnp.arange(batch_size, dtype=jnp.float32)[:, None]

  return step_fn, start


def test_sampling_a_batch_matches_sampling_each_row_with_its_key():
  step_fn, start = tiny_rnn(0)
  keys_B = jax.random.split(jax.random.key(5), 4)
  batch = decoding.sample_decode(step_fn, start(4), 4, MAX_LEN, keys_B, temperature=1.5)
  for row in range(4):
    alone = decoding.sample_decode(
      step_fn, start(4)[row : row + 1], 1, MAX_LEN, keys_B[row : row + 1], temperature=1.5
    )
    np.testing.assert_array_equal(alone[0], batch[row])
  assert len({tuple(r) for r in np.asarray(batch)}) > 1


# ---- Beam search ---------------------------------------------------------------------------


def sequence_log_prob(step_fn, carry_1xH, tokens):
  """log p(tokens) under step_fn, stepping from BOS (the definition beam search scores by)."""
  total, previous = 0.0, BOS_ID
  for token in tokens:
    carry_1xH, logits = step_fn(carry_1xH, jnp.array([previous]))
    total += float(jax.nn.log_softmax(logits[0])[token])
    previous = token
  return total


def exhaustive_ranking(step_fn, carry_1xH, vocab_size, max_len, alpha, norm="gnmt"):
  """Every sequence decoding can produce (EOS-ended, or max_len long without EOS), best first."""
  import itertools

  generated = [t for t in range(vocab_size) if t not in (PAD_ID, BOS_ID, EOS_ID)]
  sequences = [
    list(p) + [EOS_ID] for n in range(max_len) for p in itertools.product(generated, repeat=n)
  ]
  sequences += [list(p) for p in itertools.product(generated, repeat=max_len)]
  scored = [
    (
      sequence_log_prob(step_fn, carry_1xH, s)
      / float(decoding.length_penalty(len(s), alpha, norm)),
      s,
    )
    for s in sequences
  ]
  return sorted(scored, key=lambda pair: -pair[0])


def unpadded(row):
  row = list(np.asarray(row))
  return row[: row.index(EOS_ID) + 1] if EOS_ID in row else [t for t in row if t != PAD_ID]


@pytest.mark.slow
@pytest.mark.parametrize(
  "seed, alpha, norm", [(0, 0.0, "gnmt"), (1, 0.6, "gnmt"), (2, 1.0, "gnmt"), (3, 0.0, "average")]
)
def test_beam_wide_enough_to_be_exhaustive_returns_the_exhaustive_top_k(seed, alpha, norm):
  """With max_len 2 and K = the number of non-EOS tokens, no hypothesis is ever pruned."""
  vocab_size, max_len = 7, 2
  step_fn, start = tiny_rnn(seed, vocab_size)
  beam_size = vocab_size - 3
  beams = decoding.beam_search(step_fn, start(1), 1, max_len, beam_size, alpha, norm)
  best = exhaustive_ranking(step_fn, start(1), vocab_size, max_len, alpha, norm)[:beam_size]
  assert [unpadded(row) for row in beams.tokens_BxKxL[0]] == [s for _, s in best]
  np.testing.assert_allclose(beams.scores_BxK[0], [score for score, _ in best], rtol=1e-5)


def test_beam_finds_the_best_sequence_that_greedy_misses():
  """Token 4 is likeliest first (0.6) but leads to a flat distribution; token 5 (0.4) is followed
  by EOS with probability 0.97. Exhaustive search says [5, EOS] is best; beam (K=2) finds it."""
  first = jnp.log(jnp.array([1e-9, 1e-9, 1e-9, 1e-9, 0.6, 0.4, 1e-9, 1e-9]))
  after_4 = jnp.log(jnp.array([1e-9, 1e-9, 0.2, 0.2, 0.2, 0.2, 0.1, 0.1]))
  after_5 = jnp.log(jnp.array([1e-9, 1e-9, 0.97, 0.01, 0.01, 0.005, 0.0025, 0.0025]))

  def step_fn(carry_B, tokens_B):
    logits = jnp.where(
      (tokens_B == BOS_ID)[:, None], first, jnp.where((tokens_B == 5)[:, None], after_5, after_4)
    )
    return carry_B, logits

  carry = jnp.zeros((1,))
  best_score, best = exhaustive_ranking(step_fn, carry, V, 3, 0.0)[0]
  assert best == [5, EOS_ID]
  greedy = unpadded(decoding.greedy_decode(step_fn, carry, 1, 3)[0])
  assert greedy != best
  beams = decoding.beam_search(step_fn, carry, 1, 3, beam_size=2, length_alpha=0.0)
  assert unpadded(beams.tokens_BxKxL[0, 0]) == best
  np.testing.assert_allclose(beams.scores_BxK[0, 0], best_score, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_beam_width_1_equals_greedy(seed):
  step_fn, start = tiny_rnn(seed, vocab_size=12)
  greedy = decoding.greedy_decode(step_fn, start(6), 6, 9)
  beams = decoding.beam_search(step_fn, start(6), 6, 9, beam_size=1, length_alpha=0.0)
  np.testing.assert_array_equal(beams.tokens_BxKxL[:, 0], greedy)
  np.testing.assert_array_equal(
    decoding.decode(
      step_fn, start(6), 6, 9, decoding.DecodeSettings("beam", beam_size=1, length_alpha=0.0)
    ),
    greedy,
  )


def test_beam_scores_are_the_hypotheses_log_probabilities_best_first():
  step_fn, start = tiny_rnn(3, vocab_size=12)
  alpha = 0.8
  beams = jax.jit(
    functools.partial(
      decoding.beam_search, step_fn, batch_size=3, max_len=6, beam_size=5, length_alpha=alpha
    )
  )(start(3))
  assert beams.tokens_BxKxL.shape == (3, 5, 6) and beams.scores_BxK.shape == (3, 5)
  for row in range(3):
    scores = np.asarray(beams.scores_BxK[row])
    assert np.all(np.diff(scores) <= 0)
    for k in range(5):
      tokens = unpadded(beams.tokens_BxKxL[row, k])
      log_prob = sequence_log_prob(step_fn, start(3)[row : row + 1], tokens)
      assert beams.log_probs_BxK[row, k] == pytest.approx(log_prob, rel=1e-5)
      penalty = float(decoding.length_penalty(len(tokens), alpha))
      assert scores[k] == pytest.approx(log_prob / penalty, rel=1e-5)
    assert len({tuple(unpadded(r)) for r in beams.tokens_BxKxL[row]}) == 5  # No duplicates.


def test_beam_hypotheses_stop_at_their_eos_and_pad_after_it():
  step_fn, start = tiny_rnn(5, vocab_size=6)  # EOS is 1 of 4 choices: most hypotheses end early.
  beams = decoding.beam_search(step_fn, start(4), 4, MAX_LEN, beam_size=3)
  rows = np.asarray(beams.tokens_BxKxL).reshape(-1, MAX_LEN)
  assert sum(EOS_ID in row for row in rows) >= 6
  for row in rows:
    end = list(row).index(EOS_ID) if EOS_ID in row else MAX_LEN
    assert np.all(row[end + 1 :] == PAD_ID)
    assert not np.isin(row[:end], [PAD_ID, BOS_ID, EOS_ID]).any()


@pytest.mark.slow
def test_beam_search_of_a_batch_matches_each_row_alone_and_vmap():
  step_fn, start = tiny_rnn(4, vocab_size=12)
  search = functools.partial(
    decoding.beam_search, step_fn, max_len=8, beam_size=4, length_alpha=0.6
  )
  batch = search(start(5), 5)
  for row in range(5):
    alone = search(start(5)[row : row + 1], 1)
    np.testing.assert_array_equal(alone.tokens_BxKxL[0], batch.tokens_BxKxL[row])
    np.testing.assert_allclose(alone.scores_BxK[0], batch.scores_BxK[row], rtol=1e-6)
  mapped = jax.vmap(lambda h_H: search(h_H[None], 1))(start(5))
  np.testing.assert_array_equal(mapped.tokens_BxKxL[:, 0], batch.tokens_BxKxL)


@pytest.mark.parametrize(
  "settings, flag",
  [
    (dict(beam_size=0), "beam_size"),
    (dict(beam_size=V + 1), "larger than the vocabulary"),
    (dict(length_alpha=-0.5), "length_alpha"),
    (dict(max_len=0), "max_len"),
    (dict(length_norm="wu"), "length_norm"),
  ],
)
def test_bad_beam_settings_raise(settings, flag):
  arguments = dict(max_len=MAX_LEN, beam_size=2) | settings
  with pytest.raises(TextgenError, match=flag):
    decoding.beam_search(eos_at_step_fn(1), jnp.int32(0), 2, **arguments)


def test_decode_dispatches_and_names_a_bad_strategy():
  settings = decoding.DecodeSettings("sample", temperature=0.01)
  np.testing.assert_array_equal(
    decoding.decode(eos_at_step_fn(3), jnp.int32(0), 2, MAX_LEN, settings, jax.random.key(0)),
    expected_outputs(3),
  )
  with pytest.raises(TextgenError, match="rng"):
    decoding.decode(eos_at_step_fn(3), jnp.int32(0), 2, MAX_LEN, settings)
  with pytest.raises(TextgenError, match="strategy"):
    decoding.decode(eos_at_step_fn(3), jnp.int32(0), 2, MAX_LEN, decoding.DecodeSettings("top"))


def test_inverse_cdf_sampling_never_picks_zero_probability_tokens():
  probs = jnp.array([[0.0, 0.5, 0.0, 0.5, 0.0]] * 4)
  uniform = jnp.array([0.0, 0.4999, 0.5001, 1.0 - 1e-7])
  np.testing.assert_array_equal(decoding.inverse_cdf_sample(probs, uniform), [3, 3, 1, 1])
  uniform = jax.random.uniform(jax.random.key(0), (20000,))
  tokens = decoding.inverse_cdf_sample(
    jnp.broadcast_to(jnp.array([0.0, 0.2, 0.0, 0.8]), (20000, 4)), uniform
  )
  counts = np.bincount(np.asarray(tokens), minlength=4)
  assert counts[0] == counts[2] == 0
  assert counts[3] / 20000 == pytest.approx(0.8, abs=0.01)


@pytest.mark.parametrize(
  "vocab_size, top_k, top_p",
  [(100, 50, 1.0), (1000, 7, 1.0), (100, 0, 0.9), (1000, 0, 0.5), (1000, 40, 0.95)],
)
def test_filter_logits_matches_a_sort_based_reference(vocab_size, top_k, top_p):
  """Bisection finds the same thresholds as sorting; ties (and -0.0 = 0.0) stay together."""
  rng = np.random.default_rng(vocab_size + top_k)
  logits = rng.standard_normal((16, vocab_size)).astype(np.float32) * 3
  logits[:4] = np.round(logits[:4])  # Many ties, and -0.0 next to 0.0.
  kept = np.ones_like(logits, bool)
  if top_k:
    kept &= logits >= np.sort(logits, -1)[:, ::-1][:, top_k - 1 : top_k]
  if top_p < 1.0:
    masked = np.where(kept, logits, -np.inf)
    probs = np.exp(masked - masked.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    order = np.argsort(-masked, -1, kind="stable")
    sorted_probs = np.take_along_axis(probs, order, -1)
    mass_before = np.cumsum(sorted_probs, -1) - sorted_probs
    smallest_kept = np.min(
      np.where(mass_before < top_p, np.take_along_axis(masked, order, -1), np.inf),
      -1,
      keepdims=True,
    )
    kept &= masked >= smallest_kept
  filtered = np.asarray(
    jax.jit(decoding.filter_logits, static_argnums=(1, 2))(jnp.asarray(logits), top_k, top_p)
  )
  np.testing.assert_array_equal(filtered > np.finfo(np.float32).min, kept)
  np.testing.assert_array_equal(filtered[kept], logits[kept])


@pytest.mark.parametrize("vocab_size", [5, 128, 129, 1000, 10_000])
def test_argmax_is_jnp_argmax_first_of_ties_included(vocab_size):
  rng = np.random.default_rng(vocab_size)
  logits = rng.standard_normal((24, vocab_size)).astype(np.float32)
  logits[:6] = np.round(logits[:6] / 2)  # Ties for the maximum.
  logits[6] = -np.inf
  logits[7] = np.finfo(np.float32).min
  np.testing.assert_array_equal(decoding.argmax(jnp.asarray(logits)), np.argmax(logits, -1))
