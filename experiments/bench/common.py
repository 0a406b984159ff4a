"""What the benchmarks share: timing, the measured roofline, output, the optional torch import.

Timings are steady state: compile first (timed on its own), then run until both a number of
calls and a minimum time are reached, blocking on every result. The roofline's two rates are
measured on the device at hand, not taken from a datasheet, so a result's fraction of the bound
compares like with like on a shared, noisy machine. Programs compared with each other are timed
in interleaved rounds (A B C, A B C, ...), so a ratio is taken within the same minute.
"""

import dataclasses
import json
import os
import sys
import time
from types import ModuleType
from collections.abc import Sequence
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Timing:
  compile_s: float  # Lowering and compilation, before the first run.
  seconds: tuple[float, ...]  # Each steady-state call, blocking until its result is ready.

  def percentile(self, q: float) -> float:
    return float(np.percentile(self.seconds, q))

  @property
  def median_s(self) -> float:
    return self.percentile(50)


def time_calls(
  call: Callable[[], Any], min_calls: int = 3, min_seconds: float = 1.0, max_calls: int = 1000
) -> tuple[float, ...]:
  """Seconds per call of `call()` (blocking on its result); one warm-up call first."""
  jax.block_until_ready(call())
  seconds, started = [], time.perf_counter()
  while len(seconds) < max_calls and (
    len(seconds) < min_calls or time.perf_counter() - started < min_seconds
  ):
    start = time.perf_counter()
    jax.block_until_ready(call())
    seconds.append(time.perf_counter() - start)
  return tuple(seconds)


def time_compile(jitted: Any, *args: Any) -> tuple[float, Any]:
  """(seconds to lower and compile, the executable) of a jitted function for these args."""
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return time.perf_counter() - start, compiled


def time_jitted(
  fn: Callable[..., Any], *args: Any, min_calls: int = 3, min_seconds: float = 1.0
) -> tuple[Timing, Any]:
  """Compiles `jax.jit(fn)` for args (timed), then times steady-state calls.

  Returns the timing and the compiled executable (for memory analysis or reuse).
  """
  compile_s, compiled = time_compile(jax.jit(fn), *args)
  seconds = time_calls(lambda: compiled(*args), min_calls, min_seconds)
  return Timing(compile_s, seconds), compiled


def time_in_rounds(
  steps: list[Callable[[], Any]], rounds: int, min_calls: int, min_seconds: float
) -> list[list[float]]:
  """One warm-up call of each step, then `rounds` rounds A B C, A B C, ...: each step's median
  seconds per call in each round (each round times each step as `time_calls` does)."""
  for step in steps:
    step()
  medians = [[] for _ in steps]
  for _ in range(rounds):
    for step, step_medians in zip(steps, medians):
      step_medians.append(float(np.median(time_calls(step, min_calls, min_seconds))))
  return medians


def round_by_round_ratio(rates: list[float], other_rates: list[float]) -> tuple[float, list[float]]:
  """The median of the round-by-round ratios of two programs' rates, and their [min, max]."""
  ratios = [a / b for a, b in zip(rates, other_rates)]
  return float(np.median(ratios)), [min(ratios), max(ratios)]


def peak_memory_bytes(device: jax.Device) -> int | None:
  """The device's peak allocation so far, where the backend reports it (GPU, TPU; not CPU)."""
  stats = device.memory_stats() or {}
  return stats.get("peak_bytes_in_use")


# ---- Roofline ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DeviceRates:
  """Peak rates measured on the device: matmul FLOP/s per dtype and memory bytes/s."""

  matmul_flops_per_s: dict[str, float]
  memory_bytes_per_s: float  # Reading a buffer too large for any cache (256 MiB).

  def bound_seconds(
    self, flops: float, weight_bytes: float, dtype: str, weight_bytes_per_s: float | None = None
  ) -> float:
    """The roofline: no step is faster than its FLOPs at peak or its weight reads at peak.

    weight_bytes_per_s: the read rate for a buffer of the weights' size (they may fit in cache);
    the main-memory rate if not given.
    """
    return max(
      flops / self.matmul_flops_per_s[dtype],
      weight_bytes / (weight_bytes_per_s or self.memory_bytes_per_s),
    )


