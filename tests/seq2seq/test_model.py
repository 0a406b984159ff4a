"""Tests for textgen_jax.seq2seq.model (and the shared teacher-forcing shift).

Padding invariance (padded and unpadded batches agree), teacher-forcing shift and causality,
and agreement between the teacher-forced pass and one-token decoding steps.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from textgen_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID
from textgen_jax.losses import token_cross_entropy
from textgen_jax.models.rnn import gate_count
from textgen_jax.models.tokens import shift_right
from textgen_jax.data.vocab import Vocabulary
from textgen_jax.errors import TextgenError
from textgen_jax.seq2seq.model import Seq2Seq, Seq2SeqConfig, build_model, init_params
from tests.helpers import random_like

B, S, T, E, H, V = 3, 7, 7, 8, 16, 11  # Two real rows and one all-PAD filler row.
FIRST_REAL_ID = 4  # Ids 0-3 are PAD, BOS, EOS, UNK.

ENCODER_VARIANTS = {
  # More decoder than encoder layers: the top encoder layer starts the extra decoder layer.
  "uni-2layer": dict(bidirectional=False, encoder_layers=2, decoder_layers=3),
  "bi-2layer": dict(bidirectional=True, encoder_layers=2, decoder_layers=2),
  "bi-3layer-onehot": dict(
    bidirectional=True, encoder_layers=3, decoder_layers=2, input_encoding="one_hot"
  ),
  # Output layer tied to the target embedding, the outputs projected from H = 16 to E = 8.
  "uni-tied": dict(bidirectional=False, tie_embeddings=True),
  # The GRU's carry is (h,): the bridge maps h alone.
  "bi-2layer-gru": dict(bidirectional=True, encoder_layers=2, decoder_layers=3, cell="gru"),
}

# Two examples of different lengths (target lengths count the EOS).
SOURCES = [np.array([4, 5, 6], np.int32), np.array([7, 8, 9, 10, 4], np.int32)]
TARGETS = [np.array([5, 6, EOS_ID], np.int32), np.array([7, 8, 9, 10, EOS_ID], np.int32)]
LENGTHS = np.array([3, 5, 0], np.int32)


def make_model(**config_kwargs) -> Seq2Seq:
  return Seq2Seq(
    Seq2SeqConfig(
      source_vocab_size=V, target_vocab_size=V, embed_dim=E, hidden_size=H, **config_kwargs
    )
  )


def random_params(model, seed=0):
  """Parameters of the model's shapes, drawn on the host: no init program to compile.

  Any values exercise the model math these tests check; init_params itself is exercised by the
  training and translator tests.
  """
  return random_like(jax.eval_shape(functools.partial(init_params, model), jax.random.key(0)), seed)


# Modules are hashable, so these compile once per (model config, shape) for the whole module.
@functools.partial(jax.jit, static_argnums=0)
def forward(model, params, inputs, lengths, targets):
  """(encoder final state, teacher-forced logits)."""
  carries = model.apply(params, inputs, lengths, method=Seq2Seq.encode)
  return carries, model.apply(params, inputs, lengths, targets)


@functools.partial(jax.jit, static_argnums=0)
def decode_step(model, params, carries, tokens):
  return model.apply(params, carries, tokens, method=Seq2Seq.decode_step)


def per_sequence_nll(logits, targets):
  """Summed cross-entropy of each row's non-PAD targets."""
  nll = token_cross_entropy(logits, targets)
  return np.asarray(jnp.sum(nll * (targets != PAD_ID), -1))


@pytest.fixture(scope="module", params=list(ENCODER_VARIANTS), ids=list(ENCODER_VARIANTS))
def model_and_params(request):
  model = make_model(**ENCODER_VARIANTS[request.param])
  return model, random_params(model)


def pad_rows(rows, length, fill=PAD_ID, num_rows=B):
  out = np.full((num_rows, length), fill, np.int32)
  for i, row in enumerate(rows):
    out[i, : len(row)] = row
  return out


