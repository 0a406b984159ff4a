r"""Training speed: textgen-jax's train step against plain Flax and PyTorch, in interleaved rounds.

  python -m experiments.bench.train --output=runs/bench_train.jsonl      # the two workloads
  python -m experiments.bench.train --dtypes=float32,bfloat16 --flax=false
  python -m experiments.bench.train --lstm_backends=scan,cudnn           # on a GPU
  python -m experiments.bench.train --cells=lstm,gru     # the GRU: against nn.GRU and nn.GRUCell
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m experiments.bench.train \
      --num_devices=1,8 --flax=false --torch=false

Workloads (the issue-11 table, experiments/bench/shapes.py): "seq2seq" S, the seq2seq tutorial
shape (source vocab 80, target vocab 100, embedding 256, hidden 256, source 16 / target 60
tokens, batch 64), and "vae" V, the PTB VAE (vocab 10,000, embedding 256, hidden 512, latent 32,
40 tokens, batch 32, KL term). No dropout anywhere, so all three programs do the same work.

Programs (experiments/bench/programs.py): "jax" is the step training uses
(textgen_jax.training.train_step: loss, metric sums, gradients, norms, Adam, state donated,
laid out over n devices as training lays it out); "flax" is the plainest Flax linen version
(experiments/bench/flax_reference.py: nn.RNN(OptimizedLSTMCell), optax.adam, one jit); "torch"
is nn.LSTM + Adam (experiments/bench/torch_reference.py; the `bench` extra; on a CUDA GPU it
runs there, with cuDNN).

The machine drifts (a quarter within an hour on shared CPUs), so every program is compiled and
warmed first and then timed in rounds, A B C, A B C, ...: each round times every program for
--min_calls steps and --min_seconds. A ratio is computed round by round (same minute) and its
median reported with its range. One JSON line per program: target tokens/s (median round),
each round's tokens/s, compile time, the fraction of the dense FLOP bound (3 x forward matmul
FLOPs at the peak matmul rate measured at start) and the ratios.
"""

import dataclasses
import itertools
from typing import Any

import jax
import numpy as np
from absl import flags

from experiments.bench import common, programs as programs_lib
from experiments.bench.programs import Program
from experiments.bench.shapes import WORKLOADS, forward_macs_per_token
from textgen_jax import cli
from textgen_jax.errors import TextgenError
from textgen_jax.models import cudnn_lstm
from textgen_jax.models.rnn import CELLS, gate_count

SIZE_FLAGS = ("vocab_size", "embed_dim", "hidden_size", "latent_size", "length")

