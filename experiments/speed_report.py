r"""Markdown tables (and the plot) from the JSON lines of bench_decode.py and bench_train.py.

  python experiments/speed_report.py --decode=runs/bench/decode.jsonl \
      --train=runs/bench/train.jsonl --plot=experiments/results/decode_speed.png

The tables are printed as measured: nothing is typed in by hand.
"""

import collections
import json
from typing import Any

from absl import flags

from textgen_jax import benchmarking, cli
from textgen_jax.errors import TextgenError

_DECODE = flags.DEFINE_string("decode", None, "bench_decode.py JSON lines.")
_TRAIN = flags.DEFINE_string("train", None, "bench_train.py JSON lines.")
_PLOT = flags.DEFINE_string("plot", None, "Write the tokens/s plot of the decode records here.")


def read_records(path: str) -> list[dict[str, Any]]:
  try:
    with open(path, encoding="utf-8") as f:
      return [json.loads(line) for line in f if line.strip()]
  except OSError as e:
    raise TextgenError(f"{path}: {e.strerror}") from None


def _rate(value: float | None) -> str:
  if value is None:
    return "-"
  return f"{value / 1000:,.1f}k" if value >= 1000 else f"{value:,.0f}"


def _ratio(value: float | None) -> str:
  return "-" if value is None else f"{value:.2f}x"


def _percent(value: float | None) -> str:
  return "-" if value is None else f"{100 * value:.0f}%"


def _table(header: list[str], rows: list[list[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def decode_tables(records: list[dict[str, Any]]) -> str:
  by_key = {(r["model"], r["dtype"], r["strategy"], r["implementation"], r["batch_size"]): r
            for r in records if r.get("bench") == "decode" and "tokens_per_s" in r}
  out = []
  for model, dtype in sorted({(k[0], k[1]) for k in by_key}):
    batches = sorted({k[4] for k in by_key if k[:2] == (model, dtype)})
    get = lambda s, i, b: by_key.get((model, dtype, s, i, b))  # pylint: disable=cell-var-from-loop
    rows = []
    for b in batches:
      greedy = get("greedy", "compiled", b)
      if greedy is None:
        continue
      naive, torch = get("greedy", "naive", b), get("greedy", "torch", b)
      rows.append([str(b), _rate(greedy["tokens_per_s"]),
                   f"{1000 * greedy['latency_p50_s']:.1f} / {1000 * greedy['latency_p90_s']:.1f}",
                   f"{greedy['compile_s']:.2f}", _percent(greedy["roofline_fraction"]),
                   _rate(naive and naive["tokens_per_s"]), _ratio(greedy.get("speedup_vs_naive")),
                   _rate(torch and torch["tokens_per_s"]), _ratio(greedy.get("speedup_vs_torch")),
                   "-" if greedy.get("program_memory_bytes") is None
                   else f"{greedy['program_memory_bytes'] / 2**20:.1f}"])
    if rows:
      out.append(f"#### Greedy decoding: {model}, {dtype}\n\n" + _table(
          ["batch", "tokens/s", "latency p50 / p90 ms", "compile s", "of roofline",
           "naive tokens/s", "vs naive", "torch tokens/s", "vs torch", "program MiB"], rows))
    strategies = [s for s in ("greedy", "sample", "top_k", "top_p", "beam")
                  if any(k[:3] == (model, dtype, s) for k in by_key)]
    if len(strategies) > 1:
      rows = []
      for b in batches:
        cells = [str(b)]
        for s in strategies:
          r = get(s, "compiled", b)
          cells.append("-" if r is None else
                       f"{_rate(r['tokens_per_s'])} ({_percent(r['roofline_fraction'])})")
        greedy, beam = get("greedy", "compiled", b), get("beam", "compiled", b)
        cells.append(_percent(beam["tokens_per_s"] / greedy["tokens_per_s"])
                     if greedy and beam else "-")
        sample = get("sample", "compiled", b)
        cells += [_ratio(sample and sample.get("speedup_vs_naive")),
                  _ratio(sample and sample.get("speedup_vs_torch"))]
        rows.append(cells)
      out.append(f"#### Every strategy, compiled: {model}, {dtype} (tokens/s, fraction of the "
                 "roofline)\n\n" + _table(
                     ["batch"] + strategies + ["beam / greedy", "sample vs naive",
                                               "sample vs torch"], rows))
  return "\n\n".join(out)


def train_table(records: list[dict[str, Any]]) -> str:
  rows = []
  for r in records:
    if r.get("bench") != "train" or "tokens_per_s" not in r:
      continue
    rows.append([r["model"], str(r["batch_size"]), r["dtype"], r["implementation"],
                 str(r.get("num_devices", 1)), str(r.get("scan_unroll", "-")),
                 _rate(r["tokens_per_s"]), f"{1000 * r['step_s']:.0f}",
                 "-" if r.get("compile_s") is None else f"{r['compile_s']:.1f}",
                 _percent(r["roofline_fraction"]), _ratio(r.get("speedup_vs_torch")),
                 _ratio(r.get("speedup_vs_1_device")), _ratio(r.get("speedup_vs_float32"))])
  return _table(["model", "batch", "dtype", "implementation", "devices", "scan unroll",
                 "tokens/s", "step ms", "compile s", "of FLOP bound", "vs torch", "vs 1 device",
                 "vs float32"], rows)


def roofline_lines(records: list[dict[str, Any]]) -> str:
  seen = collections.OrderedDict()
  for r in records:
    if r.get("bench") == "roofline":
      rates = ", ".join(f"{k.removeprefix('matmul_flops_per_s_')} matmul "
                        f"{v / 1e9:.0f} GFLOP/s" for k, v in r.items()
                        if k.startswith("matmul_flops_per_s_"))
      memory = r.get("memory_bytes_per_s")
      seen[rates + (f", memory read {memory / 1e9:.1f} GB/s" if memory else "")] = None
  return "\n".join(f"- {line}" for line in seen)


def main(argv):
  del argv
  if _DECODE.value:
    records = read_records(_DECODE.value)
    print("Device rates measured at the start of each run:\n")
    print(roofline_lines(records) + "\n")
    print(decode_tables(records) + "\n")
    if _PLOT.value:
      benchmarking.plot_decode_throughput(
          [r for r in records if r.get("bench") == "decode" and "tokens_per_s" in r],
          _PLOT.value)
  if _TRAIN.value:
    records = read_records(_TRAIN.value)
    print(roofline_lines(records) + "\n")
    print(train_table(records))


if __name__ == "__main__":
  cli.run(main)
