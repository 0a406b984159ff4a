r"""Decoding speed: the compiled engine against a naive per-token loop and PyTorch, with a roofline.

  # Both default shapes (seq2seq tutorial size and PTB VAE size), every strategy and dtype:
  python experiments/bench_decode.py --output=runs/bench_decode.jsonl --plot=runs/decode.png
  # A trained model (its real vocabulary and sizes), greedy and beam only:
  python experiments/bench_decode.py --workdir=runs/fr_en --strategies=greedy,beam

One JSON line per measurement on stdout. Every configuration is compiled first (compile_s) and
then timed in steady state; per-call latency is every sequence's latency, since a batch finishes
together. Baselines run in the same process, so speed-ups are ratios taken side by side:
`naive` calls a jitted one-token step from a Python loop (the usual first implementation) and
`torch` steps `nn.LSTM` one token at a time (when torch is installed: the `bench` extra).

The roofline: at start the script measures the device's matmul FLOP/s (per dtype) and memory
bandwidth. A decoding step must do the matmul FLOPs of every row and read every weight once, so
no step beats max(FLOPs / peak FLOP/s, weight bytes / bandwidth); each result reports the
fraction of that bound it reaches. Synthetic models have random weights with the EOS logit
pushed down, so every sequence decodes max_len tokens: a fixed amount of work per call.
"""

import dataclasses
import functools
import os
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from textgen_jax import benchmarking, cli, decoding, device_memory
from textgen_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID
from textgen_jax.decoding import DecodeSettings
from textgen_jax.errors import TextgenError
from textgen_jax.models.seq2seq import Seq2Seq, Seq2SeqConfig, uses_decoding_table
from textgen_jax.models.text_vae import TextVAE, TextVAEConfig

# The sizes the issue names: the seq2seq tutorial and the PTB sentence VAE.
SHAPES = {
    "seq2seq": dict(vocab_size=100, embed_dim=256, hidden_size=256, num_layers=1, latent_size=0,
                    max_len=60),
    "vae": dict(vocab_size=10_000, embed_dim=256, hidden_size=512, num_layers=1, latent_size=32,
                max_len=40),
}
STRATEGY_SETTINGS = {
    "greedy": DecodeSettings("greedy"),
    "sample": DecodeSettings("sample", temperature=1.0),
    "top_k": DecodeSettings("sample", top_k=50),
    "top_p": DecodeSettings("sample", top_p=0.9),
    "beam": DecodeSettings("beam", beam_size=5, length_alpha=0.6),
}

_SHAPES = flags.DEFINE_list("shapes", list(SHAPES), f"Synthetic model sizes: {list(SHAPES)}.")
_WORKDIR = flags.DEFINE_string("workdir", None, "A trained seq2seq/VAE/LM workdir instead of "
                               "synthetic shapes.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "8", "64", "512", "1024", "4096"],
                                 "Batch sizes to sweep.")
_STRATEGIES = flags.DEFINE_list("strategies", list(STRATEGY_SETTINGS),
                                f"Strategies: {list(STRATEGY_SETTINGS)}.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Matmul dtypes.")
_BASELINES = flags.DEFINE_list("baselines", ["naive", "torch"],
                               "Baselines for greedy and sample: naive, torch.")
_INPUT_TABLE = flags.DEFINE_enum("input_table", "auto", ["auto", "on", "off", "both"],
                                 "seq2seq: look the decoder's first-layer input gates up in a "
                                 "[V, 4H] table (auto: as the Translator does, when V <= 4H), "
                                 "or compare both.")
_MAX_LEN = flags.DEFINE_integer("max_len", None, "Tokens per sequence (default: the shape's).")
_SIZE_OVERRIDES = {name: flags.DEFINE_integer(name, None, f"Override the shapes' {name}.")
                   for name in ("vocab_size", "embed_dim", "hidden_size", "num_layers",
                                "latent_size")}
_MIN_SECONDS = flags.DEFINE_float("min_seconds", 1.0, "Time each configuration at least this long.")
_MIN_CALLS = flags.DEFINE_integer("min_calls", 3, "... and at least this many calls.")
_MAX_SECONDS_PER_CALL = flags.DEFINE_float(
    "max_seconds_per_call", 60.0, "Skip the larger batches of a configuration once one call "
    "takes longer than this (reported as skipped).")