def random_targets(seed, shape=(B, T)):
  return np.random.default_rng(seed).integers(FIRST_REAL_ID, V, shape).astype(np.int32)


@pytest.mark.slow
def test_encoder_state_and_loss_are_padding_invariant(model_and_params):
  model, params = model_and_params
  alone = [
    forward(model, params, s[None], np.array([len(s)], np.int32), t[None])
    for s, t in zip(SOURCES, TARGETS)
  ]
  targets = pad_rows(TARGETS, T)
  for fill in (PAD_ID, FIRST_REAL_ID + 3):
    # Whatever sits past a row's length must not matter: masking follows the lengths.
    carries, logits = forward(model, params, pad_rows(SOURCES, S, fill), LENGTHS, targets)
    assert len(carries) == model.config.decoder_layers
    for layer, carry in enumerate(carries):  # (c, h) for the LSTM, (h,) for the GRU.
      assert len(carry) == (2 if model.config.cell == "lstm" else 1)
      for part, alone_part in zip(carry, zip(*(row[0][layer] for row in alone))):
        assert part.shape == (B, H)
        for row in range(len(SOURCES)):
          np.testing.assert_allclose(part[row], alone_part[row][0], rtol=1e-5, atol=1e-6)
    alone_nll = [
      per_sequence_nll(row_logits, t[None])[0] for (_, row_logits), t in zip(alone, TARGETS)
    ]
    together_nll = per_sequence_nll(logits, targets)
    np.testing.assert_allclose(together_nll[:2], alone_nll, rtol=1e-5, atol=1e-6)
    assert together_nll[2] == 0.0  # The filler row counts nowhere.
    assert all(x > 0 for x in alone_nll)


def test_encoder_state_depends_on_every_real_token(model_and_params):
  """The invariance test could pass with an encoder that ignores its input; this one cannot."""
  model, params = model_and_params
  inputs, targets = pad_rows(SOURCES, S), pad_rows(TARGETS, T)
  reference, _ = forward(model, params, inputs, LENGTHS, targets)
  for position in (0, len(SOURCES[0]) - 1):
    changed = inputs.copy()
    changed[0, position] = FIRST_REAL_ID + 6
    carries, _ = forward(model, params, changed, LENGTHS, targets)
    assert not np.allclose(carries[-1][-1][0], reference[-1][-1][0], atol=1e-6)
    np.testing.assert_array_equal(carries[-1][-1][1], reference[-1][-1][1])


def test_extra_decoder_layers_start_from_the_top_encoder_layer():
  model = make_model(**ENCODER_VARIANTS["uni-2layer"])
  carries, _ = forward(
    model, random_params(model), pad_rows(SOURCES, S), LENGTHS, pad_rows(TARGETS, T)
  )
  assert len(carries) == 3
  for top, extra in zip(carries[1], carries[2]):
    np.testing.assert_array_equal(extra, top)
  assert not np.allclose(carries[0][1], carries[1][1])


def test_shift_right():
  targets = jnp.array([[5, 6, 7, EOS_ID, PAD_ID], [8, EOS_ID, PAD_ID, PAD_ID, PAD_ID]], jnp.int32)
  shifted = shift_right(targets)
  np.testing.assert_array_equal(shifted, [[BOS_ID, 5, 6, 7, EOS_ID], [BOS_ID, 8, EOS_ID, 0, 0]])
  assert shifted.dtype == targets.dtype and shifted.shape == targets.shape


def test_logits_are_causal_in_the_targets(model_and_params):
  model, params = model_and_params
  inputs, targets = pad_rows(SOURCES, S), random_targets(0)
  logits = np.asarray(forward(model, params, inputs, LENGTHS, targets)[1])
  assert logits.shape == (B, T, V) and logits.dtype == np.float32
  for t in range(T):
    changed = targets.copy()
    changed[:, t:] = (targets[:, t:] - FIRST_REAL_ID + 1) % (V - FIRST_REAL_ID) + FIRST_REAL_ID
    changed_logits = np.asarray(forward(model, params, inputs, LENGTHS, changed)[1])
    # Position t is predicted from BOS and targets[:t] only.
    np.testing.assert_allclose(changed_logits[:, : t + 1], logits[:, : t + 1], rtol=1e-6, atol=1e-6)
    if t + 1 < T:
      assert not np.allclose(changed_logits[:, t + 1 :], logits[:, t + 1 :], atol=1e-6)


