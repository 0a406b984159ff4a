r"""Populations: N members trained by one vmapped step against the same N trained one by one.

  python -m experiments.bench.population --output=runs/bench/population.jsonl
  python -m experiments.bench.population --shapes=study --members=1,2,4,8 --torch=false

For each workload and N, the programs are timed in interleaved rounds (A B C, A B C, ...):
"vmapped" (textgen_jax.training.population_train_step over N stacked members on one device, the
step config.population trains with), "looped" (the same step with population.vmap_size=1: one
program that takes the members one at a time, lax.map, no vmap; only with --looped),
"vmapped_over_devices" (the same step with the member axis
laid over M devices, parallel.member_shards = M: M = the largest divisor of N up to the device
count; only with several devices, e.g. XLA_FLAGS=--xla_force_host_platform_device_count=2 on a
2-core CPU, where each device is a thread of its own), "sequential" (textgen-jax's one-run step
called N times, one per member state, on device 0) and "torch_sequential" (PyTorch's nn.LSTM +
Adam step called N times). One JSON
line per program: target tokens/s of all N members together (median round), the round-by-round
ratios to the other two, compile time and the fraction of the FLOP bound (3 x forward matmul
FLOPs at the peak matmul rate measured at start).

Workloads: "seq2seq" and "vae" as in train.py, and "study" (embedding 64, hidden 64, batch 16,
20 tokens, vocabularies 80/100: the kind of model a seed or hyperparameter sweep trains many of).
"""

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags

from experiments.bench import common, programs as programs_lib
from experiments.bench.shapes import WORKLOADS, forward_macs_per_token
from textgen_jax import cli, parallel, run_spec, training
from textgen_jax.config import parallel_section
from textgen_jax.errors import TextgenError

SHAPES = dict(
  WORKLOADS,
  study=dict(
    source_vocab_size=80,
    vocab_size=100,
    embed_dim=64,
    hidden_size=64,
    latent_size=0,
    source_length=20,
    length=20,
    batch_size=16,
  ),
)

_SHAPES = flags.DEFINE_list("shapes", ["study", "seq2seq", "vae"], f"Of {list(SHAPES)}.")
_MEMBERS = flags.DEFINE_list("members", ["1", "2", "4", "8"], "Population sizes N.")
_TORCH = flags.DEFINE_bool("torch", True, "Time PyTorch's N sequential steps too.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved timing rounds.")
_MIN_SECONDS = flags.DEFINE_float("min_seconds", 1.0, "Time each program this long per round.")
_MIN_CALLS = flags.DEFINE_integer("min_calls", 3, "... and at least this many steps.")
_OUTPUT = flags.DEFINE_string("output", None, "Also append the JSON lines to this file.")
_LOOPED = flags.DEFINE_bool("looped", False, "Time the population step with vmap_size=1 too.")


@dataclasses.dataclass(frozen=True)
class Settings:
  shapes: tuple[str, ...]
  members: tuple[int, ...]
  torch: bool
  rounds: int
  min_seconds: float
  min_calls: int
  output: str | None
  looped: bool = False


def settings_from_flags() -> Settings:
  for name in _SHAPES.value:
    if name not in SHAPES:
      raise TextgenError(f"--shapes: unknown workload {name!r}; choose from {list(SHAPES)}")
  try:
    members = tuple(int(n) for n in _MEMBERS.value)
  except ValueError:
    raise TextgenError(f"--members={','.join(_MEMBERS.value)}: integers") from None
  if not all(n >= 1 for n in members):
    raise TextgenError(f"--members={','.join(_MEMBERS.value)}: each must be at least 1")
  return Settings(
    tuple(_SHAPES.value),
    members,
    _TORCH.value,
    _ROUNDS.value,
    _MIN_SECONDS.value,
    _MIN_CALLS.value,
    _OUTPUT.value,
    _LOOPED.value,
  )


def scan_model_and_loss(shape: dict[str, int]) -> tuple[Any, Callable[..., Any]]:
  kind = "seq2seq" if shape["latent_size"] == 0 else "vae"
  return programs_lib.model_and_loss(kind, shape, "float32", 1, "scan")


def _init_fn(model: Any, batch: dict[str, jax.Array]) -> Callable[[jax.Array], Any]:
  return lambda key: training.create_train_state(
    None,
    model.init(key, batch["inputs"][:1], batch["input_lengths"][:1], batch["targets"][:1]),
    optax.adam(1e-3),
  )


def _member_keys(num_members: int) -> jax.Array:
  return jax.random.split(jax.random.key(2), num_members)


def _states(model: Any, batch: dict[str, jax.Array], num_members: int) -> Any:
  """num_members train states (distinct seeds), stacked on a leading member axis."""
  # lax.map: a vmapped orthogonal init (batched QR) deadlocks XLA:CPU here; see loop.
  states = jax.jit(lambda keys: jax.lax.map(_init_fn(model, batch), keys))(
    _member_keys(num_members)
  )
  return jax.block_until_ready(states)


def vmapped_program(
  shape: dict[str, int], num_members: int, vmap_size: int = 0
) -> programs_lib.Program:
  batch = programs_lib.random_batch(shape, shape["batch_size"])
  model, loss_fn = scan_model_and_loss(shape)
  state = _states(model, batch, num_members)
  # Member k's keys are run_keys(k) and no hyperparameter varies: the seed sweep's program.
  members = (jax.vmap(run_spec.run_keys)(jnp.arange(num_members)), {})
  step = jax.jit(
    functools.partial(
      training.population_train_step,
      make_hooks=lambda hyper, keys: (loss_fn, None),
      vmap_size=vmap_size,
    ),
    donate_argnums=0,
  )
  compile_s, compiled = common.time_compile(step, state, batch, members)
  implementation = "looped" if vmap_size == 1 else "vmapped"
  return programs_lib.Program(
    dict(implementation=implementation, num_members=num_members),
    programs_lib.threaded(compiled, state, batch, members),
    compile_s,
  )


