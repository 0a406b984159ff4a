"""Autoregressive decoding compiled as one program: greedy, sampling (temperature, top-k, top-p)
and beam search, shared by the seq2seq model, the sentence VAE and the language model.

A decoder is described by a pure `step_fn(carry, tokens_B) -> (carry, logits_BxV)`; the carry is
the recurrent state, and it is the whole cache: the encoder's final state for seq2seq, Dense(z)
for the VAE, zeros for a language model. Each strategy is one `lax.while_loop` that exits once
every sequence has ended, so a batch costs one dispatch, not one per token. Call these inside
`jax.jit`; `decode` picks the strategy from a `DecodeSettings`.

Output: tokens_BxL int32, each row the generated tokens, its EOS (if reached), then PAD.
PAD and BOS are never generated, so a row ends with EOS or at max_len.
"""

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from textgen_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID
from textgen_jax.errors import TextgenError

StepFn = Callable[[Any, jax.Array], tuple[Any, jax.Array]]
STRATEGIES = ("greedy", "sample", "beam")
# Beam search's length normalisation: GNMT's ((5 + |y|) / 6) ** alpha (Wu et al. 2016), or the
# average log-probability per token, log p / |y| (OpenNMT's and fairseq's "avg").
LENGTH_NORMS = ("gnmt", "average")


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
  """How to turn a decoder state into tokens; hashable, so it can be a static jit argument."""

  strategy: str = "greedy"  # "greedy", "sample" or "beam".
  temperature: float = 1.0  # sample: softmax(logits / temperature).
  top_k: int = 0  # sample: keep the k most likely tokens (0: all).
  top_p: float = 1.0  # sample: keep the nucleus of this probability mass.
  beam_size: int = 4  # beam: hypotheses kept per input.
  length_alpha: float = 0.6  # beam: GNMT's length normalisation exponent (0: raw log p).
  length_norm: str = "gnmt"  # beam: "gnmt" (with length_alpha) or "average" (log p / length).

  def check(self, max_len: int, vocab_size: int | None = None) -> None:
    """Raises TextgenError naming the first bad setting."""
    if self.strategy not in STRATEGIES:
      raise TextgenError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
    if max_len < 1:
      raise TextgenError(f"max_len must be at least 1, got {max_len}")
    if not self.temperature > 0:
      raise TextgenError(
        f"temperature must be > 0, got {self.temperature} (use greedy decoding for 0)"
      )
    if self.top_k < 0:
      raise TextgenError(f"top_k must be 0 (off) or positive, got {self.top_k}")
    if not 0.0 < self.top_p <= 1.0:
      raise TextgenError(f"top_p must be in (0, 1], got {self.top_p}")
    if self.beam_size < 1:
      raise TextgenError(f"beam_size must be at least 1, got {self.beam_size}")
    if vocab_size is not None and self.beam_size > vocab_size:
      raise TextgenError(
        f"beam_size {self.beam_size} is larger than the vocabulary ({vocab_size} tokens)"
      )
    if not self.length_alpha >= 0:
      raise TextgenError(f"length_alpha must be >= 0, got {self.length_alpha}")
    if self.length_norm not in LENGTH_NORMS:
      raise TextgenError(f"length_norm must be one of {LENGTH_NORMS}, got {self.length_norm!r}")

  def check_rng(self, rng: jax.Array | None) -> None:
    """Sampling draws from an explicit key: no key, no silent default."""
    if self.strategy == "sample" and rng is None:
      raise TextgenError("sampling needs an explicit rng key")


def _vocab_size(step_fn: StepFn, carry: Any, batch_size: int) -> int:
  """The logits' width, found by tracing one step abstractly (no computation)."""
  tokens_B = jax.ShapeDtypeStruct((batch_size,), jnp.int32)
  return jax.eval_shape(step_fn, carry, tokens_B)[1].shape[-1]


def forbid_pad_and_bos(logits_BxV: jax.Array, value: float) -> jax.Array:
  """PAD and BOS are never targets: their logits set to `value`, so no strategy emits them."""
  token_V = jnp.arange(logits_BxV.shape[-1])
  return jnp.where((token_V == PAD_ID) | (token_V == BOS_ID), value, logits_BxV)