_SHAPES = flags.DEFINE_list("shapes", list(WORKLOADS), f"Workloads: {list(WORKLOADS)}.")
_SIZE_OVERRIDES = {
  name: flags.DEFINE_integer(name, None, f"Override the workloads' {name}.") for name in SIZE_FLAGS
}
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", [], "Batch sizes (default: each workload's).")
_DTYPES = flags.DEFINE_list("dtypes", ["float32"], "Matmul dtypes.")
_NUM_DEVICES = flags.DEFINE_list(
  "num_devices", ["1"], "Data-parallel device counts to compare ('all': every device)."
)
_UNROLLS = flags.DEFINE_list("scan_unrolls", ["1"], "LSTM time-loop unroll factors to compare.")
_BACKENDS = flags.DEFINE_list("lstm_backends", ["auto"], "model.lstm_backend values to compare.")
_CELLS = flags.DEFINE_list(
  "cells", ["lstm"], "model.cell values (each against its own Flax and PyTorch baselines)."
)
_FLAX = flags.DEFINE_bool("flax", True, "Time the plain Flax baseline (float32).")
_TORCH = flags.DEFINE_bool("torch", True, "Time the PyTorch reference too (when installed).")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved timing rounds.")
_MIN_SECONDS = flags.DEFINE_float("min_seconds", 1.0, "Time each program this long per round.")
_MIN_CALLS = flags.DEFINE_integer("min_calls", 3, "... and at least this many steps.")
_OUTPUT = flags.DEFINE_string("output", None, "Also append the JSON lines to this file.")


@dataclasses.dataclass(frozen=True)
class Settings:
  """The flags, read and checked once (see their help)."""

  shapes: tuple[str, ...]
  size_overrides: dict[str, int]  # Only the sizes given.
  batch_sizes: tuple[int, ...]  # Empty: each workload's own.
  dtypes: tuple[str, ...]
  device_counts: tuple[int, ...]  # Sorted, 'all' resolved.
  scan_unrolls: tuple[int, ...]
  lstm_backends: tuple[str, ...]
  cells: tuple[str, ...]
  flax: bool
  torch: bool
  rounds: int
  min_seconds: float
  min_calls: int
  output: str | None


def settings_from_flags() -> Settings:
  for name in _SHAPES.value:
    if name not in WORKLOADS:
      raise TextgenError(f"--shapes: unknown workload {name!r}; choose from {list(WORKLOADS)}")
  device_counts = sorted({jax.device_count() if n == "all" else int(n) for n in _NUM_DEVICES.value})
  if not all(0 < n <= jax.device_count() for n in device_counts):
    raise TextgenError(
      f"--num_devices={','.join(_NUM_DEVICES.value)}: there are "
      f"{jax.device_count()} devices (XLA_FLAGS="
      "--xla_force_host_platform_device_count=8 makes 8 on a CPU)"
    )
  for cell in _CELLS.value:
    if cell not in CELLS:
      raise TextgenError(f"--cells: unknown cell {cell!r}; choose from {list(CELLS)}")
  for backend, dtype, cell in itertools.product(_BACKENDS.value, _DTYPES.value, _CELLS.value):
    try:
      cudnn_lstm.resolve_backend(backend, dtype, cell)
    except TextgenError as e:
      raise TextgenError(f"--lstm_backends={backend}: {str(e).split(': ', 1)[1]}") from None
  return Settings(
    tuple(_SHAPES.value),
    {name: flag.value for name, flag in _SIZE_OVERRIDES.items() if flag.value is not None},
    tuple(int(b) for b in _BATCH_SIZES.value),
    tuple(_DTYPES.value),
    tuple(device_counts),
    tuple(int(u) for u in _UNROLLS.value),
    tuple(_BACKENDS.value),
    tuple(_CELLS.value),
    _FLAX.value,
    _TORCH.value,
    _ROUNDS.value,
    _MIN_SECONDS.value,
    _MIN_CALLS.value,
    _OUTPUT.value,
  )


def workload(name: str, settings: Settings) -> dict[str, int]:
  """The named workload with the sizes given by flag (vocabulary and length: source too)."""
  shape = dict(WORKLOADS[name])
  for key, value in settings.size_overrides.items():
    shape[key] = value
    if key in ("vocab_size", "length"):  # Source and target alike.
      shape["source_" + key] = value
  return shape


def record(
  program: Program,
  programs: list[Program],
  common_fields: dict[str, Any],
  flops_per_token: float,
  peak: dict[str, float],
) -> dict[str, Any]:
  """The program's JSON record with its round-by-round ratios to the other programs."""
  rate = float(np.median(program.round_rates))
  out = dict(
    common_fields,
    **program.fields,
    tokens_per_s=rate,
    step_s=common_fields["tokens"] / rate,
    rounds_tokens_per_s=program.round_rates,
    compile_s=program.compile_s,
    roofline_fraction=flops_per_token * rate / peak[program.fields["dtype"]],
  )
  for name, other in _baselines(program, programs).items():
    if other is not None:
      ratio, ratio_range = common.round_by_round_ratio(program.round_rates, other.round_rates)
      out[f"speedup_vs_{name}"] = ratio
      out[f"speedup_vs_{name}_range"] = ratio_range
  return out


def _baselines(program: Program, programs: list[Program]) -> dict[str, Program | None]:
  """What a jax program is compared with (possibly itself: a ratio of 1); nothing for others."""
  fields = program.fields
  if fields["implementation"] != "jax":
    return {}

  def baseline(**match):
    found = [p for p in programs if all(p.fields.get(k) == v for k, v in match.items())]
    return found[0] if found else None

  cell = fields["cell"]
  same = dict(
    implementation="jax",
    scan_unroll=fields["scan_unroll"],
    lstm_backend=fields["lstm_backend"],
    cell=cell,
  )
  return {
    "torch": baseline(implementation="torch", dtype=fields["dtype"], cell=cell),
    "flax": baseline(implementation="flax", cell=cell),
    "1_device": baseline(**same, dtype=fields["dtype"], num_devices=1),
    "float32": baseline(**same, dtype="float32", num_devices=fields["num_devices"]),
    "lstm": baseline(
      **dict(same, cell="lstm"), dtype=fields["dtype"], num_devices=fields["num_devices"]
    ),
    "scan": baseline(
      implementation="jax",
      scan_unroll=fields["scan_unroll"],
      cell=cell,
      lstm_backend="scan",
      dtype=fields["dtype"],
      num_devices=fields["num_devices"],
    ),
  }


def build_programs(
  name: str,
  shape: dict[str, int],
  batch_size: int,
  settings: Settings,
  torch_reference: Any,
  common_fields: dict[str, Any],
  out: common.JsonLines,
) -> list[Program]:
  programs = []
  for cell, dtype, unroll, backend, num_devices in itertools.product(
    settings.cells,
    settings.dtypes,
    settings.scan_unrolls,
    settings.lstm_backends,
    settings.device_counts,
  ):
    if batch_size % num_devices:
      out.emit(
        dict(
          common_fields,
          dtype=dtype,
          implementation="jax",
          num_devices=num_devices,
          cell=cell,
          skipped="batch not divisible",
        )
      )
      continue
    common.progress(
      f"{name} {cell} batch {batch_size} {dtype} unroll {unroll} {backend} "
      f"{num_devices} device(s): compiling"
    )
    programs.append(
      programs_lib.jax_program(name, shape, batch_size, dtype, unroll, backend, num_devices, cell)
    )
  for cell in settings.cells if settings.flax else []:
    programs.append(programs_lib.flax_program(name, shape, batch_size, cell))
  torch_runs = settings.cells if torch_reference is not None else []
  for cell, dtype in itertools.product(torch_runs, settings.dtypes):
    try:
      program = programs_lib.torch_program(torch_reference, shape, batch_size, dtype, cell)
      program.step()  # Fails here where, e.g., this CPU's torch cannot train bfloat16 LSTMs.
    except (RuntimeError, ValueError) as e:
      out.emit(
        dict(
          common_fields,
          dtype=dtype,
          cell=cell,
          implementation="torch",
          skipped=str(e).splitlines()[0][:200],
        )
      )
      continue
    programs.append(program)
  return programs


def time_in_rounds(programs: list[Program], tokens: int, settings: Settings) -> None:
  """Warm-up, then --rounds rounds A B C, A B C, ...: each round's tokens/s per program."""
  medians = common.time_in_rounds(
    [p.step for p in programs], settings.rounds, settings.min_calls, settings.min_seconds
  )
  for program, seconds in zip(programs, medians):
    program.round_rates.extend(tokens / s for s in seconds)


def run_workload(
  name: str, settings: Settings, peak: dict[str, float], torch_reference: Any, out: common.JsonLines
) -> None:
  shape = workload(name, settings)
  # Forward, then twice that backward; per cell (the GRU has 3 gates to the LSTM's 4).
  flops = {cell: 6.0 * forward_macs_per_token(shape, gate_count(cell)) for cell in settings.cells}
  for batch_size in settings.batch_sizes or [shape["batch_size"]]:
    common_fields = dict(
      bench="train",
      model=name,
      **dict(shape, batch_size=batch_size),
      device=common.device_description(jax.devices()[0]),
      tokens=batch_size * shape["length"],
    )
    programs = build_programs(
      name, shape, batch_size, settings, torch_reference, common_fields, out
    )
    common.progress(
      f"{name} batch {batch_size}: {settings.rounds} rounds of {len(programs)} programs"
    )
    time_in_rounds(programs, common_fields["tokens"], settings)
    for program in programs:
      cell_flops = flops[program.fields["cell"]]
      fields = dict(common_fields, flops_per_token=cell_flops)
      out.emit(record(program, programs, fields, cell_flops, peak))


def main(argv):
  del argv
  settings = settings_from_flags()
  out, peak, torch_reference = common.open_training_bench(
    settings.output, settings.dtypes, settings.min_seconds, settings.torch
  )
  for name in settings.shapes:
    run_workload(name, settings, peak, torch_reference, out)


if __name__ == "__main__":
  cli.run(main, huge_pages=True)