_OUTPUT = flags.DEFINE_string("output", None, "Also append the JSON lines to this file.")
_PLOT = flags.DEFINE_string("plot", None, "Write a PNG of tokens/s against batch size here.")


@dataclasses.dataclass
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


def _matmul_costs(in_dim: int, hidden: int, layers: int, vocab: int, itemsize: int,
                  input_table: bool) -> tuple[float, float]:
  """(FLOPs per row, weight bytes) of one LSTM decoding step: input and recurrent projections
  of every layer, and the vocabulary projection. A table lookup replaces layer 0's input matmul."""
  gates = 4 * hidden
  macs = (0 if input_table else in_dim * gates) + (layers - 1) * hidden * gates
  macs += layers * hidden * gates + hidden * vocab
  return 2.0 * macs, float(macs * itemsize)


def _push_down_eos(params: Any, output_layer: str) -> Any:
  """Random weights rarely pick EOS, but may: make every sequence run max_len steps."""
  params = jax.tree.map(lambda x: x, params)
  bias = params["params"][output_layer]["bias"]
  params["params"][output_layer]["bias"] = bias.at[EOS_ID].set(-1e9)
  return params


def seq2seq_decoder(sizes: dict[str, int], dtype: str, input_table: bool | None,
                    params: Any = None, model: Seq2Seq | None = None) -> DecoderUnderTest:
  """input_table: look layer 0's input gates up in a table; None: as Translator decides."""
  if model is None:
    model = Seq2Seq(Seq2SeqConfig(sizes["vocab_size"], sizes["vocab_size"], sizes["embed_dim"],
                                  sizes["hidden_size"], decoder_layers=sizes["num_layers"],
                                  dtype=dtype))
    tokens = jnp.zeros((1, 2), jnp.int32)
    params = _push_down_eos(model.init(jax.random.key(0), tokens, jnp.ones((1,), jnp.int32),
                                       tokens), "output_layer")
  cfg = model.config
  prepare_s = 0.0
  if input_table is None:
    input_table = uses_decoding_table(cfg)
  if input_table:
    timing, compiled = benchmarking.time_jitted(
        functools.partial(model.apply, method=Seq2Seq.decoder_input_gates), params, min_calls=1,
        min_seconds=0.0)
    prepare_s = timing.compile_s + timing.median_s
    weights = (params, compiled(params))
  else:
    weights = (params, None)

  def step_fn(weights, carries, tokens_B):
    params, table = weights
    return model.apply(params, carries, tokens_B, table, method=Seq2Seq.decode_step)

  def start(batch_size, key):
    keys = jax.random.split(key, cfg.decoder_layers)
    return [(c, jnp.tanh(c)) for c in (jax.random.normal(k, (batch_size, cfg.hidden_size))
                                       for k in keys)]

  flops, weight_bytes = _matmul_costs(cfg.embed_dim, cfg.hidden_size, cfg.decoder_layers,
                                      cfg.target_vocab_size, jnp.dtype(dtype).itemsize,
                                      input_table)
  return DecoderUnderTest("seq2seq" + ("" if input_table else "_no_table"), dtype,
                          cfg.target_vocab_size, sizes["max_len"], step_fn, weights, start,
                          flops, weight_bytes, sizes, prepare_s)


def vae_decoder(sizes: dict[str, int], dtype: str, params: Any = None,
                model: TextVAE | None = None) -> DecoderUnderTest:
  if model is None:
    model = TextVAE(TextVAEConfig(sizes["vocab_size"], embed_dim=sizes["embed_dim"],
                                  hidden_size=sizes["hidden_size"],
                                  latent_size=sizes["latent_size"],
                                  decoder_layers=sizes["num_layers"], dtype=dtype))
    tokens = jnp.zeros((1, 2), jnp.int32)
    params = _push_down_eos(model.init(jax.random.key(0), tokens, jnp.ones((1,), jnp.int32),
                                       tokens, jnp.zeros((1, sizes["latent_size"]))),
                            "decoder_output")
  cfg = model.config

  def step_fn(params, state, tokens_B):
    return model.apply(params, state, tokens_B, method=TextVAE.decode_step)

  def start(batch_size, key):
    z_BxZ = jax.random.normal(key, (batch_size, cfg.latent_size)) if cfg.has_latent else None
    return model.apply(params, z_BxZ, batch_size, method=TextVAE.decoder_start)

  in_dim = cfg.embed_dim + (cfg.latent_size if cfg.has_latent and cfg.z_to_every_input else 0)
  flops, weight_bytes = _matmul_costs(in_dim, cfg.hidden_size, cfg.decoder_layers, cfg.vocab_size,
                                      jnp.dtype(dtype).itemsize, input_table=False)
  return DecoderUnderTest(cfg.kind, dtype, cfg.vocab_size, sizes["max_len"], step_fn, params,
                          start, flops, weight_bytes, sizes)