def _decode_loop(
  step_fn: StepFn,
  carry: Any,
  batch_size: int,
  max_len: int,
  choose: Callable[[jax.Array, jax.Array], jax.Array],
) -> jax.Array:
  """Runs step_fn until all rows are done; `choose(logits_BxV, t) -> tokens_B`."""

  def not_finished(loop):
    t, _, _, done_B, _ = loop
    return (t < max_len) & ~jnp.all(done_B)

  def one_token(loop):
    t, carry, previous_B, done_B, tokens_BxL = loop
    carry, logits_BxV = step_fn(carry, previous_B)
    logits_BxV = forbid_pad_and_bos(logits_BxV, jnp.finfo(logits_BxV.dtype).min)
    token_B = jnp.where(done_B, PAD_ID, choose(logits_BxV, t))
    tokens_BxL = jax.lax.dynamic_update_slice(tokens_BxL, token_B[:, None], (0, t))
    return t + 1, carry, token_B, done_B | (token_B == EOS_ID), tokens_BxL

  loop = (
    jnp.int32(0),
    carry,
    jnp.full((batch_size,), BOS_ID, jnp.int32),
    jnp.zeros((batch_size,), bool),
    jnp.full((batch_size, max_len), PAD_ID, jnp.int32),
  )
  return jax.lax.while_loop(not_finished, one_token, loop)[-1]