@functools.partial(jax.jit, static_argnums=0)
def decode_step_with_table(model, params, carries, tokens):
  table = model.apply(params, method=Seq2Seq.decoder_input_gates)
  return model.apply(params, carries, tokens, table, method=Seq2Seq.decode_step)


@pytest.mark.parametrize("input_table", [False, True], ids=["embedding", "input_table"])
def test_decode_steps_match_teacher_forced_logits(model_and_params, input_table):
  """Also from the [V, 4H] input table: the lookup is the embedding and input matmul it
  replaces (one-hot inputs too)."""
  model, params = model_and_params
  assert model.apply(params, method=Seq2Seq.decoder_input_gates).shape == (
    V,
    gate_count(model.config.cell) * H,
  )
  inputs, targets = pad_rows(SOURCES, S), random_targets(1)
  carries, logits = forward(model, params, inputs, LENGTHS, targets)
  decoder_inputs = np.asarray(shift_right(jnp.asarray(targets)))
  step = decode_step_with_table if input_table else decode_step
  for t in range(T):
    carries, step_logits = step(model, params, carries, decoder_inputs[:, t])
    np.testing.assert_allclose(step_logits, logits[:, t], rtol=1e-5, atol=1e-5)


def test_scan_unroll_changes_nothing_but_speed():
  model, unrolled = make_model(encoder_layers=2), make_model(encoder_layers=2, scan_unroll=3)
  params = random_params(model)
  inputs, targets = pad_rows(SOURCES, S), random_targets(3)
  carries, logits = forward(model, params, inputs, LENGTHS, targets)
  unrolled_carries, unrolled_logits = forward(unrolled, params, inputs, LENGTHS, targets)
  np.testing.assert_allclose(unrolled_logits, logits, rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(unrolled_carries), jax.tree.leaves(carries)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def param_shapes(**config_kwargs):
  model = make_model(**config_kwargs)
  return jax.eval_shape(functools.partial(init_params, model), jax.random.key(0))["params"]


def test_bidirectional_bridge_and_parameter_shapes():
  params = param_shapes(**ENCODER_VARIANTS["bi-2layer"])
  assert params["bridge_c_0"]["kernel"].shape == (2 * H, H)
  assert params["bridge_h_1"]["kernel"].shape == (2 * H, H)
  assert "backward_1" in params["encoder"]
  assert params["encoder"]["forward_0"]["recurrent_kernel"].shape == (H, 4 * H)
  assert params["encoder"]["forward_1"]["input_projection"]["kernel"].shape == (2 * H, 4 * H)
  assert params["output_layer"]["kernel"].shape == (H, V)
  uni = param_shapes(**ENCODER_VARIANTS["uni-2layer"])
  assert not any(name.startswith("bridge") for name in uni)
  assert "backward_0" not in uni["encoder"]
  one_hot = param_shapes(**ENCODER_VARIANTS["bi-3layer-onehot"])
  assert one_hot["encoder"]["forward_0"]["input_projection"]["kernel"].shape == (V, 4 * H)
  assert "source_inputs" not in one_hot  # Fixed one-hot rows have no parameters.
  assert params["source_inputs"]["embedding"]["embedding"].shape == (V, E)


@functools.partial(jax.jit, static_argnums=(0, 5))
def logits_with_dropout(model, params, inputs, lengths, targets, deterministic, rng):
  return model.apply(
    params, inputs, lengths, targets, deterministic=deterministic, rngs={"dropout": rng}
  )


@pytest.mark.parametrize(
  "kwargs",
  [{}, dict(attention="additive", input_feeding=True, decoder_layers=2)],
  ids=["plain", "attention-feeding-loop"],
)
def test_dropout_only_when_not_deterministic(kwargs):
  """With input feeding too, whose teacher-forced pass draws a dropout key per step."""
  model = make_model(dropout_rate=0.5, **kwargs)
  params = random_params(model)
  apply = functools.partial(
    logits_with_dropout, model, params, pad_rows(SOURCES, S), LENGTHS, random_targets(2)
  )
  plain = apply(True, jax.random.key(1))
  np.testing.assert_array_equal(apply(True, jax.random.key(2)), plain)
  dropped = apply(False, jax.random.key(1))
  np.testing.assert_array_equal(apply(False, jax.random.key(1)), dropped)
  assert not np.allclose(dropped, plain)
  assert not np.allclose(apply(False, jax.random.key(2)), dropped)


def test_bfloat16_matmuls_stay_close_to_float32():
  f32 = make_model(dtype="float32")
  bf16 = make_model(dtype="bfloat16")
  params = random_params(f32)
  inputs, targets = pad_rows(SOURCES, S), random_targets(3)
  reference = forward(f32, params, inputs, LENGTHS, targets)[1]
  logits = forward(bf16, params, inputs, LENGTHS, targets)[1]
  assert logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  np.testing.assert_allclose(logits, reference, atol=5e-2)
  assert not np.array_equal(logits, reference)


@pytest.mark.parametrize("attention", ["none", "additive"])
def test_tied_output_is_the_target_embedding_and_its_gradient_is_the_sum_of_both_uses(attention):
  kwargs = dict(embed_dim=H, attention=attention)  # E = H: no projection.
  tied, untied = (
    Seq2Seq(Seq2SeqConfig(V, V, hidden_size=H, tie_embeddings=tie, **kwargs))
    for tie in (True, False)
  )
  params = random_params(tied)
  assert set(params["params"]["output_layer"]) == {"bias"}
  embedding_VxE = params["params"]["target_inputs"]["embedding"]["embedding"]
  untied_params = jax.tree.map(lambda x: x, params)
  untied_params["params"]["output_layer"] = {
    "kernel": embedding_VxE.T,
    "bias": params["params"]["output_layer"]["bias"],
  }
  inputs, targets = pad_rows(SOURCES, S), pad_rows(TARGETS, T)

  def loss(model, params):
    logits = model.apply(params, inputs, LENGTHS, targets)
    return jnp.sum(token_cross_entropy(logits, targets) * (targets != PAD_ID))

  np.testing.assert_allclose(loss(tied, params), loss(untied, untied_params), rtol=1e-6)
  grads = jax.grad(functools.partial(loss, tied))(params)["params"]
  untied_grads = jax.grad(functools.partial(loss, untied))(untied_params)["params"]
  input_use = untied_grads["target_inputs"]["embedding"]["embedding"]
  output_use = untied_grads["output_layer"]["kernel"].T
  assert np.abs(input_use).max() > 1e-4 and np.abs(output_use).max() > 1e-4
  np.testing.assert_allclose(
    grads["target_inputs"]["embedding"]["embedding"], input_use + output_use, rtol=1e-5, atol=1e-6
  )


def test_shared_embeddings_are_one_table_read_by_both_sides():
  shared = make_model(share_embeddings=True)
  params = random_params(shared)
  assert "source_inputs" not in params["params"]
  inputs = pad_rows(SOURCES, S)
  encode = lambda p: shared.apply(p, inputs, LENGTHS, method=Seq2Seq.encode)
  changed = jax.tree.map(lambda x: x, params)
  table = params["params"]["target_inputs"]["embedding"]["embedding"]
  changed["params"]["target_inputs"]["embedding"]["embedding"] = table + 1.0
  # The encoder reads the target side's table: changing it changes the source's encoding.
  assert not np.allclose(jax.tree.leaves(encode(params))[0], jax.tree.leaves(encode(changed))[0])
  with pytest.raises(TextgenError, match="^--config.model.share_embeddings=True needs one voc"):
    build_model(
      ml_collections.ConfigDict({"share_embeddings": True}),
      Vocabulary.build([["a"]]),
      Vocabulary.build([["b"]]),
    )
