r"""Markdown tables (and the plot) from the JSON lines of experiments.bench.decode and .train.

  python -m experiments.bench.report --decode=runs/bench/decode.jsonl \
      --train=runs/bench/train.jsonl --plot=experiments/results/decode_speed.png

The tables are printed as measured: nothing is typed in by hand.
"""

import collections
import json
from typing import Any

from absl import flags

from experiments.bench import common
from textgen_jax import cli
from textgen_jax.errors import TextgenError

_DECODE = flags.DEFINE_string("decode", None, "JSON lines of experiments.bench.decode.")
_TRAIN = flags.DEFINE_string("train", None, "JSON lines of experiments.bench.train.")
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
  by_key = {
    (r["model"], r["dtype"], r["strategy"], r["implementation"], r["batch_size"]): r
    for r in records
    if r.get("bench") == "decode" and "tokens_per_s" in r
  }
  out = []
  for model, dtype in sorted({(k[0], k[1]) for k in by_key}):
    batches = sorted({k[4] for k in by_key if k[:2] == (model, dtype)})
    get = lambda s, i, b, m=model, d=dtype: by_key.get((m, d, s, i, b))
    rows = []
    for b in batches:
      greedy = get("greedy", "compiled", b)
      if greedy is None:
        continue
      naive, torch = get("greedy", "naive", b), get("greedy", "torch", b)
      rows.append(
        [
          str(b),
          _rate(greedy["tokens_per_s"]),
          f"{1000 * greedy['latency_p50_s']:.1f} / {1000 * greedy['latency_p90_s']:.1f}",
          f"{greedy['compile_s']:.2f}",
          _percent(greedy["roofline_fraction"]),
          _rate(naive and naive["tokens_per_s"]),
          _ratio(greedy.get("speedup_vs_naive")),
          _rate(torch and torch["tokens_per_s"]),
          _ratio(greedy.get("speedup_vs_torch")),
          "-"
          if greedy.get("program_memory_bytes") is None
          else f"{greedy['program_memory_bytes'] / 2**20:.1f}",
        ]
      )
    if rows:
      out.append(
        f"#### Greedy decoding: {model}, {dtype}\n\n"
        + _table(
          [
            "batch",
            "tokens/s",
            "latency p50 / p90 ms",
            "compile s",
            "of roofline",
            "naive tokens/s",
            "vs naive",
            "torch tokens/s",
            "vs torch",
            "program MiB",
          ],
          rows,
        )
      )
    strategies = [
      s
      for s in ("greedy", "sample", "top_k", "top_p", "beam")
      if any(k[:3] == (model, dtype, s) for k in by_key)
    ]
    if len(strategies) > 1:
      rows = []
      for b in batches:
        cells = [str(b)]
        for s in strategies:
          r = get(s, "compiled", b)
          cells.append(
            "-" if r is None else f"{_rate(r['tokens_per_s'])} ({_percent(r['roofline_fraction'])})"
          )
        greedy, beam = get("greedy", "compiled", b), get("beam", "compiled", b)
        cells.append(
          _percent(beam["tokens_per_s"] / greedy["tokens_per_s"]) if greedy and beam else "-"
        )
        sample = get("sample", "compiled", b)
        cells += [
          _ratio(sample and sample.get("speedup_vs_naive")),
          _ratio(sample and sample.get("speedup_vs_torch")),
        ]
        rows.append(cells)
      out.append(
        f"#### Every strategy, compiled: {model}, {dtype} (tokens/s, fraction of the "
        "roofline)\n\n"
        + _table(
          ["batch"] + strategies + ["beam / greedy", "sample vs naive", "sample vs torch"], rows
        )
      )
  return "\n\n".join(out)


def train_table(records: list[dict[str, Any]]) -> str:
  """One row per program; ratios are medians of round-by-round ratios, with their range."""
  rows = []
  for r in records:
    if r.get("bench") != "train" or "tokens_per_s" not in r:
      continue
    rounds = r.get("rounds_tokens_per_s") or []
    rows.append(
      [
        r["model"],
        str(r["batch_size"]),
        r["dtype"],
        r["implementation"],
        r.get("lstm_backend", "-"),
        str(r.get("scan_unroll", "-")),
        str(r.get("num_devices", 1)),
        _rate(r["tokens_per_s"]),
        " ".join(_rate(x) for x in rounds) or "-",
        f"{1000 * r['step_s']:.0f}",
        "-" if r.get("compile_s") is None else f"{r['compile_s']:.1f}",
        _percent(r["roofline_fraction"]),
      ]
      + [_ratio_range(r, f"speedup_vs_{name}") for name in ("torch", "flax", "float32", "1_device")]
    )
  return _table(
    [
      "model",
      "batch",
      "dtype",
      "program",
      "LSTM",
      "unroll",
      "devices",
      "tokens/s",
      "rounds",
      "step ms",
      "compile s",
      "of dense FLOP bound",
      "vs torch",
      "vs flax",
      "vs float32",
      "vs 1 device",
    ],
    rows,
  )


def _ratio_range(record: dict[str, Any], key: str) -> str:
  """ "1.18x (0.99-2.00)": the median round-by-round ratio and its range, or "-"."""
  if key not in record:
    return "-"
  low, high = record.get(key + "_range", (None, None))
  spread = f" ({low:.2f}-{high:.2f})" if low is not None else ""
  return _ratio(record[key]) + spread


def roofline_lines(records: list[dict[str, Any]]) -> str:
  seen = collections.OrderedDict()
  for r in records:
    if r.get("bench") == "roofline":
      rates = ", ".join(
        f"{k.removeprefix('matmul_flops_per_s_')} matmul {v / 1e9:.0f} GFLOP/s"
        for k, v in r.items()
        if k.startswith("matmul_flops_per_s_")
      )
      memory = r.get("memory_bytes_per_s")
      cpu = f" ({r['cpu']})" if r.get("cpu") else ""
      seen[rates + (f", memory read {memory / 1e9:.1f} GB/s" if memory else "") + cpu] = None
  return "\n".join(f"- {line}" for line in seen)


def main(argv):
  del argv
  if _DECODE.value:
    records = read_records(_DECODE.value)
    print("Device rates measured at the start of each run:\n")
    print(roofline_lines(records) + "\n")
    print(decode_tables(records) + "\n")
    if _PLOT.value:
      common.plot_decode_throughput(
        [r for r in records if r.get("bench") == "decode" and "tokens_per_s" in r], _PLOT.value
      )
  if _TRAIN.value:
    records = read_records(_TRAIN.value)
    print(roofline_lines(records) + "\n")
    print(train_table(records))


if __name__ == "__main__":
  cli.run(main)
