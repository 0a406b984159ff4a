"""The decoders decode.py times (synthetic or from a trained workdir), and the implementations it
times them with: the compiled engine, the naive per-token loop, and the PyTorch decoder.

Synthetic models have random weights with the EOS logit pushed down, so every sequence decodes
max_len tokens: a fixed amount of work per call.
"""

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from experiments.bench import common
from experiments.bench.shapes import DECODE_SHAPES, attention_step_costs, decoding_step_costs
from textgen_jax import decoding
from textgen_jax import workdir as workdir_lib
from textgen_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID
from textgen_jax.decoding import DecodeSettings
from textgen_jax.errors import TextgenError
from textgen_jax.seq2seq import model as seq2seq_model
from textgen_jax.seq2seq.model import Seq2Seq, Seq2SeqConfig, uses_decoding_table
from textgen_jax.vae import model as vae_model
from textgen_jax.vae.model import SentenceVAE, SentenceVAEConfig

# --input_table: whether seq2seq decoders look layer 0's input gates up in a table (None: as the
# Translator decides); a trained workdir gets one decoder, so "both" is "auto" there.
INPUT_TABLE_CHOICES = {"auto": [None], "on": [True], "off": [False], "both": [True, False]}
WORKDIR_INPUT_TABLE = {"auto": None, "on": True, "off": False, "both": None}


@dataclasses.dataclass(frozen=True)
class DecoderUnderTest:
  """A decoder's step function, its start state and its per-token cost."""

  name: str
  dtype: str
  vocab_size: int
  max_len: int
  step_fn: Callable[[Any, Any, jax.Array], tuple[Any, jax.Array]]  # (weights, carry, tokens)
  weights: Any  # Parameters (and precomputed tables) the step reads.
  start: Callable[[int, jax.Array], Any]  # (batch_size, key) -> carry
  flops_per_token: float  # Matmul FLOPs of one decoding step for one row.
  weight_bytes: float  # Bytes of weights a step reads (once, whatever the batch size).
  sizes: dict[str, int]
  prepare_s: float = 0.0
  weight_read_bytes_per_s: float | None = None  # Measured for a buffer of weight_bytes.


def output_layer(model: nn.Module) -> str:
  """The decoder's vocabulary projection: its module whose bias has a vocabulary dimension."""
  (name,) = [
    module for module in model.decoder_modules() if (module, "bias") in model.VOCABULARY_MATRICES
  ]
  return name


def _push_down_eos(params: Any, model: nn.Module) -> Any:
  """Random weights rarely pick EOS, but may: make every sequence run max_len steps."""
  params = jax.tree.map(lambda x: x, params)
  layer = params["params"][output_layer(model)]
  layer["bias"] = layer["bias"].at[EOS_ID].set(-1e9)
  return params


def seq2seq_decoder(
  sizes: dict[str, int],
  dtype: str,
  input_table: bool | None,
  params: Any = None,
  model: Seq2Seq | None = None,
  attention: str = "none",
) -> DecoderUnderTest:
  """input_table: look layer 0's input gates up in a table; None: as Translator decides.
  attention: a synthetic model's ("general": Luong's, with input feeding, over a memory of
  sizes["source_length"] positions encoded from random source tokens)."""
  if model is None:
    model = Seq2Seq(
      Seq2SeqConfig(
        sizes["vocab_size"],
        sizes["vocab_size"],
        sizes["embed_dim"],
        sizes["hidden_size"],
        decoder_layers=sizes["num_layers"],
        dtype=dtype,
        attention=attention,
        input_feeding=attention != "none",
      )
    )
    params = _push_down_eos(seq2seq_model.init_params(model, jax.random.key(0)), model)
  cfg = model.config
  prepare_s = 0.0
  if input_table is None:
    input_table = uses_decoding_table(cfg)
  if input_table:
    timing, compiled = common.time_jitted(
      functools.partial(model.apply, method=Seq2Seq.decoder_input_gates),
      params,
      min_calls=1,
      min_seconds=0.0,
    )
    prepare_s = timing.compile_s + timing.median_s
    weights = (params, compiled(params))
  else:
    weights = (params, None)

  def step_fn(weights, carries, tokens_B):
    params, table = weights
    return model.apply(params, carries, tokens_B, table, method=Seq2Seq.decode_step)

  encode = jax.jit(functools.partial(model.apply, method=Seq2Seq.encode))

  def start(batch_size, key):
    if cfg.attention != "none":  # The memory (and state) of random sources.
      source_length = sizes.get("source_length", 16)
      sources_BxS = jax.random.randint(key, (batch_size, source_length), 4, cfg.source_vocab_size)
      return encode(params, sources_BxS, jnp.full((batch_size,), source_length))
    keys = jax.random.split(key, cfg.decoder_layers)
    return [
      (c, jnp.tanh(c)) for c in (jax.random.normal(k, (batch_size, cfg.hidden_size)) for k in keys)
    ]

  itemsize = jnp.dtype(dtype).itemsize
  flops, weight_bytes = decoding_step_costs(
    cfg.embed_dim, cfg.hidden_size, cfg.decoder_layers, cfg.target_vocab_size, itemsize, input_table
  )
  if cfg.attention != "none":
    extra_flops, extra_bytes = attention_step_costs(
      cfg.hidden_size, sizes.get("source_length", 16), itemsize
    )
    flops, weight_bytes = flops + extra_flops, weight_bytes + extra_bytes
  name = "seq2seq" + ("_attention" if cfg.attention != "none" else "")
  return DecoderUnderTest(
    name + ("" if input_table else "_no_table"),
    dtype,
    cfg.target_vocab_size,
    sizes["max_len"],
    step_fn,
    weights,
    start,
    flops,
    weight_bytes,
    sizes,
    prepare_s,
  )


