"""Populations: N runs that differ in seed and per-run settings, trained in one compiled program.

The config's `population` section names the members (`num_members`, `seeds`) and what differs
between them (`vary`, "field=v1,v2,...;field=..."). Every member's train state is stacked on a
leading member axis and one `jax.vmap`-ed step updates them all. What a member may vary is what
keeps shapes: its seed (parameter initialisation, dropout; run_keys), its learning rate (a
per-member factor on the shared optimizer's updates: Adam, AdamW and SGD updates are linear in
the learning rate), its dropout rates, and the settings its family's loss reads (label
smoothing; the VAE's KL schedule and its parameters, free bits and their mode, word dropout,
pretraining). A setting named by a word (the KL schedule) reaches the member as its index among
the family's choices (`Task.member_choices`). Everything else is shared.

Data (`population.data_order`): "shared" (the default): every member reads the same batches,
in the order of data.seed (or the population's seed). "member": member k's batches are filled
by its own seed's shuffle (data.shuffle_seed = its seed), so members see different examples
together and in a different order; the split and the sequence of batch lengths stay shared, so
each step's N batches have one shape (no padding, the same cost as shared batches, but N
batches to prepare and send per step).

`member_config(config, k)` is the ordinary config of member k: training it alone gives member k's
losses and parameters (to float rounding: the vmapped matmuls and the learning-rate factor round
differently), and `export_member` writes member k as an ordinary workdir.
"""

import dataclasses
import json
import os
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from textgen_jax import plateau
from textgen_jax.errors import TextgenError
from textgen_jax.files import write_atomically

# Fields every family's members may vary; a family adds the scalars its loss reads.
ENGINE_FIELDS = frozenset({"opt.learning_rate"})
DATA_ORDERS = ("shared", "member")
_FLAG = "--config.population"


@dataclasses.dataclass(frozen=True)
class Population:
  """The members: their seeds and, per varied field, one value each (a number, or a word for
  a field that names a choice); `data_order` is "shared" or "member" (see the module doc)."""

  seeds: tuple[int, ...]
  values: Mapping[str, tuple[float | str, ...]]
  data_order: str = "shared"
  vmap_size: int = 0  # Members per vmap, the step looping over the groups (0: all at once).

  @property
  def size(self) -> int:
    return len(self.seeds)

  def hyperparameters(
    self, choices: Mapping[str, Sequence[str]] | None = None
  ) -> dict[str, jax.Array]:
    """Each varied field's values as a [N] float32 array (traced per member under vmap); a
    word is its index in choices[field]."""
    arrays = {}
    for name, values in self.values.items():
      if isinstance(values[0], str):
        options = tuple((choices or {}).get(name, ()))
        if any(value not in options for value in values):
          raise TextgenError(
            f"{_FLAG}.vary: {name} takes one of {', '.join(options) or 'no words'}"
            f", got {', '.join(values)}"
          )
        values = tuple(float(options.index(value)) for value in values)
      arrays[name] = jnp.asarray(values, jnp.float32)
    return arrays


def _parse_value(text: str) -> float | str:
  try:
    return float(text)
  except ValueError:
    return text


def _parse_vary(vary: str, size: int) -> dict[str, tuple[float | str, ...]]:
  values = {}
  for item in filter(None, (part.strip() for part in vary.split(";"))):
    name, sep, listed = item.partition("=")
    parsed = tuple(_parse_value(v.strip()) for v in listed.split(","))
    if not sep or "" in parsed or len({type(v) for v in parsed}) != 1:
      raise TextgenError(
        f"{_FLAG}.vary: {item!r} is not field=v1,v2,... (all numbers, or all "
        "words for a field that names a choice)"
      )
    if len(parsed) != size:
      raise TextgenError(
        f"{_FLAG}.vary: {name.strip()} has {len(parsed)} values for {size} members"
      )
    values[name.strip()] = parsed
  return values