def measure_matmul_flops(dtype: str, size: int = 2048, min_seconds: float = 1.0) -> float:
  """FLOP/s of a square [size, size] x [size, size] matmul in `dtype`, best call."""
  a = jax.random.normal(jax.random.key(0), (size, size)).astype(dtype)
  b = jax.random.normal(jax.random.key(1), (size, size)).astype(dtype)
  timing, _ = time_jitted(jnp.dot, a, b, min_seconds=min_seconds)
  return 2 * size**3 / min(timing.seconds)  # A peak: the best call, not the typical one.


def measure_memory_bandwidth(num_bytes: int = 1 << 28, min_seconds: float = 1.0) -> float:
  """Bytes/s of reading a num_bytes float32 buffer: the faster of a sum over it and a
  [1, 256] x [256, n] matrix-vector product with it (which XLA spreads over every core).

  Small buffers are read many times inside one program, so the rate is that of the cache level
  they fit in, not of dispatch: a decoder whose weights fit in cache streams them at that rate.
  """
  x = jnp.ones((256, max(num_bytes // 1024, 4)), jnp.float32)
  reads = max(1, (1 << 28) // x.nbytes)

  # Scaling by the loop index keeps XLA from hoisting the read out of the loop.
  def sum_repeatedly(x):
    return jax.lax.fori_loop(0, reads, lambda i, total: total + jnp.sum(x * i), 0.0)

  def matvec_repeatedly(x):
    row_1x256 = jnp.ones((1, x.shape[0]), x.dtype)
    return jax.lax.fori_loop(0, reads, lambda i, total: total + jnp.sum((row_1x256 * i) @ x), 0.0)

  seconds = [
    min(time_jitted(fn, x, min_seconds=min_seconds / 2)[0].seconds)
    for fn in (sum_repeatedly, matvec_repeatedly)
  ]
  return reads * x.nbytes / min(seconds)  # A peak: the best call of the faster kernel.


def measure_device_rates(
  dtypes: tuple[str, ...] = ("float32",), min_seconds: float = 1.0
) -> DeviceRates:
  return DeviceRates(
    {dtype: measure_matmul_flops(dtype, min_seconds=min_seconds) for dtype in dtypes},
    measure_memory_bandwidth(min_seconds=min_seconds),
  )


def plot_decode_throughput(records: list[dict[str, Any]], path: str) -> None:
  """A PNG of generated tokens/s against batch size: one panel per model shape (columns) and
  dtype (rows), one line per strategy and implementation (decode.py records); variants
  such as "seq2seq_no_table" join their shape's panel."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  records = [r for r in records if "tokens_per_s" in r]
  shape_of = lambda r: r["model"].split("_")[0]
  shapes = sorted({shape_of(r) for r in records})
  dtypes = sorted({r["dtype"] for r in records}, key=lambda d: d != "float32")
  fig, axes = plt.subplots(
    len(dtypes), len(shapes), figsize=(6 * len(shapes), 4.5 * len(dtypes)), squeeze=False
  )
  for row, dtype in enumerate(dtypes):
    for column, shape in enumerate(shapes):
      ax = axes[row][column]
      panel = [r for r in records if shape_of(r) == shape and r["dtype"] == dtype]
      for line in sorted({(r["model"], r["strategy"], r["implementation"]) for r in panel}):
        points = sorted(
          (r["batch_size"], r["tokens_per_s"])
          for r in panel
          if (r["model"], r["strategy"], r["implementation"]) == line
        )
        model, strategy, implementation = line
        style = {"compiled": "-o", "naive": "--x"}.get(implementation, ":s")
        variant = model[len(shape) :].replace("_", " ").strip()
        label = f"{strategy} ({implementation}{', ' + variant if variant else ''})"
        ax.loglog(*zip(*points), style, label=label, markersize=4)
      ax.set_title(f"{shape}, {dtype}")
      ax.set_xlabel("batch size")
      ax.set_ylabel("generated tokens/s")
      ax.grid(True, which="both", alpha=0.3)
      if panel:
        ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


# ---- Output --------------------------------------------------------------------------------


def cpu_description() -> str:
  """The host CPU's model name and whether it has native bfloat16 dot products (AVX512-BF16 or
  AMX): machines differ between runs, so every benchmark names its CPU."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      info = f.read()
  except OSError:
    return "unknown"
  fields = {}  # The first processor's "name: value" lines.
  for line in info.splitlines():
    name, _, value = line.partition(":")
    fields.setdefault(name.strip(), value.strip())
  model = fields.get("model name", "unknown")
  bf16 = [flag for flag in ("avx512_bf16", "amx_bf16") if flag in fields.get("flags", "").split()]
  return f"{model} ({os.cpu_count()} cores, {', '.join(bf16) or 'no native bf16'})"


def device_description(device: jax.Device) -> str:
  return f"{device.platform}:{getattr(device, 'device_kind', '')}".rstrip(":")


def roofline_record(
  device: jax.Device,
  matmul_flops_per_s: dict[str, float],
  memory_bytes_per_s: float | None = None,
  host_fields: bool = False,
) -> dict[str, Any]:
  """The record of the rates measured at the start of a run ("bench": "roofline").

  host_fields: also the CPU (`cpu_description`) and GLIBC_TUNABLES, which move training speed.
  """
  record = dict(bench="roofline", device=device_description(device))
  if host_fields:
    record["cpu"] = cpu_description()
  record.update(num_devices=jax.device_count(), cpu_count=os.cpu_count())
  record.update({f"matmul_flops_per_s_{k}": v for k, v in matmul_flops_per_s.items()})
  if memory_bytes_per_s is not None:
    record["memory_bytes_per_s"] = memory_bytes_per_s
  record["jax_version"] = jax.__version__
  if host_fields:
    record["glibc_tunables"] = os.environ.get("GLIBC_TUNABLES", "")
  return record


class JsonLines:
  """A benchmark's output: one JSON line per record on stdout, also appended to `path` (its
  directory made first) when one is given."""

  def __init__(self, path: str | None = None):
    self._file = None
    if path:
      os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
      self._file = open(path, "a", encoding="utf-8")  # pylint: disable=consider-using-with

  def emit(self, record: dict[str, Any]) -> None:
    # Ten significant digits: a step time of 0.000444 s keeps its precision (six decimals
    # would cut it by a tenth of a percent).
    line = json.dumps(
      {k: (float(f"{v:.10g}") if isinstance(v, float) else v) for k, v in record.items()}
    )
    print(line, flush=True)
    if self._file is not None:
      self._file.write(line + "\n")
      self._file.flush()


def progress(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def import_torch_reference(skipping: str) -> ModuleType | None:
  """experiments.bench.torch_reference, or None with a note on stderr where torch is not
  installed (it is the optional `bench` extra); `skipping` names what is then left out."""
  try:
    from experiments.bench import torch_reference  # pylint: disable=import-outside-toplevel
  except ImportError:
    progress(f"note: torch is not installed (pip install -e '.[bench]'); skipping {skipping}")
    return None
  return torch_reference


def open_training_bench(
  output: str | None, dtypes: Sequence[str], min_seconds: float, with_torch: bool
) -> tuple[JsonLines, dict[str, float], ModuleType | None]:
  """The opening the training benchmarks share (bench.train, bench.population): the output, the
  peak matmul rate of each dtype (measured, emitted as the roofline record first) and the
  PyTorch reference when asked for and installed."""
  torch_reference = import_torch_reference("the PyTorch reference") if with_torch else None
  out = JsonLines(output)
  progress("measuring peak matmul rate")
  peak = {dtype: measure_matmul_flops(dtype, min_seconds=min_seconds) for dtype in dtypes}
  out.emit(roofline_record(jax.devices()[0], peak, host_fields=True))
  return out, peak, torch_reference