def vae_decoder(
  sizes: dict[str, int], dtype: str, params: Any = None, model: SentenceVAE | None = None
) -> DecoderUnderTest:
  if model is None:
    model = SentenceVAE(
      SentenceVAEConfig(
        sizes["vocab_size"],
        embed_dim=sizes["embed_dim"],
        hidden_size=sizes["hidden_size"],
        latent_size=sizes["latent_size"],
        decoder_layers=sizes["num_layers"],
        dtype=dtype,
      )
    )
    params = _push_down_eos(vae_model.init_params(model, jax.random.key(0)), model)
  cfg = model.config

  def step_fn(params, state, tokens_B):
    return model.apply(params, state, tokens_B, method=SentenceVAE.decode_step)

  def start(batch_size, key):
    z_BxZ = jax.random.normal(key, (batch_size, cfg.latent_size)) if cfg.has_latent else None
    return model.apply(params, z_BxZ, batch_size, method=SentenceVAE.decoder_start)

  in_dim = cfg.embed_dim + (cfg.latent_size if cfg.has_latent and cfg.z_to_every_input else 0)
  flops, weight_bytes = decoding_step_costs(
    in_dim,
    cfg.hidden_size,
    cfg.decoder_layers,
    cfg.vocab_size,
    jnp.dtype(dtype).itemsize,
    input_table=False,
  )
  return DecoderUnderTest(
    cfg.kind,
    dtype,
    cfg.vocab_size,
    sizes["max_len"],
    step_fn,
    params,
    start,
    flops,
    weight_bytes,
    sizes,
  )


def synthetic_decoders(
  shapes: Sequence[str],
  dtypes: Sequence[str],
  input_table: str,
  size_overrides: dict[str, int],
  max_len: int | None,
) -> list[DecoderUnderTest]:
  """Random-weight decoders of each shape (sizes overridden) in each dtype."""
  decoders = []
  for shape in shapes:
    sizes = dict(DECODE_SHAPES[shape], **size_overrides)
    if max_len:
      sizes["max_len"] = max_len
    for dtype in dtypes:
      if shape.startswith("seq2seq"):
        attention = "general" if shape == "seq2seq_attention" else "none"
        for table in INPUT_TABLE_CHOICES[input_table]:
          decoders.append(seq2seq_decoder(sizes, dtype, table, attention=attention))
      else:
        decoders.append(vae_decoder(sizes, dtype))
  return decoders


