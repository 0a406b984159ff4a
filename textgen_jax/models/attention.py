"""Attention over an encoder's outputs: Luong et al. 2015's global attention with dot and general
scores, and Bahdanau et al. 2015's additive score, in Luong's architecture (as OpenNMT's global
attention): the decoder's top hidden state h_t queries the encoder outputs m_s and

    a_ts = softmax_s(score(h_t, m_s))        over real source positions only
    c_t  = sum_s a_ts m_s                     the context
    h~_t = tanh(W_c [c_t; h_t])               the attentional vector, read by the output layer

    dot:       score = h_t . m_s               (m_s projected to h's size when they differ,
                                                e.g. a bidirectional encoder: there is no dot
                                                product between vectors of different sizes)
    general:   score = h_t . W_a m_s
    additive:  score = v . tanh(W_q h_t + W_k m_s)

The memory's side of each score (m_s, W_a m_s, W_k m_s) depends on the source alone, so it is
computed once per source (`Attention.memory`) and kept in the decoder's state while decoding.

Shape key: B batch, T decoder time, S source time, M memory (encoder output) size, H decoder
hidden size, K key size (H).
"""

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

KINDS = ("none", "dot", "general", "additive")


class Memory(NamedTuple):
  """What attention reads, per source: computed once by `Attention.memory`."""

  values_BxSxM: jax.Array  # The encoder's outputs, averaged into the context.
  keys_BxSxK: jax.Array  # The memory's side of the score (see the module docstring).
  mask_BxS: jax.Array  # True at real source positions; padding gets weight 0.


class Attention(nn.Module):
  """Scores, weights, context and the attentional vector h~ for queries [B, T, H]."""

  kind: str  # "dot", "general" or "additive".
  hidden_size: int  # The decoder's: the query's size and h~'s.
  memory_size: int  # The encoder outputs' size (2H for a bidirectional encoder).
  dtype: Any = jnp.float32  # matmul dtype.

  def setup(self):
    if self.kind not in KINDS[1:]:
      raise ValueError(f"unknown attention {self.kind!r}; choose one of {KINDS[1:]}")
    dense = lambda name, bias=False: nn.Dense(
      self.hidden_size, use_bias=bias, dtype=self.dtype, name=name
    )
    # Keys are the memory itself only for dot scores between vectors of one size.
    self.key_projection = (
      None
      if self.kind == "dot" and self.memory_size == self.hidden_size
      else dense("key_projection")
    )
    if self.kind == "additive":
      self.query_projection = dense("query_projection", bias=True)
      self.score_vector = nn.Dense(1, use_bias=False, dtype=self.dtype, name="score_vector")
    self.combine = dense("combine")

  def memory(self, values_BxSxM: jax.Array, lengths_B: jax.Array) -> Memory:
    """The memory of a batch of encoded sources (values at positions >= length are ignored)."""
    keys_BxSxK = values_BxSxM if self.key_projection is None else self.key_projection(values_BxSxM)
    mask_BxS = jnp.arange(values_BxSxM.shape[1])[None, :] < lengths_B[:, None]
    return Memory(values_BxSxM, keys_BxSxK, mask_BxS)

  def weights(self, query_BxTxH: jax.Array, memory: Memory) -> jax.Array:
    """a_BxTxS: each query's distribution over its source's real positions (0 on padding)."""
    if self.kind == "additive":
      hidden_BxTxSxK = jnp.tanh(
        self.query_projection(query_BxTxH)[:, :, None, :] + memory.keys_BxSxK[:, None, :, :]
      )
      scores_BxTxS = self.score_vector(hidden_BxTxSxK)[..., 0]
    else:
      scores_BxTxS = jnp.einsum(
        "bth,bsh->bts",
        query_BxTxH.astype(self.dtype),
        memory.keys_BxSxK.astype(self.dtype),
        preferred_element_type=jnp.float32,
      )
    mask_Bx1xS = memory.mask_BxS[:, None, :]
    scores_BxTxS = jnp.where(mask_Bx1xS, scores_BxTxS.astype(jnp.float32), -jnp.inf)
    # An empty source (length 0) attends to nothing: weights 0, context 0, not NaN.
    safe_BxTxS = jnp.where(jnp.any(mask_Bx1xS, -1, keepdims=True), scores_BxTxS, 0.0)
    return jnp.where(mask_Bx1xS, jax.nn.softmax(safe_BxTxS, axis=-1), 0.0)

  def __call__(self, query_BxTxH: jax.Array, memory: Memory) -> tuple[jax.Array, jax.Array]:
    """(h~_BxTxH, a_BxTxS) for each query."""
    weights_BxTxS = self.weights(query_BxTxH, memory)
    context_BxTxM = jnp.einsum(
      "bts,bsm->btm",
      weights_BxTxS.astype(self.dtype),
      memory.values_BxSxM.astype(self.dtype),
      preferred_element_type=jnp.float32,
    )
    attentional_BxTxH = jnp.tanh(
      self.combine(jnp.concatenate([context_BxTxM, query_BxTxH.astype(jnp.float32)], -1))
    )
    return attentional_BxTxH, weights_BxTxS
