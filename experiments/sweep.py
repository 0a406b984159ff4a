r"""A grid over the knobs that change shapes, each grid point a population of seeds.

  python experiments/sweep.py --workdir=runs/sweep --seeds=4 \
      --grid="data.max_examples=5000,20000;model.hidden_size=64,256;data.batch_size=32,64" \
      --config.train.num_steps=2000
  python experiments/sweep.py --config=experiments/configs/ptb_vae.py --workdir=runs/vae_sweep \
      --grid="model.latent_size=16,32" --seeds=2 --metric=valid_iw_nll_per_sentence

  # One knob at a time around a centre (each knob's first value), plus one interaction:
  python experiments/sweep.py --config=experiments/configs/fr_en.py --workdir=runs/knobs \
      --design=around --interaction=data.train_examples,model.hidden_size --seeds=3 \
      --grid="data.train_examples=38000,5000,20000;model.hidden_size=256,128,512" \
      --metric=valid_greedy_bleu,valid_greedy_chrf,valid_loss

Every grid point is one program (its shapes differ from the others'), trained in
<workdir>/<point>/ as a population of --seeds members (seeds seed, seed + 1, ...), so each point
has a seed spread. --design=grid trains every combination of the knobs' values; --design=around
trains the centre and each knob's other values with the rest at the centre, and with
--interaction=a,b every combination of those two. Points already finished are read back, not
retrained; a killed sweep resumes with the same command. At the end it prints a table (mean and
standard deviation over seeds of each --metric, the point's training minutes, wall and CPU, and
its exact command), writes it to <workdir>/sweep.md and sweep.json, and plots each --metric against each
knob with the seed spread as error bars (<workdir>/sweep.png: a row per metric, a panel per knob,
the other knobs at their first value).
"""

import itertools
import json
import os
import shlex
import sys
import time

import numpy as np
from absl import flags

from textgen_jax import cli, families, population
from textgen_jax.errors import TextgenError

# A finished point's training time, read back with it.
POINT_FILE = "sweep_point.json"


def design_points(knobs: dict[str, list], design: str, interaction: list[str]) -> list[dict]:
  """The grid points, in order, without repeats: every combination (grid), or the centre (each
  knob's first value), each other value of one knob alone, then the interaction's product."""
  if design == "grid":
    if interaction:
      raise TextgenError("--interaction needs --design=around (a grid has every combination)")
    return [dict(zip(knobs, values)) for values in itertools.product(*knobs.values())]
  centre = {name: values[0] for name, values in knobs.items()}
  points = [centre] + [
    {**centre, name: value} for name, values in knobs.items() for value in values[1:]
  ]
  if interaction:
    if len(interaction) != 2 or not set(interaction) <= set(knobs):
      raise TextgenError(f"--interaction: give two knobs of --grid, got {','.join(interaction)}")
    first, second = interaction
    points += [{**centre, first: a, second: b} for a in knobs[first] for b in knobs[second]]
  unique = []
  for point in points:
    if point not in unique:
      unique.append(point)
  return unique


def parse_grid(grid: str, config) -> dict[str, list]:
  """'field=v1,v2;...' -> {field: [values cast to the field's type]}, errors naming --grid."""
  knobs = {}
  for item in filter(None, (part.strip() for part in grid.split(";"))):
    name, sep, listed = item.partition("=")
    name = name.strip()
    section, _, field = name.partition(".")
    if not sep or section not in config or field not in config[section]:
      raise TextgenError(f"--grid: {item!r} is not <config field>=v1,v2,...")
    kind = type(config[section][field])
    try:
      knobs[name] = [kind(v.strip()) for v in listed.split(",")]
    except ValueError:
      raise TextgenError(f"--grid: {name} takes {kind.__name__} values, got {listed!r}") from None
  if not knobs:
    raise TextgenError("--grid is empty; give at least one field=v1,v2,...")
  return knobs


def point_name(point: dict[str, object]) -> str:
  return "_".join(f"{name.split('.')[-1]}{value}" for name, value in point.items())


def point_config(base, point: dict[str, object], num_seeds: int):
  config = base.copy_and_resolve_references()
  for name, value in point.items():
    section, field = name.split(".")
    config[section][field] = value
  config.population.num_members = num_seeds
  config.population.seeds = ",".join(str(config.seed + i) for i in range(num_seeds))
  return config


def command(script: str, point: dict[str, object], num_seeds: int, workdir: str) -> str:
  flags_ = [f"--config.{name}={value}" for name, value in point.items()]
  return " ".join(
    [
      "python",
      script,
      f"--workdir={workdir}",
      f"--config.population.num_members={num_seeds}",
      *flags_,
    ]
  )