def parse(
  config: ml_collections.ConfigDict, per_member: Collection[str] | None = ENGINE_FIELDS
) -> Population | None:
  """The population the config describes, or None for one ordinary run; errors name the flag.
  per_member: the fields members may vary (None: a saved config's, already checked)."""
  section = config.get("population")
  if section is None or section.num_members in (0, 1) and not section.seeds and not section.vary:
    return None
  if section.num_members < 1:
    raise TextgenError(f"{_FLAG}.num_members must be at least 1, got {section.num_members}")
  size = section.num_members
  try:
    seeds = (
      tuple(int(s) for s in section.seeds.split(","))
      if section.seeds
      else tuple(config.seed + i for i in range(size))
    )
  except ValueError:
    raise TextgenError(f"{_FLAG}.seeds={section.seeds!r}: integers separated by commas") from None
  if len(seeds) != size:
    raise TextgenError(f"{_FLAG}.seeds has {len(seeds)} seeds for {size} members")
  values = _parse_vary(section.vary, size)
  for name in values if per_member is not None else ():
    _check_field(config, name, values[name], per_member)
  data_order = section.get("data_order", "shared")
  if data_order not in DATA_ORDERS:
    raise TextgenError(f"{_FLAG}.data_order={data_order!r}: choose shared or member")
  vmap_size = section.get("vmap_size", 0)
  if vmap_size < 0:
    raise TextgenError(f"{_FLAG}.vmap_size must not be negative, got {vmap_size}")
  return Population(seeds, values, data_order, 0 if vmap_size >= size else vmap_size)


def _check_field(
  config: ml_collections.ConfigDict,
  name: str,
  values: tuple[float | str, ...],
  per_member: Collection[str],
) -> None:
  section, _, field = name.partition(".")
  if section not in config or field not in config[section]:
    raise TextgenError(f"{_FLAG}.vary: no config field {name}")
  if name not in per_member:
    raise TextgenError(
      f"{_FLAG}.vary: {name} cannot differ between the members of one program (they may "
      f"differ in: seed, {', '.join(sorted(per_member))}); a field that changes shapes or "
      "code runs as separate programs (experiments/sweep.py)"
    )
  if isinstance(config[section][field], str) != isinstance(values[0], str):
    kind = "words" if isinstance(config[section][field], str) else "numbers"
    raise TextgenError(f"{_FLAG}.vary: {name} takes {kind}, got {', '.join(map(str, values))}")


def member_config(
  config: ml_collections.ConfigDict, index: int, population: Population
) -> ml_collections.ConfigDict:
  """Member `index` as an ordinary run: its seed and values, the population's data split, and
  the population's data order (data_order "shared") or its own seed's ("member")."""
  if not 0 <= index < population.size:
    raise TextgenError(f"--member={index}: the population has members 0 to {population.size - 1}")
  member = ml_collections.ConfigDict(config.to_dict())
  member.data.seed = member.data.seed if member.data.seed >= 0 else config.seed
  member.seed = population.seeds[index]
  if population.data_order == "member":
    member.data.shuffle_seed = population.seeds[index]
  for name, values in population.values.items():
    section, field = name.split(".")
    value = values[index]
    member[section][field] = int(value) if isinstance(member[section][field], int) else value
  member.population.num_members, member.population.seeds, member.population.vary = 0, "", ""
  member.population.data_order, member.population.vmap_size = "shared", 0
  return member


# ---- The learning rate per member (training.learning_rate_ratio scales the updates) -------


def set_learning_rates(opt_state: Any, population: Population, base_rate: float) -> Any:
  """The stacked optimizer state with each member's learning-rate ratio."""
  rates = population.values.get("opt.learning_rate")
  if rates is None:
    return opt_state
  ratio = jnp.asarray(np.asarray(rates, np.float64) / base_rate, jnp.float32)
  return optax.tree_utils.tree_set(opt_state, learning_rate_ratio=ratio)


