r"""Decoding speed: the compiled engine against a naive per-token loop and PyTorch, with a roofline.

  # Both default shapes (seq2seq tutorial size and PTB VAE size), every strategy and dtype:
  python -m experiments.bench.decode --output=runs/bench_decode.jsonl --plot=runs/decode.png
  # A trained model (its real vocabulary and sizes), greedy and beam only:
  python -m experiments.bench.decode --workdir=runs/fr_en --strategies=greedy,beam

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
from typing import Any

import jax
import numpy as np
from absl import flags

from experiments.bench import common, decoders
from experiments.bench.decoders import DecoderUnderTest
from experiments.bench.shapes import DECODE_SHAPES
from textgen_jax import cli, device_memory
from textgen_jax.data.vocab import PAD_ID
from textgen_jax.decoding import DecodeSettings
from textgen_jax.errors import TextgenError

STRATEGY_SETTINGS = {
  "greedy": DecodeSettings("greedy"),
  "sample": DecodeSettings("sample", temperature=1.0),
  "top_k": DecodeSettings("sample", top_k=50),
  "top_p": DecodeSettings("sample", top_p=0.9),
  "beam": DecodeSettings("beam", beam_size=5, length_alpha=0.6),
}
SIZE_FLAGS = ("vocab_size", "embed_dim", "hidden_size", "num_layers", "latent_size")

_SHAPES = flags.DEFINE_list(
  "shapes", list(DECODE_SHAPES), f"Synthetic model sizes: {list(DECODE_SHAPES)}."
)
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "A trained seq2seq/VAE/LM workdir instead of synthetic shapes."
)
_BATCH_SIZES = flags.DEFINE_list(
  "batch_sizes", ["1", "8", "64", "512", "1024", "4096"], "Batch sizes to sweep."
)
_STRATEGIES = flags.DEFINE_list(
  "strategies", list(STRATEGY_SETTINGS), f"Strategies: {list(STRATEGY_SETTINGS)}."
)
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Matmul dtypes.")
_BASELINES = flags.DEFINE_list(
  "baselines", ["naive", "torch"], "Baselines for greedy and sample: naive, torch."
)
_INPUT_TABLE = flags.DEFINE_enum(
  "input_table",
  "auto",
  list(decoders.INPUT_TABLE_CHOICES),
  "seq2seq: look the decoder's first-layer input gates up in a "
  "[V, 4H] table (auto: as the Translator does, when V <= 4H), "
  "or compare both.",
)
_MAX_LEN = flags.DEFINE_integer("max_len", None, "Tokens per sequence (default: the shape's).")
_SIZE_OVERRIDES = {
  name: flags.DEFINE_integer(name, None, f"Override the shapes' {name}.") for name in SIZE_FLAGS
}
_MIN_SECONDS = flags.DEFINE_float("min_seconds", 1.0, "Time each configuration at least this long.")
_MIN_CALLS = flags.DEFINE_integer("min_calls", 3, "... and at least this many calls.")
_MAX_SECONDS_PER_CALL = flags.DEFINE_float(
  "max_seconds_per_call",
  60.0,
  "Skip the larger batches of a configuration once one call "
  "takes longer than this (reported as skipped).",
)
_ROUNDS = flags.DEFINE_integer(
  "rounds",
  1,
  "Time everything this many times, round after round "
  "(A B C, A B C): compare decoders within a round, as the machine "
  "drifts between rounds.",
)
_OUTPUT = flags.DEFINE_string("output", None, "Also append the JSON lines to this file.")
_PLOT = flags.DEFINE_string("plot", None, "Write a PNG of tokens/s against batch size here.")


@dataclasses.dataclass(frozen=True)
class Settings:
  """The flags, read and checked once (see their help)."""

  shapes: tuple[str, ...]
  workdir: str | None
  batch_sizes: tuple[int, ...]
  strategies: tuple[str, ...]
  dtypes: tuple[str, ...]
  baselines: tuple[str, ...]
  input_table: str
  max_len: int | None
  size_overrides: dict[str, int]  # Only the sizes given.
  min_seconds: float
  min_calls: int
  max_seconds_per_call: float
  rounds: int
  output: str | None
  plot: str | None


def settings_from_flags() -> Settings:
  for dtype in _DTYPES.value:
    if dtype not in ("float32", "bfloat16"):
      raise TextgenError(f"--dtypes: unknown dtype {dtype!r}; use float32 or bfloat16")
  for batch_size in _BATCH_SIZES.value:
    if not batch_size.isdigit() or int(batch_size) < 1:
      raise TextgenError(f"--batch_sizes: {batch_size!r} is not a positive integer")
  for strategy in _STRATEGIES.value:
    if strategy not in STRATEGY_SETTINGS:
      raise TextgenError(
        f"--strategies: unknown {strategy!r}; choose from {list(STRATEGY_SETTINGS)}"
      )
  if not _WORKDIR.value:
    decoders.check_shapes(_SHAPES.value)
  if _ROUNDS.value < 1:
    raise TextgenError(f"--rounds must be at least 1, got {_ROUNDS.value}")
  return Settings(
    tuple(_SHAPES.value),
    _WORKDIR.value,
    tuple(int(b) for b in _BATCH_SIZES.value),
    tuple(_STRATEGIES.value),
    tuple(_DTYPES.value),
    tuple(_BASELINES.value),
    _INPUT_TABLE.value,
    _MAX_LEN.value,
    {name: flag.value for name, flag in _SIZE_OVERRIDES.items() if flag.value is not None},
    _MIN_SECONDS.value,
    _MIN_CALLS.value,
    _MAX_SECONDS_PER_CALL.value,
    _ROUNDS.value,
    _OUTPUT.value,
    _PLOT.value,
  )


def decoders_under_test(settings: Settings) -> list[DecoderUnderTest]:
  if settings.workdir:
    return [decoders.decoder_from_workdir(settings.workdir, settings.input_table, settings.max_len)]
  return decoders.synthetic_decoders(
    settings.shapes,
    settings.dtypes,
    settings.input_table,
    settings.size_overrides,
    settings.max_len,
  )


def _generated_tokens(tokens: Any) -> int:
  return int(np.sum(np.asarray(tokens) != PAD_ID))


def _record(
  decoder: DecoderUnderTest,
  rates: common.DeviceRates,
  device: jax.Device,
  implementation: str,
  strategy: str,
  batch_size: int,
  seconds: tuple[float, ...],
  tokens_per_call: int,
  compile_s: float | None,
  memory: int | None,
  rows_per_step: int,
) -> dict[str, Any]:
  median_s = float(np.median(seconds))
  steps = decoder.max_len
  bound_s = steps * rates.bound_seconds(
    rows_per_step * decoder.flops_per_token,
    decoder.weight_bytes,
    decoder.dtype,
    decoder.weight_read_bytes_per_s,
  )
  return dict(
    bench="decode",
    model=decoder.name,
    **{k: v for k, v in decoder.sizes.items()},
    device=common.device_description(device),
    dtype=decoder.dtype,
    strategy=strategy,
    implementation=implementation,
    batch_size=batch_size,
    tokens_per_s=tokens_per_call / median_s,
    latency_p50_s=float(np.percentile(seconds, 50)),
    latency_p90_s=float(np.percentile(seconds, 90)),
    calls=len(seconds),
    compile_s=compile_s,
    prepare_s=decoder.prepare_s if implementation == "compiled" else None,
    program_memory_bytes=memory,
    peak_device_memory_bytes=common.peak_memory_bytes(device),
    tokens_per_call=tokens_per_call,
    flops_per_token=decoder.flops_per_token,
    weight_bytes=decoder.weight_bytes,
    weight_read_bytes_per_s=decoder.weight_read_bytes_per_s,
    roofline_tokens_per_s=tokens_per_call / bound_s if implementation == "compiled" else None,
    roofline_fraction=(bound_s / median_s) if implementation == "compiled" else None,
  )


def implementations(
  decoder: DecoderUnderTest, strategy: str, settings: Settings, torch_reference: Any
) -> list[str]:
  """The engine, and for greedy and sample the baselines asked for (torch where installed)."""
  if strategy not in ("greedy", "sample"):
    return ["compiled"]
  names = ["compiled"] + [b for b in settings.baselines if b != "torch"]
  if (
    torch_reference is not None
    and "torch" in settings.baselines
    and decoder.name.startswith(("seq2seq", "vae", "lm"))
  ):
    names.append("torch")
  return names


def time_implementation(
  implementation: str,
  decoder: DecoderUnderTest,
  strategy: str,
  batch_size: int,
  carry: Any,
  key: jax.Array,
  settings: Settings,
  torch_reference: Any,
) -> tuple[tuple[float, ...], int, float | None, int | None]:
  """(seconds per call, tokens per call, compile seconds, program bytes) of one implementation."""
  decode_settings = STRATEGY_SETTINGS[strategy]
  if implementation == "compiled":
    fn = decoders.compiled_decode_fn(decoder, batch_size, decode_settings)
    timing, compiled = common.time_jitted(
      fn,
      decoder.weights,
      carry,
      key,
      min_calls=settings.min_calls,
      min_seconds=settings.min_seconds,
    )
    tokens = _generated_tokens(compiled(decoder.weights, carry, key))
    return timing.seconds, tokens, timing.compile_s, device_memory.program_bytes(compiled)
  if implementation == "naive":
    fn = decoders.naive_decoder(decoder, batch_size, decode_settings)
    seconds = common.time_calls(
      lambda: fn(decoder.weights, carry, key), settings.min_calls, settings.min_seconds
    )
    return seconds, _generated_tokens(fn(decoder.weights, carry, key)), None, None
  seconds, tokens = torch_reference.time_decode(
    decoders.torch_decoder(torch_reference, decoder),
    batch_size,
    decoder.max_len,
    sample=strategy != "greedy",
    min_calls=settings.min_calls,
    min_seconds=settings.min_seconds,
  )
  return tuple(seconds), tokens, None, None


def run_batch(
  decoder: DecoderUnderTest,
  strategy: str,
  batch_size: int,
  too_slow: set[str],
  rates: common.DeviceRates,
  out: common.JsonLines,
  settings: Settings,
  torch_reference: Any,
  round_index: int = 0,
) -> list[dict[str, Any]]:
  """Times every implementation at one batch size; emits their records, speed-ups included.

  An implementation in `too_slow` is reported as skipped; one whose call takes longer than
  --max_seconds_per_call joins it.
  """
  carry, key = decoder.start(batch_size, jax.random.key(1)), jax.random.key(2)
  rows = batch_size * (STRATEGY_SETTINGS[strategy].beam_size if strategy == "beam" else 1)
  results = {}
  for implementation in implementations(decoder, strategy, settings, torch_reference):
    if implementation in too_slow:
      out.emit(
        dict(
          bench="decode",
          model=decoder.name,
          dtype=decoder.dtype,
          strategy=strategy,
          implementation=implementation,
          batch_size=batch_size,
          skipped="a smaller batch took longer than "
          f"--max_seconds_per_call={settings.max_seconds_per_call}",
        )
      )
      continue
    common.progress(
      f"{decoder.name} {decoder.dtype} {strategy} batch {batch_size}: {implementation}"
    )
    seconds, tokens, compile_s, memory = time_implementation(
      implementation, decoder, strategy, batch_size, carry, key, settings, torch_reference
    )
    results[implementation] = dict(
      _record(
        decoder,
        rates,
        jax.devices()[0],
        implementation,
        strategy,
        batch_size,
        tuple(seconds),
        tokens,
        compile_s,
        memory,
        rows,
      ),
      round=round_index,
    )
    if max(seconds) > settings.max_seconds_per_call:
      too_slow.add(implementation)
  for implementation, record in results.items():
    if implementation != "compiled" and "compiled" in results:
      results["compiled"][f"speedup_vs_{implementation}"] = (
        results["compiled"]["tokens_per_s"] / record["tokens_per_s"]
      )
  for record in results.values():
    out.emit(record)
  return list(results.values())


def run_decoder(
  decoder: DecoderUnderTest,
  rates: common.DeviceRates,
  out: common.JsonLines,
  settings: Settings,
  torch_reference: Any,
  round_index: int = 0,
) -> list[dict[str, Any]]:
  records = []
  for strategy in settings.strategies:
    STRATEGY_SETTINGS[strategy].check(decoder.max_len, decoder.vocab_size)
    too_slow = set()
    for batch_size in settings.batch_sizes:
      records += run_batch(
        decoder, strategy, batch_size, too_slow, rates, out, settings, torch_reference, round_index
      )
  return records


def main(argv):
  del argv
  settings = settings_from_flags()
  out = common.JsonLines(settings.output)
  decoders_to_time = decoders_under_test(settings)
  torch_reference = None
  if "torch" in settings.baselines:
    torch_reference = common.import_torch_reference("the PyTorch baseline")
  common.progress("measuring peak matmul rate and memory bandwidth")
  rates = common.measure_device_rates(
    tuple(sorted({d.dtype for d in decoders_to_time})), settings.min_seconds
  )
  out.emit(
    common.roofline_record(jax.devices()[0], rates.matmul_flops_per_s, rates.memory_bytes_per_s)
  )
  # A batch-1 step streams every weight: its bound is the read rate for a buffer of the
  # weights' size, which is a cache's rate when they fit in one (measured, not assumed).
  decoders_to_time = [
    dataclasses.replace(
      decoder,
      weight_read_bytes_per_s=(
        common.measure_memory_bandwidth(int(decoder.weight_bytes), settings.min_seconds)
      ),
    )
    for decoder in decoders_to_time
  ]
  records = []
  for round_index in range(settings.rounds):
    for decoder in decoders_to_time:
      records += run_decoder(decoder, rates, out, settings, torch_reference, round_index)
  if settings.plot:
    common.plot_decode_throughput(records, settings.plot)
    common.progress(f"wrote {settings.plot}")


if __name__ == "__main__":
  cli.run(main, huge_pages=True)