def argmax(logits_BxV: jax.Array, chunk: int = 128) -> jax.Array:
  """jnp.argmax(logits, -1) (the first of tied maxima), in two stages: the best chunk of 128
  by a plain max, then the best token within it. XLA's CPU argmax over a whole 10k-token
  row is a slow two-operand reduction; a plain max is not."""
  batch_size, vocab_size = logits_BxV.shape
  if vocab_size <= chunk:
    return jnp.argmax(logits_BxV, -1).astype(jnp.int32)
  num_chunks = -(-vocab_size // chunk)
  chunks_BxNxC = jnp.pad(
    logits_BxV, ((0, 0), (0, num_chunks * chunk - vocab_size)), constant_values=-jnp.inf
  ).reshape(batch_size, num_chunks, chunk)
  best_chunk_B = jnp.argmax(jnp.max(chunks_BxNxC, -1), -1)
  best_in_chunk_B = jnp.argmax(
    jnp.take_along_axis(chunks_BxNxC, best_chunk_B[:, None, None], 1)[:, 0], -1
  )
  return (best_chunk_B * chunk + best_in_chunk_B).astype(jnp.int32)


def greedy_decode(step_fn: StepFn, carry: Any, batch_size: int, max_len: int) -> jax.Array:
  """The most likely token at every step."""
  DecodeSettings().check(max_len)
  choose = lambda logits_BxV, t: argmax(logits_BxV)
  return _decode_loop(step_fn, carry, batch_size, max_len, choose)


def _ordered_keys(x_BxV: jax.Array) -> jax.Array:
  """uint32 keys in the order of the float values: bisecting on keys bisects on values."""
  x_BxV = jnp.where(x_BxV == 0, 0.0, x_BxV.astype(jnp.float32))  # -0.0 and 0.0: one key.
  bits_BxV = jax.lax.bitcast_convert_type(x_BxV, jnp.uint32)
  return jnp.where(bits_BxV >> 31 == 1, ~bits_BxV, bits_BxV | jnp.uint32(1 << 31))


def _largest_threshold(keys_BxV: jax.Array, enough: Callable[[jax.Array], jax.Array]) -> jax.Array:
  """Per row, the largest key T such that enough(keys >= T) holds; `enough` must hold for the
  row's smallest key and be monotone. Exact after 32 halvings of the uint32 range."""

  def halve(_, bounds):
    low_B, high_B = bounds
    gap_B = high_B - low_B
    middle_B = low_B + gap_B // 2 + (gap_B & 1)
    ok_B = enough(keys_BxV >= middle_B[:, None])
    return jnp.where(ok_B, middle_B, low_B), jnp.where(ok_B, high_B, middle_B - 1)

  bounds = (jnp.min(keys_BxV, -1), jnp.max(keys_BxV, -1))
  return jax.lax.fori_loop(0, 32, halve, bounds)[0]


def filter_logits(logits_BxV: jax.Array, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
  """Keeps the top_k most likely tokens (0: all), then the smallest set whose probability
  reaches top_p (the nucleus, Holtzman et al. 2020); the rest get the lowest logit. Tokens tied
  with the last one kept are kept too.

  Both thresholds are found by bisection on the logits' values (32 counting passes over the
  vocabulary) rather than by sorting it: XLA's CPU sort and top_k of a 10k vocabulary cost
  more than the whole decoding step.
  """
  lowest = jnp.finfo(logits_BxV.dtype).min
  if top_k and top_k < logits_BxV.shape[-1]:
    keys_BxV = _ordered_keys(logits_BxV)
    kth_largest_B = _largest_threshold(keys_BxV, lambda kept: jnp.sum(kept, -1) >= top_k)
    logits_BxV = jnp.where(keys_BxV >= kth_largest_B[:, None], logits_BxV, lowest)
  if top_p < 1.0:
    keys_BxV = _ordered_keys(logits_BxV)
    probs_BxV = jax.nn.softmax(logits_BxV, axis=-1)
    smallest_kept_B = _largest_threshold(
      keys_BxV, lambda kept: jnp.sum(jnp.where(kept, probs_BxV, 0.0), -1) >= top_p
    )
    logits_BxV = jnp.where(keys_BxV >= smallest_kept_B[:, None], logits_BxV, lowest)
  return logits_BxV


def inverse_cdf_sample(probs_BxV: jax.Array, uniform_B: jax.Array) -> jax.Array:
  """The token whose cumulative-probability interval holds 1 - u, for u ~ U[0, 1) per row.

  One uniform per row and step instead of the V Gumbel draws of `jax.random.categorical`, which
  dominate a sampling step on CPU. Tokens of probability 0 are never chosen: their interval is
  empty, and 1 - u > 0 rules out the first token's empty interval at 0.
  """
  cdf_BxV = jnp.cumsum(probs_BxV, -1)
  threshold_Bx1 = (1.0 - uniform_B[:, None]) * cdf_BxV[:, -1:]
  return jnp.sum(cdf_BxV < threshold_Bx1, -1).astype(jnp.int32)


def sample_decode(
  step_fn: StepFn,
  carry: Any,
  batch_size: int,
  max_len: int,
  rng: jax.Array,
  temperature: float = 1.0,
  top_k: int = 0,
  top_p: float = 1.0,
) -> jax.Array:
  """Ancestral sampling from softmax(logits / temperature), optionally restricted to the top_k
  tokens and/or the top_p nucleus.

  `rng` is one key, split into one key per row, or a [batch_size] array of per-row keys. Row i's
  tokens depend only on its own key and state, so a batch samples what its rows would alone.
  """
  DecodeSettings("sample", temperature, top_k, top_p).check(max_len)
  keys_B = jax.random.split(rng, batch_size) if rng.ndim == 0 else rng

  def choose(logits_BxV, t):
    probs_BxV = jax.nn.softmax(filter_logits(logits_BxV / temperature, top_k, top_p), -1)
    uniform_B = jax.vmap(lambda key: jax.random.uniform(jax.random.fold_in(key, t)))(keys_B)
    return inverse_cdf_sample(probs_BxV, uniform_B)

  return _decode_loop(step_fn, carry, batch_size, max_len, choose)


# ---- Beam search -------------------------------------------------------------------------


class Beams(NamedTuple):
  """The beam_size best hypotheses per input, best first."""

  tokens_BxKxL: jax.Array  # Each hypothesis: its tokens, its EOS (if reached), then PAD.
  scores_BxK: jax.Array  # log p(tokens) / length_penalty(length, ...): what the ranking uses.
  log_probs_BxK: jax.Array  # log p(tokens), the raw sum over its tokens (EOS included).


def length_penalty(length: jax.Array, alpha: float, norm: str = "gnmt") -> jax.Array:
  """What a hypothesis's log-probability is divided by: GNMT's ((5 + length) / 6) ** alpha
  (Wu et al. 2016; alpha = 0 ranks by log-probability), or with norm "average" the length."""
  if norm == "average":
    return jnp.asarray(length, jnp.float32)
  return ((5.0 + length) / 6.0) ** alpha


def _take_rows(x_BxNx_: jax.Array, index_BxM: jax.Array) -> jax.Array:
  """x[b, index[b, m]] for every b, m."""
  return jnp.take_along_axis(
    x_BxNx_, index_BxM.reshape(index_BxM.shape + (1,) * (x_BxNx_.ndim - 2)), axis=1
  )


class _BeamLoop(NamedTuple):
  """The while_loop state of beam search: K live and K finished hypotheses per input."""

  t: jax.Array  # Tokens decoded so far.
  carry: Any  # The decoder state of each live hypothesis, [B * K, ...].
  live_tokens_BxKxL: jax.Array
  live_log_probs_BxK: jax.Array
  finished_tokens_BxKxL: jax.Array
  finished_scores_BxK: jax.Array
  finished_log_probs_BxK: jax.Array
  num_finished_B: jax.Array


def _keep_best(scores_BxN: jax.Array, k: int, *rows_BxNx_: jax.Array) -> tuple[jax.Array, ...]:
  """The k best of N by score (best first), and the same rows of each other array."""
  best_scores_BxK, keep_BxK = jax.lax.top_k(scores_BxN, k)
  return (best_scores_BxK,) + tuple(_take_rows(x, keep_BxK) for x in rows_BxNx_)


def _beam_step(
  step_fn: StepFn,
  loop: _BeamLoop,
  beam_size: int,
  vocab_size: int,
  length_alpha: float,
  length_norm: str,
) -> _BeamLoop:
  """Extends every live hypothesis by every token; keeps the K best that end (finished, merged
  with the earlier finished by score) and the K best that do not (live, their parents' states)."""
  B, K, V = loop.num_finished_B.shape[0], beam_size, vocab_size  # pylint: disable=invalid-name
  neg_inf = jnp.float32(-jnp.inf)
  t = loop.t
  previous_BK = loop.live_tokens_BxKxL[:, :, jnp.maximum(t - 1, 0)].reshape(B * K)
  carry, logits_BKxV = step_fn(loop.carry, jnp.where(t == 0, BOS_ID, previous_BK))
  log_probs_BKxV = forbid_pad_and_bos(jax.nn.log_softmax(logits_BKxV.astype(jnp.float32)), neg_inf)
  candidates_BxKV = (loop.live_log_probs_BxK[:, :, None] + log_probs_BKxV.reshape(B, K, V)).reshape(
    B, K * V
  )
  # 2K candidates always hold K that do not end in EOS (at most K of them can be EOS).
  top_log_probs_Bx2K, top_index_Bx2K = jax.lax.top_k(candidates_BxKV, 2 * K)
  parent_Bx2K, token_Bx2K = top_index_Bx2K // V, top_index_Bx2K % V
  tokens_Bx2KxL = jax.lax.dynamic_update_slice(
    _take_rows(loop.live_tokens_BxKxL, parent_Bx2K), token_Bx2K[:, :, None], (0, 0, t)
  )
  ends_Bx2K = token_Bx2K == EOS_ID

  # Finished: EOS candidates ranked within the top K, merged with earlier finished by score.
  newly_finished_Bx2K = (
    ends_Bx2K & (jnp.arange(2 * K) < K)[None, :] & (top_log_probs_Bx2K > neg_inf)
  )
  penalty = length_penalty(t + 1.0, length_alpha, length_norm)
  new_scores_Bx2K = jnp.where(newly_finished_Bx2K, top_log_probs_Bx2K / penalty, neg_inf)
  finished_scores_BxK, finished_tokens_BxKxL, finished_log_probs_BxK = _keep_best(
    jnp.concatenate([loop.finished_scores_BxK, new_scores_Bx2K], 1),
    K,
    jnp.concatenate([loop.finished_tokens_BxKxL, tokens_Bx2KxL], 1),
    jnp.concatenate([loop.finished_log_probs_BxK, top_log_probs_Bx2K], 1),
  )

  # Live: the K best candidates that do not end in EOS, with their parents' states.
  live_log_probs_BxK, live_Bx2K = jax.lax.top_k(
    jnp.where(ends_Bx2K, neg_inf, top_log_probs_Bx2K), K
  )
  parent_rows_BK = (
    K * jnp.arange(B)[:, None] + jnp.take_along_axis(parent_Bx2K, live_Bx2K, 1)
  ).reshape(-1)
  return _BeamLoop(
    t + 1,
    jax.tree.map(lambda x: x[parent_rows_BK], carry),
    _take_rows(tokens_Bx2KxL, live_Bx2K),
    live_log_probs_BxK,
    finished_tokens_BxKxL,
    finished_scores_BxK,
    finished_log_probs_BxK,
    loop.num_finished_B + jnp.sum(newly_finished_Bx2K, 1),
  )


def beam_search(
  step_fn: StepFn,
  carry: Any,
  batch_size: int,
  max_len: int,
  beam_size: int,
  length_alpha: float = 0.6,
  length_norm: str = "gnmt",
) -> Beams:
  """Beam search with per-hypothesis EOS handling and length normalisation.

  Every step extends the K = beam_size live hypotheses of each input by every token and ranks
  the K * V candidates by log-probability. Candidates ending in EOS among the top K are
  finished (scored log p / length_penalty); the K best not ending in EOS stay live, their
  recurrent state gathered from their parent's. An input is done once K hypotheses have
  finished; at max_len the live ones count as finished too (cut, like greedy's). With K = 1
  and alpha = 0 this is exactly greedy decoding.
  """
  vocab_size = _vocab_size(step_fn, carry, batch_size)
  DecodeSettings(
    "beam", beam_size=beam_size, length_alpha=length_alpha, length_norm=length_norm
  ).check(max_len, vocab_size)
  B, K = batch_size, beam_size  # pylint: disable=invalid-name
  neg_inf = jnp.float32(-jnp.inf)
  empty_BxKxL = jnp.full((B, K, max_len), PAD_ID, jnp.int32)
  only_first_live_BxK = jnp.broadcast_to(jnp.where(jnp.arange(K) == 0, 0.0, neg_inf), (B, K))
  loop = _BeamLoop(
    jnp.int32(0),
    jax.tree.map(lambda x: jnp.repeat(x, K, axis=0), carry),
    empty_BxKxL,
    only_first_live_BxK,
    empty_BxKxL,
    jnp.full((B, K), neg_inf),
    jnp.full((B, K), neg_inf),
    jnp.zeros((B,), jnp.int32),
  )
  loop = jax.lax.while_loop(
    lambda loop: (loop.t < max_len) & jnp.any(loop.num_finished_B < K),
    lambda loop: _beam_step(step_fn, loop, K, vocab_size, length_alpha, length_norm),
    loop,
  )

  # Hypotheses still live at max_len end there, like greedy's; if the loop stopped early they
  # are unfinished and take no part.
  at_max_len_penalty = length_penalty(jnp.float32(max_len), length_alpha, length_norm)
  live_scores_BxK = jnp.where(
    loop.t >= max_len, loop.live_log_probs_BxK / at_max_len_penalty, neg_inf
  )
  scores_BxK, tokens_BxKxL, log_probs_BxK = _keep_best(
    jnp.concatenate([loop.finished_scores_BxK, live_scores_BxK], 1),
    K,
    jnp.concatenate([loop.finished_tokens_BxKxL, loop.live_tokens_BxKxL], 1),
    jnp.concatenate([loop.finished_log_probs_BxK, loop.live_log_probs_BxK], 1),
  )
  return Beams(tokens_BxKxL, scores_BxK, log_probs_BxK)


def decode(
  step_fn: StepFn,
  carry: Any,
  batch_size: int,
  max_len: int,
  settings: DecodeSettings,
  rng: jax.Array | None = None,
) -> jax.Array:
  """tokens_BxL by `settings.strategy`; beam search returns each input's best hypothesis."""
  if settings.strategy == "greedy":
    return greedy_decode(step_fn, carry, batch_size, max_len)
  if settings.strategy == "sample":
    settings.check_rng(rng)
    return sample_decode(
      step_fn, carry, batch_size, max_len, rng, settings.temperature, settings.top_k, settings.top_p
    )
  if settings.strategy == "beam":
    beams = beam_search(
      step_fn,
      carry,
      batch_size,
      max_len,
      settings.beam_size,
      settings.length_alpha,
      settings.length_norm,
    )
    return beams.tokens_BxKxL[:, 0]
  settings.check(max_len)  # Names the unknown strategy.
  raise AssertionError("unreachable")
