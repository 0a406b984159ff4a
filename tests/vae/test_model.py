"""Tests for textgen_jax.vae.model: tied embeddings; decoding steps = teacher forcing (LSTM, GRU)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from textgen_jax.losses import token_cross_entropy
from textgen_jax.models.tokens import shift_right
from textgen_jax.vae.model import SentenceVAE, SentenceVAEConfig, init_params

TARGETS = jnp.array([[5, 6, 7, 2, 0], [8, 9, 2, 0, 0]], jnp.int32)


def model(tie: bool, hidden_size: int = 16, **config) -> SentenceVAE:
  return SentenceVAE(
    SentenceVAEConfig(
      vocab_size=12,
      embed_dim=16,
      hidden_size=hidden_size,
      latent_size=3,
      tie_embeddings=tie,
      **config,
    )
  )


def decoder_nll(module: SentenceVAE, params, z_BxZ) -> jax.Array:
  def nll(module):
    logits = module.teacher_forced_logits(module.decoder_start(z_BxZ, 2), shift_right(TARGETS))
    return (token_cross_entropy(logits, TARGETS) * (TARGETS != 0)).sum()

  return module.apply(params, method=nll)


def test_tied_output_is_the_embedding_and_its_gradient_is_the_sum_of_both_uses():
  tied = model(True)
  params = init_params(tied, jax.random.key(0))
  assert set(params["params"]["output_layer"]) == {"bias"}  # No kernel of its own.
  # The same model untied, its output kernel a copy of the embedding, transposed.
  untied_params = jax.tree.map(lambda x: x, params)
  embedding_VxE = params["params"]["decoder_embedding"]["embedding"]
  untied_params["params"]["output_layer"] = {
    "kernel": embedding_VxE.T,
    "bias": params["params"]["output_layer"]["bias"] + 0.1,
  }
  params["params"]["output_layer"]["bias"] += 0.1  # Non-zero, so that adding it is tested.
  z_BxZ = jax.random.normal(jax.random.key(1), (2, 3))
  untied = model(False)
  np.testing.assert_allclose(
    decoder_nll(tied, params, z_BxZ), decoder_nll(untied, untied_params, z_BxZ), rtol=1e-6
  )
  grads = jax.grad(lambda p: decoder_nll(tied, p, z_BxZ))(params)["params"]
  untied_grads = jax.grad(lambda p: decoder_nll(untied, p, z_BxZ))(untied_params)["params"]
  input_use = untied_grads["decoder_embedding"]["embedding"]
  output_use = untied_grads["output_layer"]["kernel"].T
  assert np.abs(input_use).max() > 1e-4 and np.abs(output_use).max() > 1e-4  # Both uses count.
  np.testing.assert_allclose(
    grads["decoder_embedding"]["embedding"], input_use + output_use, rtol=1e-5, atol=1e-7
  )


@pytest.mark.parametrize(
  "config",
  [dict(), dict(cell="gru"), dict(cell="gru", kind="lm", decoder_layers=2)],
  ids=["lstm", "gru", "gru-lm-2layer"],
)
def test_tied_with_a_projection_decodes_step_by_step_as_teacher_forced(config):
  # 24 != 16: the outputs are projected to 16 first.
  tied = model(True, hidden_size=24, **config)
  params = init_params(tied, jax.random.key(2))
  assert params["params"]["output_layer"]["projection"]["kernel"].shape == (24, 16)
  assert "output_layer" in tied.decoder_modules()
  recurrent = params["params"]["decoder_lstm"]["forward_0"]["recurrent_kernel"]
  assert recurrent.shape == (24, (3 if config.get("cell") == "gru" else 4) * 24)
  z_BxZ = jax.random.normal(jax.random.key(3), (2, 3)) if tied.config.has_latent else None
  inputs_BxT = shift_right(TARGETS)
  state = tied.apply(params, z_BxZ, 2, method=SentenceVAE.decoder_start)
  teacher_forced = tied.apply(params, state, inputs_BxT, method=SentenceVAE.teacher_forced_logits)
  stepped = []
  for t in range(TARGETS.shape[1]):
    state, logits_BxV = tied.apply(params, state, inputs_BxT[:, t], method=SentenceVAE.decode_step)
    stepped.append(logits_BxV)
  np.testing.assert_allclose(jnp.stack(stepped, 1), teacher_forced, rtol=1e-5, atol=1e-5)
