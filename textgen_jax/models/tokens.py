"""Token ids to model inputs (embeddings or one-hot rows), teacher forcing's shifted inputs, and
the output layer of tied embeddings."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from textgen_jax.data.vocab import BOS_ID, PAD_ID
from textgen_jax.models.rnn import dense_dot_general, transposed


def shift_right(targets_BxT: jax.Array) -> jax.Array:
  """Teacher forcing inputs: BOS followed by targets[:-1]."""
  bos_Bx1 = jnp.full((targets_BxT.shape[0], 1), BOS_ID, targets_BxT.dtype)
  return jnp.concatenate([bos_Bx1, targets_BxT[:, :-1]], axis=1)


class TokenInputs(nn.Module):
  """Token ids to input vectors: a learned embedding, or fixed one-hot rows."""

  vocab_size: int
  embed_dim: int
  input_encoding: str = "embedding"

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    if self.input_encoding == "one_hot":
      return jax.nn.one_hot(tokens, self.vocab_size) * (tokens != PAD_ID)[..., None]
    return nn.Embed(self.vocab_size, self.embed_dim, name="embedding")(tokens)


class TiedOutput(nn.Module):
  """The output layer of tied embeddings: logits = x E^T + bias, E the decoder's input
  embedding (passed in, not a parameter here). Its own parameters are the bias and, where the
  decoder's outputs are not embedding-sized, a Dense `projection` to that size first."""

  vocab_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_xH: jax.Array, embedding_VxE: jax.Array) -> jax.Array:
    embed_dim = embedding_VxE.shape[-1]
    x_xE = x_xH
    if x_xH.shape[-1] != embed_dim:
      x_xE = nn.Dense(
        embed_dim, dtype=self.dtype, dot_general=dense_dot_general, name="projection"
      )(x_xH)
    bias_V = self.param("bias", nn.initializers.zeros_init(), (self.vocab_size,))
    return dense_dot_general(
      x_xE.astype(self.dtype),
      transposed(embedding_VxE).astype(self.dtype),
      (((x_xE.ndim - 1,), (0,)), ((), ())),
    ) + bias_V.reshape((1,) * (x_xE.ndim - 1) + (-1,))