def decoders_from_flags() -> list[DecoderUnderTest]:
  table_choices = {"auto": [None], "on": [True], "off": [False], "both": [True, False]}
  decoders = []
  if _WORKDIR.value:
    return [decoder_from_workdir(_WORKDIR.value)]
  for shape in _SHAPES.value:
    if shape not in SHAPES:
      raise TextgenError(f"--shapes: unknown shape {shape!r}; choose from {list(SHAPES)}")
    sizes = dict(SHAPES[shape])
    sizes.update({name: flag.value for name, flag in _SIZE_OVERRIDES.items()
                  if flag.value is not None})
    if _MAX_LEN.value:
      sizes["max_len"] = _MAX_LEN.value
    for dtype in _DTYPES.value:
      if shape == "seq2seq":
        for table in table_choices[_INPUT_TABLE.value]:
          decoders.append(seq2seq_decoder(sizes, dtype, table))
      else:
        decoders.append(vae_decoder(sizes, dtype))
  return decoders


def decoder_from_workdir(workdir: str) -> DecoderUnderTest:
  from textgen_jax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  config = workdir_lib.read_config(workdir)
  max_len = _MAX_LEN.value or config.data.max_len + 1
  if config.model.get("kind") is None:  # A seq2seq workdir.
    from textgen_jax.translation import Translator  # pylint: disable=import-outside-toplevel
    translator = Translator.load(workdir)
    cfg = translator.model.config
    sizes = dict(vocab_size=cfg.target_vocab_size, embed_dim=cfg.embed_dim,
                 hidden_size=cfg.hidden_size, num_layers=cfg.decoder_layers, latent_size=0,
                 max_len=max_len)
    table = {"auto": None, "on": True, "off": False, "both": None}[_INPUT_TABLE.value]
    return seq2seq_decoder(sizes, cfg.dtype, table, translator.params, translator.model)
  from textgen_jax.sentence_vae import SentenceModel  # pylint: disable=import-outside-toplevel
  sentence_model = SentenceModel.load(workdir)
  cfg = sentence_model.model.config
  sizes = dict(vocab_size=cfg.vocab_size, embed_dim=cfg.embed_dim, hidden_size=cfg.hidden_size,
               num_layers=cfg.decoder_layers, latent_size=cfg.latent_size, max_len=max_len)
  return vae_decoder(sizes, cfg.dtype, sentence_model.params, sentence_model.model)


# ---- The implementations timed -------------------------------------------------------------


def compiled_decode_fn(decoder: DecoderUnderTest, batch_size: int, settings: DecodeSettings):
  """(weights, carry, key) -> tokens: the engine, one program per batch shape."""

  def decode(weights, carry, key):
    step_fn = functools.partial(decoder.step_fn, weights)
    if settings.strategy == "beam":
      beams = decoding.beam_search(step_fn, carry, batch_size, decoder.max_len,
                                   settings.beam_size, settings.length_alpha)
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
      logits_BxV = decoding.filter_logits(logits_BxV / settings.temperature, settings.top_k,
                                          settings.top_p)
      token_B = decoding.inverse_cdf_sample(jax.nn.softmax(logits_BxV, -1),
                                            jax.random.uniform(key, (batch_size,)))
    token_B = jnp.where(done_B, PAD_ID, token_B).astype(jnp.int32)
    return carry, token_B, done_B | (token_B == EOS_ID)

  def decode(weights, carry, key):
    previous_B = jnp.full((batch_size,), BOS_ID, jnp.int32)
    done_B = jnp.zeros((batch_size,), bool)
    tokens = []
    for t in range(decoder.max_len):
      carry, previous_B, done_B = one_token(weights, carry, previous_B, done_B,
                                            jax.random.fold_in(key, t))
      tokens.append(previous_B)
      if bool(done_B.all()):
        break
    return jnp.stack(tokens, 1)

  return decode


