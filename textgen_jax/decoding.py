"""Autoregressive decoding compiled as one program: greedy, and sampling with temperature,
top-k and top-p (nucleus) filtering.

A decoder is described by a pure `step_fn(carry, tokens_B) -> (carry, logits_BxV)`; the carry is
the recurrent state (the encoder's final state for seq2seq, zeros for a language model). The
whole loop is a `lax.while_loop` that exits once every sequence has emitted EOS or max_len
tokens, so a batch costs one dispatch, not one per token. Call these inside `jax.jit`.

Output: tokens_BxL int32, each row the generated tokens, its EOS (if reached), then PAD.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp

from textgen_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID
from textgen_jax.errors import TextgenError

StepFn = Callable[[Any, jax.Array], tuple[Any, jax.Array]]
ChooseFn = Callable[[jax.Array, jax.Array], jax.Array]


def _check_settings(max_len: int, temperature: float | None = None, top_k: int = 0,
                    top_p: float = 1.0) -> None:
  if max_len < 1:
    raise TextgenError(f"max_len must be at least 1, got {max_len}")
  if temperature is not None and not temperature > 0:
    raise TextgenError(f"temperature must be > 0, got {temperature} (use greedy decoding for 0)")
  if top_k < 0:
    raise TextgenError(f"top_k must be 0 (off) or positive, got {top_k}")
  if not 0.0 < top_p <= 1.0:
    raise TextgenError(f"top_p must be in (0, 1], got {top_p}")


def _decode_loop(step_fn: StepFn, carry: Any, batch_size: int, max_len: int, choose: ChooseFn,
                 rng: jax.Array) -> jax.Array:
  """Runs step_fn until all rows are done; `choose(logits_BxV, key) -> tokens_B`."""

  def not_finished(loop):
    t, _, _, done_B, _ = loop
    return (t < max_len) & ~jnp.all(done_B)

  def one_token(loop):
    t, carry, previous_B, done_B, tokens_BxL = loop
    carry, logits_BxV = step_fn(carry, previous_B)
    # PAD and BOS are never targets; forbid them so a row can only end with EOS or max_len.
    logits_BxV = logits_BxV.at[:, jnp.array([PAD_ID, BOS_ID])].set(jnp.finfo(logits_BxV.dtype).min)
    token_B = jnp.where(done_B, PAD_ID, choose(logits_BxV, jax.random.fold_in(rng, t)))
    tokens_BxL = jax.lax.dynamic_update_slice(tokens_BxL, token_B[:, None], (0, t))
    return t + 1, carry, token_B, done_B | (token_B == EOS_ID), tokens_BxL

  loop = (jnp.int32(0), carry, jnp.full((batch_size,), BOS_ID, jnp.int32),
          jnp.zeros((batch_size,), bool), jnp.full((batch_size, max_len), PAD_ID, jnp.int32))
  return jax.lax.while_loop(not_finished, one_token, loop)[-1]


def greedy_decode(step_fn: StepFn, carry: Any, batch_size: int, max_len: int) -> jax.Array:
  """The most likely token at every step."""
  _check_settings(max_len)
  choose = lambda logits_BxV, key: jnp.argmax(logits_BxV, -1).astype(jnp.int32)
  return _decode_loop(step_fn, carry, batch_size, max_len, choose, jax.random.key(0))


def filter_logits(logits_BxV: jax.Array, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
  """Keeps the top_k most likely tokens (0: all), then the smallest set whose probability
  reaches top_p (the nucleus, Holtzman et al. 2020); the rest get the lowest logit."""
  lowest = jnp.finfo(logits_BxV.dtype).min
  if top_k and top_k < logits_BxV.shape[-1]:
    kth_largest_Bx1 = jax.lax.top_k(logits_BxV, top_k)[0][:, -1:]
    logits_BxV = jnp.where(logits_BxV < kth_largest_Bx1, lowest, logits_BxV)
  if top_p < 1.0:
    sorted_BxV = -jnp.sort(-logits_BxV, axis=-1)
    probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
    mass_before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV
    # The most likely token always stays; a token stays while the mass above it is < top_p.
    smallest_kept_Bx1 = jnp.min(jnp.where(mass_before_BxV < top_p, sorted_BxV, jnp.inf), -1,
                                keepdims=True)
    logits_BxV = jnp.where(logits_BxV < smallest_kept_Bx1, lowest, logits_BxV)
  return logits_BxV


def sample_decode(step_fn: StepFn, carry: Any, batch_size: int, max_len: int, rng: jax.Array,
                  temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
  """Ancestral sampling from softmax(logits / temperature), optionally restricted to the top_k
  tokens and/or the top_p nucleus, with an explicit key."""
  _check_settings(max_len, temperature, top_k, top_p)

  def choose(logits_BxV, key):
    logits_BxV = filter_logits(logits_BxV / temperature, top_k, top_p)
    return jax.random.categorical(key, logits_BxV, -1).astype(jnp.int32)

  return _decode_loop(step_fn, carry, batch_size, max_len, choose, rng)
