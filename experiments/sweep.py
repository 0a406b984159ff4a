r"""A grid over the knobs that change shapes, each grid point a population of seeds.

  python experiments/sweep.py --workdir=runs/sweep --seeds=4 \
      --grid="data.max_examples=5000,20000;model.hidden_size=64,256;data.batch_size=32,64" \
      --config.train.num_steps=2000
  python experiments/sweep.py --config=experiments/configs/ptb_vae.py --workdir=runs/vae_sweep \
      --grid="model.latent_size=16,32" --seeds=2 --metric=valid_iw_nll_per_sentence

Every grid point is one program (its shapes differ from the others'), trained in
<workdir>/<point>/ as a population of --seeds members (seeds seed, seed + 1, ...), so each point
has a seed spread. Points already finished are read back, not retrained; a killed sweep resumes
with the same command. At the end it prints a table (mean and standard deviation over seeds of
--metric, and of each point's exact command), writes it to <workdir>/sweep.md and sweep.json,
and plots --metric against each knob with the seed spread as error bars (<workdir>/sweep.png;
each panel varies one knob with the others at their first value).
"""

import itertools
import json
import os
import shlex
import sys

import numpy as np
from absl import flags

from textgen_jax import cli, families, population
from textgen_jax.errors import TextgenError

_CONFIG = cli.define_config_file(
  os.path.join(os.path.dirname(__file__), "configs", "seq2seq_default.py"),
  "Config file; override fields with --config.<section>.<field>=value.",
)
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Directory of the sweep; one subdirectory per grid point.", required=True
)
_GRID = flags.DEFINE_string("grid", "", "Knobs and their values: 'field=v1,v2;field=v1,v2'.")
_SEEDS = flags.DEFINE_integer("seeds", 4, "Members (seeds) per grid point.")
_METRIC = flags.DEFINE_string("metric", "valid_loss", "Held-out metric of the table and plot.")


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


def run_point(config, point, workdir: str, metric: str) -> dict[str, object]:
  """Trains (or reads back) one grid point; its metric over the members that finished."""
  family = families.get(config.family)
  train, script = family.train_and_evaluate, family.train_script
  summary_path = os.path.join(workdir, population.SUMMARY_FILE)
  if not os.path.exists(summary_path):
    train(config, workdir)
  table = population.read_summary(workdir)
  values = [row[metric] for row in table["members"] if metric in row]
  if not values:
    raise TextgenError(f"--metric={metric}: {workdir} has no member with it")
  base_cmd = command(script, point, config.population.num_members, workdir)
  extra = " ".join(shlex.quote(arg) for arg in sys.argv[1:] if arg.startswith("--config."))
  return {
    **point,
    "point": os.path.basename(workdir),
    "mean": float(np.mean(values)),
    "std": float(np.std(values)),
    "num_seeds": len(values),
    "command": f"{base_cmd} {extra}".strip(),
  }


def write_table(
  rows: list[dict[str, object]], knobs: dict[str, list], metric: str, workdir: str
) -> str:
  header = [*knobs, f"{metric} mean", "std", "seeds"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for row in rows:
    cells = [str(row[k]) for k in knobs] + [
      f"{row['mean']:.4g}",
      f"{row['std']:.2g}",
      str(row["num_seeds"]),
    ]
    lines.append("| " + " | ".join(cells) + " |")
  lines += ["", "Commands (each point's population):", ""]
  lines += [f"    {row['command']}" for row in rows]
  text = "\n".join(lines) + "\n"
  with open(os.path.join(workdir, "sweep.md"), "w", encoding="utf-8") as f:
    f.write(text)
  with open(os.path.join(workdir, "sweep.json"), "w", encoding="utf-8") as f:
    json.dump(rows, f, indent=2)
  return text


def plot(rows: list[dict[str, object]], knobs: dict[str, list], metric: str, path: str) -> None:
  """One panel per knob: the metric against its values, the others at their first value."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, axes = plt.subplots(1, len(knobs), figsize=(4 * len(knobs), 3.2), squeeze=False)
  for ax, name in zip(axes[0], knobs):
    others = {k: values[0] for k, values in knobs.items() if k != name}
    chosen = [r for r in rows if all(r[k] == v for k, v in others.items())]
    ax.errorbar(
      [r[name] for r in chosen],
      [r["mean"] for r in chosen],
      yerr=[r["std"] for r in chosen],
      marker="o",
      capsize=3,
    )
    ax.set_xlabel(name)
    ax.set_ylabel(metric)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv):
  del argv
  base, metric = _CONFIG.value, _METRIC.value
  if _SEEDS.value < 1:
    raise TextgenError(f"--seeds must be at least 1, got {_SEEDS.value}")
  try:
    families.get(str(base.get("family")))
  except TextgenError as e:
    raise TextgenError(f"--config: {e}") from None
  knobs = parse_grid(_GRID.value, base)
  rows = []
  for values in itertools.product(*knobs.values()):
    point = dict(zip(knobs, values))
    workdir = os.path.join(_WORKDIR.value, point_name(point))
    print(f"== {point_name(point)}")
    rows.append(run_point(point_config(base, point, _SEEDS.value), point, workdir, metric))
  print(write_table(rows, knobs, metric, _WORKDIR.value))
  plot(rows, knobs, metric, os.path.join(_WORKDIR.value, "sweep.png"))


if __name__ == "__main__":
  cli.run(main, huge_pages=True)
