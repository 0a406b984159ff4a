"""Token ids to model inputs: embeddings or one-hot rows, and teacher forcing's shifted inputs."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from textgen_jax.data.vocab import BOS_ID, PAD_ID


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