def decoder_from_workdir(workdir: str, input_table: str, max_len: int | None) -> DecoderUnderTest:
  """The trained model's decoder: its real vocabulary, sizes and weights."""
  config = workdir_lib.read_config(workdir)
  max_len = max_len or config.data.max_len + 1
  if workdir_lib.family_of(config) == "seq2seq":
    from textgen_jax.seq2seq import Translator  # pylint: disable=import-outside-toplevel

    translator = Translator.load(workdir)
    cfg = translator.model.config
    sizes = dict(
      vocab_size=cfg.target_vocab_size,
      embed_dim=cfg.embed_dim,
      hidden_size=cfg.hidden_size,
      num_layers=cfg.decoder_layers,
      latent_size=0,
      max_len=max_len,
    )
    return seq2seq_decoder(
      sizes, cfg.dtype, WORKDIR_INPUT_TABLE[input_table], translator.params, translator.model
    )
  from textgen_jax.vae import SentenceModel  # pylint: disable=import-outside-toplevel

  sentence_model = SentenceModel.load(workdir)
  cfg = sentence_model.model.config
  sizes = dict(
    vocab_size=cfg.vocab_size,
    embed_dim=cfg.embed_dim,
    hidden_size=cfg.hidden_size,
    num_layers=cfg.decoder_layers,
    latent_size=cfg.latent_size,
    max_len=max_len,
  )
  return vae_decoder(sizes, cfg.dtype, sentence_model.params, sentence_model.model)


def check_shapes(shapes: Sequence[str]) -> None:
  for shape in shapes:
    if shape not in DECODE_SHAPES:
      raise TextgenError(f"--shapes: unknown shape {shape!r}; choose from {list(DECODE_SHAPES)}")


# ---- The implementations timed -------------------------------------------------------------


def compiled_decode_fn(decoder: DecoderUnderTest, batch_size: int, settings: DecodeSettings):
  """(weights, carry, key) -> tokens: the engine, one program per batch shape."""

  def decode(weights, carry, key):
    step_fn = functools.partial(decoder.step_fn, weights)
    if settings.strategy == "beam":
      beams = decoding.beam_search(
        step_fn, carry, batch_size, decoder.max_len, settings.beam_size, settings.length_alpha
      )
      return beams.tokens_BxKxL
    return decoding.decode(step_fn, carry, batch_size, decoder.max_len, settings, key)

  return decode


def naive_decoder(decoder: DecoderUnderTest, batch_size: int, settings: DecodeSettings):
  """The usual first implementation: a jitted one-token step called from Python per token,
  checking on the host after each token whether every sequence has ended."""

  @jax.jit
  def one_token(weights, carry, previous_B, done_B, key):
    carry, logits_BxV = decoder.step_fn(weights, carry, previous_B)
    logits_BxV = decoding.forbid_pad_and_bos(logits_BxV, jnp.finfo(logits_BxV.dtype).min)
    if settings.strategy == "greedy":
      token_B = decoding.argmax(logits_BxV)
    else:  # The engine's own sampler, so the ratio measures the loop, not the sampler.
      logits_BxV = decoding.filter_logits(
        logits_BxV / settings.temperature, settings.top_k, settings.top_p
      )
      token_B = decoding.inverse_cdf_sample(
        jax.nn.softmax(logits_BxV, -1), jax.random.uniform(key, (batch_size,))
      )
    token_B = jnp.where(done_B, PAD_ID, token_B).astype(jnp.int32)
    return carry, token_B, done_B | (token_B == EOS_ID)

  def decode(weights, carry, key):
    previous_B = jnp.full((batch_size,), BOS_ID, jnp.int32)
    done_B = jnp.zeros((batch_size,), bool)
    tokens = []
    for t in range(decoder.max_len):
      carry, previous_B, done_B = one_token(
        weights, carry, previous_B, done_B, jax.random.fold_in(key, t)
      )
      tokens.append(previous_B)
      if bool(done_B.all()):
        break
    return jnp.stack(tokens, 1)

  return decode


_TORCH_DECODERS = {}


def torch_decoder(torch_reference: Any, decoder: DecoderUnderTest):
  """The PyTorch decoder of the same sizes and dtype (one per shape and dtype)."""
  key = (decoder.name.replace("_no_table", ""), decoder.dtype)
  if key not in _TORCH_DECODERS:
    sizes = decoder.sizes
    if decoder.name.startswith("seq2seq_attention"):
      _TORCH_DECODERS[key] = torch_reference.make_attention_decoder(
        sizes["vocab_size"],
        sizes["embed_dim"],
        sizes["hidden_size"],
        sizes["num_layers"],
        sizes["source_length"],
        decoder.dtype,
      )
    else:
      _TORCH_DECODERS[key] = torch_reference.make_decoder(
        sizes["vocab_size"],
        sizes["embed_dim"],
        sizes["hidden_size"],
        sizes["num_layers"],
        sizes["latent_size"],
        decoder.dtype,
      )
  return _TORCH_DECODERS[key]