def member_shards(num_members: int) -> int:
  """The devices a population of num_members is laid over: the largest divisor up to the count."""
  return max(m for m in range(1, min(num_members, jax.device_count()) + 1) if num_members % m == 0)


def vmapped_over_devices_program(shape: dict[str, int], num_members: int) -> programs_lib.Program:
  """The vmapped step as training compiles it with parallel.member_shards = M devices."""
  shards = member_shards(num_members)
  parallel_cfg = parallel_section()
  parallel_cfg.num_devices, parallel_cfg.member_shards = shards, shards
  layout = parallel.make_layout(parallel_cfg)
  batch = programs_lib.random_batch(shape, shape["batch_size"])
  model, loss_fn = scan_model_and_loss(shape)
  state = _states(model, batch, num_members)
  state_sharding = jax.tree.map(lambda _: layout.members, state)
  state = jax.device_put(state, state_sharding)
  batch = jax.device_put(batch, layout.batch)
  members = jax.device_put(
    (jax.vmap(run_spec.run_keys)(jnp.arange(num_members)), {}), layout.replicated
  )
  step, _ = training.jit_population_steps(
    lambda hyper, keys: (loss_fn, None), state_sharding=state_sharding, batch_sharding=layout.batch
  )
  compile_s, compiled = common.time_compile(step, state, batch, members)
  return programs_lib.Program(
    dict(implementation="vmapped_over_devices", num_members=num_members, member_shards=shards),
    programs_lib.threaded(compiled, state, batch, members),
    compile_s,
  )


def sequential_program(shape: dict[str, int], num_members: int) -> programs_lib.Program:
  batch = programs_lib.random_batch(shape, shape["batch_size"])
  model, loss_fn = scan_model_and_loss(shape)
  init = jax.jit(_init_fn(model, batch))  # The same member states as the vmapped program's.
  states = [jax.block_until_ready(init(key)) for key in _member_keys(num_members)]
  step = training.jit_train_step(loss_fn)
  rng = jax.random.key(1)
  compile_s, compiled = common.time_compile(step, states[0], batch, rng)

  def run():
    metrics = None
    for k in range(num_members):
      # Each run blocks on its own step, as N separate runs would.
      states[k], metrics = compiled(states[k], batch, rng)
      jax.block_until_ready(metrics)
    return metrics

  return programs_lib.Program(
    dict(implementation="sequential", num_members=num_members), run, compile_s
  )


def torch_sequential_program(
  torch_reference: Any, shape: dict[str, int], num_members: int
) -> programs_lib.Program:
  steps = [
    programs_lib.torch_program(torch_reference, shape, shape["batch_size"], "float32").step
    for _ in range(num_members)
  ]

  def run():
    for step in steps:
      step()

  return programs_lib.Program(dict(implementation="torch_sequential", num_members=num_members), run)


def build(
  shape: dict[str, int], num_members: int, torch_reference: Any, looped: bool = False
) -> list[programs_lib.Program]:
  programs = [vmapped_program(shape, num_members)]
  if looped and num_members > 1:
    programs.append(vmapped_program(shape, num_members, vmap_size=1))
  if member_shards(num_members) > 1:
    programs.append(vmapped_over_devices_program(shape, num_members))
  programs.append(sequential_program(shape, num_members))
  if torch_reference is not None:
    programs.append(torch_sequential_program(torch_reference, shape, num_members))
  return programs


def record(
  program: programs_lib.Program,
  programs: list[programs_lib.Program],
  common_fields: dict[str, Any],
  flops_per_token: float,
  peak: float,
) -> dict[str, Any]:
  rate = float(np.median(program.round_rates))
  out = dict(
    common_fields,
    **program.fields,
    tokens_per_s=rate,
    rounds_tokens_per_s=program.round_rates,
    compile_s=program.compile_s,
    roofline_fraction=flops_per_token * rate / peak,
  )
  for other in programs:
    if other is not program:
      ratio, ratio_range = common.round_by_round_ratio(program.round_rates, other.round_rates)
      out[f"speedup_vs_{other.fields['implementation']}"] = ratio
      out[f"speedup_vs_{other.fields['implementation']}_range"] = ratio_range
  return out


def run_workload(
  name: str, settings: Settings, peak: float, torch_reference: Any, out: common.JsonLines
) -> None:
  shape = SHAPES[name]
  flops_per_token = 6.0 * forward_macs_per_token(shape)  # Forward, then twice that backward.
  for num_members in settings.members:
    tokens = num_members * shape["batch_size"] * shape["length"]
    common_fields = dict(
      bench="population",
      model=name,
      **shape,
      device=common.device_description(jax.devices()[0]),
      tokens=tokens,
      flops_per_token=flops_per_token,
    )
    common.progress(f"{name}, {num_members} members: compiling")
    programs = build(shape, num_members, torch_reference, settings.looped)
    medians = common.time_in_rounds(
      [p.step for p in programs], settings.rounds, settings.min_calls, settings.min_seconds
    )
    for program, seconds in zip(programs, medians):
      program.round_rates.extend(tokens / s for s in seconds)
    for program in programs:
      out.emit(record(program, programs, common_fields, flops_per_token, peak))


def main(argv):
  del argv
  settings = settings_from_flags()
  out, peaks, torch_reference = common.open_training_bench(
    settings.output, ["float32"], settings.min_seconds, settings.torch
  )
  peak = peaks["float32"]
  for name in settings.shapes:
    run_workload(name, settings, peak, torch_reference, out)


if __name__ == "__main__":
  cli.run(main, huge_pages=True)