def run_point(config, point, workdir: str, metrics: list[str]) -> dict[str, object]:
  """Trains (or reads back) one grid point; each metric's mean and spread over the members
  that finished ("mean" and "std" are the first metric's), and the training minutes."""
  family = families.get(config.family)
  train, script = family.train_and_evaluate, family.train_script
  summary_path = os.path.join(workdir, population.SUMMARY_FILE)
  point_path = os.path.join(workdir, POINT_FILE)
  if not os.path.exists(summary_path):
    # CPU time beside wall time: with other jobs on the machine, the CPU seconds this process
    # used (every thread's) are the fairer cost.
    start, cpu_start = time.perf_counter(), time.process_time()
    train(config, workdir)
    with open(point_path, "w", encoding="utf-8") as f:
      json.dump(
        {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start}, f
      )
  timing = {}
  if os.path.exists(point_path):  # Absent for a point trained before the times were kept.
    with open(point_path, encoding="utf-8") as f:
      timing = json.load(f)
  table = population.read_summary(workdir)
  summaries, counts = {}, []
  for metric in metrics:
    values = [row[metric] for row in table["members"] if metric in row]
    if not values:
      raise TextgenError(f"--metric={metric}: {workdir} has no member with it")
    summaries[metric] = {"mean": float(np.mean(values)), "std": float(np.std(values))}
    counts.append(len(values))
  base_cmd = command(script, point, config.population.num_members, workdir)
  extra = " ".join(shlex.quote(arg) for arg in sys.argv[1:] if arg.startswith("--config."))
  return {
    **point,
    "point": os.path.basename(workdir),
    **summaries[metrics[0]],
    "metrics": summaries,
    "num_seeds": min(counts),
    "minutes": timing["seconds"] / 60 if "seconds" in timing else None,
    "cpu_minutes": timing["cpu_seconds"] / 60 if "cpu_seconds" in timing else None,
    "command": f"{base_cmd} {extra}".strip(),
  }


def write_table(
  rows: list[dict[str, object]], knobs: dict[str, list], metrics: list[str], workdir: str
) -> str:
  header = [*knobs, *(f"{metric} {stat}" for metric in metrics for stat in ("mean", "std"))]
  header += ["seeds", "minutes", "CPU minutes"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for row in rows:
    cells = [str(row[k]) for k in knobs]
    for metric in metrics:
      summary = row["metrics"][metric]
      cells += [f"{summary['mean']:.4g}", f"{summary['std']:.2g}"]
    cells.append(str(row["num_seeds"]))
    cells += ["?" if row[key] is None else f"{row[key]:.1f}" for key in ("minutes", "cpu_minutes")]
    lines.append("| " + " | ".join(cells) + " |")
  lines += ["", "Commands (each point's population):", ""]
  lines += [f"    {row['command']}" for row in rows]
  text = "\n".join(lines) + "\n"
  with open(os.path.join(workdir, "sweep.md"), "w", encoding="utf-8") as f:
    f.write(text)
  with open(os.path.join(workdir, "sweep.json"), "w", encoding="utf-8") as f:
    json.dump(rows, f, indent=2)
  return text


def plot(
  rows: list[dict[str, object]], knobs: dict[str, list], metrics: list[str], path: str
) -> None:
  """A row per metric, a panel per knob: the metric against the knob's values (sorted), the
  other knobs at their first value, the seeds' spread as error bars."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, axes = plt.subplots(
    len(metrics), len(knobs), figsize=(4 * len(knobs), 3.2 * len(metrics)), squeeze=False
  )
  for metric, axes_row in zip(metrics, axes):
    for ax, name in zip(axes_row, knobs):
      others = {k: values[0] for k, values in knobs.items() if k != name}
      chosen = sorted(
        (r for r in rows if all(r[k] == v for k, v in others.items())), key=lambda r: r[name]
      )
      ax.errorbar(
        [r[name] for r in chosen],
        [r["metrics"][metric]["mean"] for r in chosen],
        yerr=[r["metrics"][metric]["std"] for r in chosen],
        marker="o",
        capsize=3,
      )
      ax.set_xlabel(name)
      ax.set_ylabel(metric)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def define_flags() -> None:
  """The command line's flags (defined when run as a script, so tests import it freely)."""
  cli.define_config_file(
    os.path.join(os.path.dirname(__file__), "configs", "seq2seq_default.py"),
    "Config file; override fields with --config.<section>.<field>=value.",
  )
  flags.DEFINE_string(
    "workdir", None, "Directory of the sweep; one subdirectory per grid point.", required=True
  )
  flags.DEFINE_string("grid", "", "Knobs and their values: 'field=v1,v2;field=v1,v2'.")
  flags.DEFINE_integer("seeds", 4, "Members (seeds) per grid point.")
  flags.DEFINE_list(
    "metric",
    ["valid_loss"],
    "Held-out metrics of the table and plot (sweep.json's mean and std are the first one's).",
  )
  flags.DEFINE_enum(
    "design", "grid", ["grid", "around"], "Every combination, or one knob at a time."
  )
  flags.DEFINE_list(
    "interaction", [], "--design=around: two knobs whose every combination is trained too."
  )


def main(argv):
  del argv
  args = flags.FLAGS
  base, metrics = args.config, args.metric
  if args.seeds < 1:
    raise TextgenError(f"--seeds must be at least 1, got {args.seeds}")
  try:
    families.get(str(base.get("family")))
  except TextgenError as e:
    raise TextgenError(f"--config: {e}") from None
  knobs = parse_grid(args.grid, base)
  rows = []
  for point in design_points(knobs, args.design, args.interaction):
    workdir = os.path.join(args.workdir, point_name(point))
    print(f"== {point_name(point)}")
    rows.append(run_point(point_config(base, point, args.seeds), point, workdir, metrics))
  print(write_table(rows, knobs, metrics, args.workdir))
  plot(rows, knobs, metrics, os.path.join(args.workdir, "sweep.png"))


if __name__ == "__main__":
  define_flags()
  cli.run(main, huge_pages=True)