def _generated_tokens(tokens: Any) -> int:
  return int(np.sum(np.asarray(tokens) != PAD_ID))


def _record(decoder: DecoderUnderTest, rates: benchmarking.DeviceRates, device: jax.Device,
            implementation: str, strategy: str, batch_size: int, seconds: tuple[float, ...],
            tokens_per_call: int, compile_s: float | None, memory: int | None,
            rows_per_step: int) -> dict[str, Any]:
  median_s = float(np.median(seconds))
  steps = decoder.max_len
  bound_s = steps * rates.bound_seconds(rows_per_step * decoder.flops_per_token,
                                        decoder.weight_bytes, decoder.dtype,
                                        decoder.weight_read_bytes_per_s)
  return dict(
      bench="decode", model=decoder.name, **{k: v for k, v in decoder.sizes.items()},
      device=benchmarking.device_description(device), dtype=decoder.dtype, strategy=strategy,
      implementation=implementation, batch_size=batch_size,
      tokens_per_s=tokens_per_call / median_s, latency_p50_s=float(np.percentile(seconds, 50)),
      latency_p90_s=float(np.percentile(seconds, 90)), calls=len(seconds),
      compile_s=compile_s, prepare_s=decoder.prepare_s if implementation == "compiled" else None,
      program_memory_bytes=memory, peak_device_memory_bytes=benchmarking.peak_memory_bytes(device),
      tokens_per_call=tokens_per_call, flops_per_token=decoder.flops_per_token,
      weight_bytes=decoder.weight_bytes, weight_read_bytes_per_s=decoder.weight_read_bytes_per_s,
      roofline_tokens_per_s=tokens_per_call / bound_s if implementation == "compiled" else None,
      roofline_fraction=(bound_s / median_s) if implementation == "compiled" else None)


def run_decoder(decoder: DecoderUnderTest, rates: benchmarking.DeviceRates, output: Any,
                torch_reference: Any) -> list[dict[str, Any]]:
  device = jax.devices()[0]
  records = []
  for strategy in _STRATEGIES.value:
    settings = STRATEGY_SETTINGS[strategy]
    settings.check(decoder.max_len, decoder.vocab_size)
    too_slow = set()
    for batch_size in [int(b) for b in _BATCH_SIZES.value]:
      carry = decoder.start(batch_size, jax.random.key(1))
      key = jax.random.key(2)
      rows = batch_size * (settings.beam_size if strategy == "beam" else 1)
      results = {}
      implementations = ["compiled"] + ([b for b in _BASELINES.value if b != "torch"]
                                        if strategy in ("greedy", "sample") else [])
      if (torch_reference is not None and "torch" in _BASELINES.value and
          strategy in ("greedy", "sample") and decoder.name.startswith(("seq2seq", "vae", "lm"))):
        implementations.append("torch")
      for implementation in implementations:
        if implementation in too_slow:
          benchmarking.emit(dict(bench="decode", model=decoder.name, dtype=decoder.dtype,
                                 strategy=strategy, implementation=implementation,
                                 batch_size=batch_size, skipped="a smaller batch took longer "
                                 f"than --max_seconds_per_call={_MAX_SECONDS_PER_CALL.value}"),
                            output)
          continue
        benchmarking.progress(f"{decoder.name} {decoder.dtype} {strategy} batch {batch_size}: "
                              f"{implementation}")
        compile_s = memory = None
        if implementation == "compiled":
          fn = compiled_decode_fn(decoder, batch_size, settings)
          timing, compiled = benchmarking.time_jitted(fn, decoder.weights, carry, key,
                                                      min_calls=_MIN_CALLS.value,
                                                      min_seconds=_MIN_SECONDS.value)
          seconds, compile_s = timing.seconds, timing.compile_s
          memory = device_memory.program_bytes(compiled)
          tokens = _generated_tokens(compiled(decoder.weights, carry, key))
        elif implementation == "naive":
          fn = naive_decoder(decoder, batch_size, settings)
          seconds = benchmarking.time_calls(lambda: fn(decoder.weights, carry, key),
                                            _MIN_CALLS.value, _MIN_SECONDS.value)
          tokens = _generated_tokens(fn(decoder.weights, carry, key))
        else:
          seconds, tokens = torch_reference.time_decode(
              torch_decoder(torch_reference, decoder), batch_size, decoder.max_len,
              sample=strategy != "greedy", min_calls=_MIN_CALLS.value,
              min_seconds=_MIN_SECONDS.value)
        record = _record(decoder, rates, device, implementation, strategy, batch_size,
                         tuple(seconds), tokens, compile_s, memory, rows)
        results[implementation] = record
        if max(seconds) > _MAX_SECONDS_PER_CALL.value:
          too_slow.add(implementation)
      for implementation, record in results.items():
        if implementation != "compiled" and "compiled" in results:
          results["compiled"][f"speedup_vs_{implementation}"] = (
              results["compiled"]["tokens_per_s"] / record["tokens_per_s"])
      for record in results.values():
        benchmarking.emit(record, output)
        records.append(record)
  return records