def member(tree: Any, index: int) -> Any:
  """Member `index` of a stacked tree (parameters, train state, metric sums)."""
  return jax.tree.map(lambda x: x[index], tree)


# ---- The end of a run: the members' table ------------------------------------------------

SUMMARY_FILE = "members.json"


def summary(
  held_out: Mapping[int, Mapping[str, Any]],
  population: Population,
  dropped: Mapping[int, int],
  select_metric: str,
) -> dict[str, Any]:
  """Each member's seed, values and last held-out metrics (`held_out`: member -> its last
  evaluation, "step" and "valid_*" values), and the best by `select_metric`."""
  rows = []
  for index, seed in enumerate(population.seeds):
    row = {
      "member": index,
      "seed": seed,
      **{name: values[index] for name, values in population.values.items()},
    }
    if index in dropped:
      row["dropped_at_step"] = dropped[index]
    elif index in held_out:
      row.update(held_out[index])
    rows.append(row)
  ranked = [row for row in rows if select_metric in row]
  if not ranked:
    raise TextgenError(
      f"--config.population.select_metric={select_metric!r}: no member has "
      "it (held-out metrics are named valid_<name>, e.g. valid_loss)"
    )
  higher = plateau.higher_is_better(select_metric)
  best = (max if higher else min)(ranked, key=lambda row: row[select_metric])["member"]
  return {"select_metric": select_metric, "best": best, "members": rows}


def ranking_to_json(
  held_out: Mapping[int, Mapping[str, Any]], dropped: Mapping[int, int], best: int | None
) -> dict[str, Any]:
  """What ranks the members, as a checkpoint's run state holds it (member indices as strings)."""
  return {
    "dropped": {str(k): v for k, v in dropped.items()},
    "held_out": {str(k): v for k, v in held_out.items()},
    "best": best,
  }


def ranking_from_json(
  saved: Mapping[str, Any],
) -> tuple[dict[int, dict[str, Any]], dict[int, int], int | None]:
  """(held_out, dropped, best) from what ranking_to_json wrote."""
  held_out = {int(k): v for k, v in saved.get("held_out", {}).items()}
  dropped = {int(k): v for k, v in saved.get("dropped", {}).items()}
  return held_out, dropped, saved.get("best")


def held_out_from_records(records: Sequence[Mapping[str, Any]]) -> dict[int, dict[str, Any]]:
  """Each member's last evaluation ("step" and "valid_*" values) as metrics.jsonl logged it:
  for a workdir whose checkpoints predate the run state."""
  held_out = {}
  for record in records:
    if "member" in record and any(k.startswith("valid_") for k in record):
      held_out[record["member"]] = {
        k: v for k, v in record.items() if k.startswith("valid_") or k == "step"
      }
  return held_out


def write_summary(workdir: str, table: dict[str, Any]) -> None:
  """Prints the members' table and writes it to <workdir>/members.json."""
  metric = table["select_metric"]
  print(f"members (best by {metric}: member {table['best']}):")
  for row in table["members"]:
    varied = ", ".join(
      f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
      for k, v in row.items()
      if k not in ("member", "seed", "step")
      and not k.startswith("valid_")
      and k != "dropped_at_step"
    )
    result = (
      f"dropped at step {row['dropped_at_step']}"
      if "dropped_at_step" in row
      else f"{metric} {row.get(metric, float('nan')):.4g}"
    )
    mark = "*" if row["member"] == table["best"] else " "
    print(
      f" {mark} member {row['member']}: seed {row['seed']}"
      f"{', ' + varied if varied else ''}: {result}"
    )
  write_atomically(os.path.join(workdir, SUMMARY_FILE), json.dumps(table, indent=2))


def read_summary(workdir: str) -> dict[str, Any]:
  """The members' table a finished population wrote (see `summary`)."""
  path = os.path.join(workdir, SUMMARY_FILE)
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    raise TextgenError(f"{path}: not found; is {workdir} a finished population run?") from None
