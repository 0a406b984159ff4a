"""Tests for textgen_jax.losses (and the seq2seq loss and metric summaries built on it)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from textgen_jax import metrics
from textgen_jax.data.vocab import EOS_ID, PAD_ID
from textgen_jax.losses import sequence_metric_sums, token_cross_entropy
from textgen_jax.seq2seq.model import Seq2Seq, Seq2SeqConfig
from textgen_jax.seq2seq.loss import loss as seq2seq_loss
from textgen_jax.seq2seq.model import init_params

V = 7
# Row 0: all correct. Row 1: one real token wrong. Row 2: EOS wrong. Row 3: filler (all PAD).
TARGETS = np.array(
  [
    [4, 5, EOS_ID, PAD_ID, PAD_ID],
    [6, 4, 5, EOS_ID, PAD_ID],
    [5, EOS_ID, PAD_ID, PAD_ID, PAD_ID],
    [PAD_ID] * 5,
  ],
  np.int32,
)
PREDICTIONS = np.array(
  [[4, 5, EOS_ID, 6, 6], [6, 6, 5, EOS_ID, 4], [5, 4, 5, 5, 5], [4, 4, 4, 4, 4]], np.int32
)
MASK = TARGETS != PAD_ID


def logits_for(predictions, seed=0):
  """Random logits whose argmax is `predictions`."""
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=predictions.shape + (V,)).astype(np.float32)
  np.put_along_axis(logits, predictions[..., None], 10.0, axis=-1)
  return logits


def log_softmax(logits):
  logits = logits - logits.max(-1, keepdims=True)
  return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def test_token_cross_entropy_matches_a_manual_computation():
  logits = logits_for(PREDICTIONS)
  expected = -np.take_along_axis(log_softmax(logits), TARGETS[..., None], -1)[..., 0]
  nll = token_cross_entropy(jnp.asarray(logits), jnp.asarray(TARGETS))
  assert nll.shape == TARGETS.shape
  np.testing.assert_allclose(nll, expected, rtol=1e-5, atol=1e-5)


def test_label_smoothing():
  logits = logits_for(PREDICTIONS)
  smoothing = 0.1
  labels = np.eye(V)[TARGETS] * (1 - smoothing) + smoothing / V
  expected = -(labels * log_softmax(logits)).sum(-1)
  smoothed = token_cross_entropy(jnp.asarray(logits), jnp.asarray(TARGETS), smoothing)
  np.testing.assert_allclose(smoothed, expected, rtol=1e-5, atol=1e-5)
  assert not np.allclose(smoothed, token_cross_entropy(jnp.asarray(logits), jnp.asarray(TARGETS)))


def test_sequence_metric_sums_counts():
  logits = logits_for(PREDICTIONS)
  nll = token_cross_entropy(jnp.asarray(logits), jnp.asarray(TARGETS))
  sums = jax.device_get(sequence_metric_sums(jnp.asarray(logits), jnp.asarray(TARGETS), nll))
  assert sums["tokens"] == MASK.sum() == 9
  assert sums["correct_tokens"] == 3 + 3 + 1
  assert sums["sequences"] == 3  # The filler row is no sequence.
  assert sums["exact_sequences"] == 1  # Row 2's wrong EOS spoils its exact match.
  np.testing.assert_allclose(sums["nll_sum"], float(np.sum(np.asarray(nll) * MASK)), rtol=1e-6)


def test_sequence_metric_sums_ignore_pad_positions():
  logits = logits_for(PREDICTIONS)
  nll = token_cross_entropy(jnp.asarray(logits), jnp.asarray(TARGETS))
  reference = jax.device_get(sequence_metric_sums(jnp.asarray(logits), jnp.asarray(TARGETS), nll))
  # Anything at PAD positions, logits or per-token losses, must change nothing.
  other_logits = np.where(MASK[..., None], logits, logits_for(PREDICTIONS[:, ::-1], seed=5))
  other_nll = jnp.where(jnp.asarray(MASK), nll, 1e6)
  changed = jax.device_get(
    sequence_metric_sums(jnp.asarray(other_logits), jnp.asarray(TARGETS), other_nll)
  )
  assert changed == reference
  # ... whereas the same change at real positions does change the sums.
  real_changed = jax.device_get(
    sequence_metric_sums(jnp.asarray(other_logits), jnp.asarray(TARGETS), nll + 1.0)
  )
  assert real_changed["nll_sum"] != reference["nll_sum"]


def test_exact_match_ignores_predictions_after_eos():
  targets = jnp.array([[4, EOS_ID, PAD_ID, PAD_ID]], jnp.int32)
  for tail in ([4, 4], [EOS_ID, 5], [6, 6]):
    logits = jnp.asarray(logits_for(np.array([[4, EOS_ID] + tail], np.int32)))
    sums = sequence_metric_sums(logits, targets, token_cross_entropy(logits, targets))
    assert sums["exact_sequences"] == 1 and sums["correct_tokens"] == 2 and sums["tokens"] == 2


def test_all_pad_batch_has_no_tokens_or_sequences():
  targets = jnp.zeros((2, 3), jnp.int32)
  logits = jnp.asarray(logits_for(np.full((2, 3), 4, np.int32)))
  sums = sequence_metric_sums(logits, targets, token_cross_entropy(logits, targets))
  assert all(float(v) == 0.0 for v in sums.values())
  summary = metrics.summarize(jax.device_get(sums))
  assert summary["loss"] == 0.0 and summary["exact_match"] == 0.0


def test_summarize():
  summary = metrics.summarize(
    {
      "nll_sum": 20.0,
      "correct_tokens": 6.0,
      "tokens": 10.0,
      "exact_sequences": 1.0,
      "sequences": 4.0,
    }
  )
  assert summary["loss"] == pytest.approx(2.0)
  assert summary["token_accuracy"] == pytest.approx(0.6)
  assert summary["exact_match"] == pytest.approx(0.25)
  assert summary["perplexity"] == pytest.approx(np.exp(2.0))
  huge = metrics.summarize(
    {"nll_sum": 1e6, "correct_tokens": 0.0, "tokens": 1.0, "exact_sequences": 0.0, "sequences": 1.0}
  )
  assert np.isfinite(huge["perplexity"])


@pytest.fixture(scope="module")
def tiny_model():
  model = Seq2Seq(
    Seq2SeqConfig(source_vocab_size=V, target_vocab_size=V, embed_dim=8, hidden_size=16)
  )
  shapes = jax.eval_shape(functools.partial(init_params, model), jax.random.key(0))
  rng = np.random.default_rng(0)
  return model, jax.tree.map(
    lambda x: jnp.asarray(0.5 * rng.standard_normal(x.shape), x.dtype), shapes
  )


def test_seq2seq_loss_is_mean_nll_per_real_token(tiny_model):
  model, params = tiny_model
  batch = {
    "inputs": jnp.array([[4, 5, 6, 0, 0], [5, 0, 0, 0, 0], [0] * 5], jnp.int32),
    "input_lengths": jnp.array([3, 1, 0], jnp.int32),
    "targets": jnp.asarray(TARGETS[[0, 1, 3]]),
  }

  @jax.jit
  def losses_and_logits(params, batch):
    loss_fn = functools.partial(seq2seq_loss, params, batch, jax.random.key(0), True, model=model)
    logits = model.apply(params, batch["inputs"], batch["input_lengths"], batch["targets"])
    return loss_fn(), loss_fn(label_smoothing=0.2), logits

  (loss, sums), (smoothed, smoothed_sums), logits = losses_and_logits(params, batch)
  assert sums["tokens"] == 7 and sums["sequences"] == 2
  np.testing.assert_allclose(loss, sums["nll_sum"] / sums["tokens"], rtol=1e-6)
  nll = -np.take_along_axis(log_softmax(np.asarray(logits)), TARGETS[[0, 1, 3]][..., None], -1)[
    ..., 0
  ]
  np.testing.assert_allclose(loss, np.sum(nll * MASK[[0, 1, 3]]) / 7, rtol=1e-5)
  labels = np.eye(V)[TARGETS[[0, 1, 3]]] * 0.8 + 0.2 / V
  smoothed_nll = -(labels * log_softmax(np.asarray(logits))).sum(-1)
  np.testing.assert_allclose(smoothed, np.sum(smoothed_nll * MASK[[0, 1, 3]]) / 7, rtol=1e-5)
  assert not np.isclose(smoothed, loss)
  np.testing.assert_allclose(smoothed_sums["nll_sum"], sums["nll_sum"], rtol=1e-6)