_TORCH_DECODERS = {}


def torch_decoder(torch_reference: Any, decoder: DecoderUnderTest):
  key = (decoder.name.replace("_no_table", ""), decoder.dtype)
  if key not in _TORCH_DECODERS:
    sizes = decoder.sizes
    _TORCH_DECODERS[key] = torch_reference.make_decoder(
        sizes["vocab_size"], sizes["embed_dim"], sizes["hidden_size"], sizes["num_layers"],
        sizes["latent_size"], decoder.dtype)
  return _TORCH_DECODERS[key]


def main(argv):
  del argv
  dtypes = tuple(_DTYPES.value)
  for dtype in dtypes:
    if dtype not in ("float32", "bfloat16"):
      raise TextgenError(f"--dtypes: unknown dtype {dtype!r}; use float32 or bfloat16")
  for batch_size in _BATCH_SIZES.value:
    if not batch_size.isdigit() or int(batch_size) < 1:
      raise TextgenError(f"--batch_sizes: {batch_size!r} is not a positive integer")
  for strategy in _STRATEGIES.value:
    if strategy not in STRATEGY_SETTINGS:
      raise TextgenError(f"--strategies: unknown {strategy!r}; choose from "
                         f"{list(STRATEGY_SETTINGS)}")
  output = None
  if _OUTPUT.value:
    os.makedirs(os.path.dirname(_OUTPUT.value) or ".", exist_ok=True)
    output = open(_OUTPUT.value, "a", encoding="utf-8")  # pylint: disable=consider-using-with
  decoders = decoders_from_flags()
  torch_reference = None
  if "torch" in _BASELINES.value:
    try:
      import torch_reference  # pylint: disable=import-outside-toplevel
    except ImportError:
      benchmarking.progress("note: torch is not installed (pip install -e '.[bench]'); "
                            "skipping the PyTorch baseline")
  benchmarking.progress("measuring peak matmul rate and memory bandwidth")
  rates = benchmarking.measure_device_rates(tuple(sorted({d.dtype for d in decoders})),
                                            _MIN_SECONDS.value)
  device = jax.devices()[0]
  benchmarking.emit(dict(bench="roofline", device=benchmarking.device_description(device),
                         num_devices=jax.device_count(), cpu_count=os.cpu_count(),
                         **{f"matmul_flops_per_s_{k}": v
                            for k, v in rates.matmul_flops_per_s.items()},
                         memory_bytes_per_s=rates.memory_bytes_per_s,
                         jax_version=jax.__version__), output)
  records = []
  for decoder in decoders:
    # A batch-1 step streams every weight: its bound is the read rate for a buffer of the
    # weights' size, which is a cache's rate when they fit in one (measured, not assumed).
    decoder.weight_read_bytes_per_s = benchmarking.measure_memory_bandwidth(
        int(decoder.weight_bytes), _MIN_SECONDS.value)
    records += run_decoder(decoder, rates, output, torch_reference)
  if _PLOT.value:
    benchmarking.plot_decode_throughput(records, _PLOT.value)
    benchmarking.progress(f"wrote {_PLOT.value}")


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  cli.run(main, huge_pages=True)
