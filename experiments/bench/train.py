r"""Training speed: textgen-jax's train step against plain Flax and PyTorch, in interleaved rounds.

  python experiments/bench_train.py --output=runs/bench_train.jsonl      # the two workloads
  python experiments/bench_train.py --dtypes=float32,bfloat16 --flax=false
  python experiments/bench_train.py --lstm_backends=scan,cudnn           # on a GPU
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python experiments/bench_train.py \
      --num_devices=1,8 --flax=false --torch=false

Workloads (the issue-11 table): "seq2seq" S, the seq2seq tutorial shape (source vocab 80, target
vocab 100, embedding 256, hidden 256, source 16 / target 60 tokens, batch 64), and "vae" V, the
PTB VAE (vocab 10,000, embedding 256, hidden 512, latent 32, 40 tokens, batch 32, KL term).
No dropout anywhere, so all three programs do the same work.

Programs: "jax" is the step training uses (textgen_jax.training.train_step: loss, metric sums,
gradients, norms, Adam, state donated, laid out over n devices as training lays it out); "flax"
is the plainest Flax linen version (experiments/flax_reference.py: nn.RNN(OptimizedLSTMCell),
optax.adam, one jit); "torch" is nn.LSTM + Adam (experiments/torch_reference.py; the `bench`
extra; on a CUDA GPU it runs there, with cuDNN).

The machine drifts (a quarter within an hour on shared CPUs), so every program is compiled and
warmed first and then timed in rounds, A B C, A B C, ...: each round times every program for
--min_calls steps and --min_seconds. A ratio is computed round by round (same minute) and its
median reported with its range. One JSON line per program: target tokens/s (median round),
each round's tokens/s, compile time, the fraction of the dense FLOP bound (3 x forward matmul
FLOPs at the peak matmul rate measured at start) and the ratios.
"""

import dataclasses
import functools
import itertools
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags

import flax_reference
from textgen_jax import benchmarking, cli, parallel, training, vae_objective
from textgen_jax.config import parallel_config
from textgen_jax.errors import TextgenError
from textgen_jax.models import cudnn_lstm
from textgen_jax.models.seq2seq import Seq2Seq, Seq2SeqConfig
from textgen_jax.models.text_vae import TextVAE, TextVAEConfig
from textgen_jax.translation import seq2seq_loss

WORKLOADS = {
    "seq2seq": dict(source_vocab_size=80, vocab_size=100, embed_dim=256, hidden_size=256,
                    latent_size=0, source_length=16, length=60, batch_size=64),
    "vae": dict(source_vocab_size=10_000, vocab_size=10_000, embed_dim=256, hidden_size=512,
                latent_size=32, source_length=40, length=40, batch_size=32),
}

_SHAPES = flags.DEFINE_list("shapes", list(WORKLOADS), f"Workloads: {list(WORKLOADS)}.")
_SIZE_OVERRIDES = {name: flags.DEFINE_integer(name, None, f"Override the workloads' {name}.")
                   for name in ("vocab_size", "embed_dim", "hidden_size", "latent_size", "length")}
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", [], "Batch sizes (default: each workload's).")
_DTYPES = flags.DEFINE_list("dtypes", ["float32"], "Matmul dtypes.")
_NUM_DEVICES = flags.DEFINE_list("num_devices", ["1"],
                                 "Data-parallel device counts to compare ('all': every device).")
_UNROLLS = flags.DEFINE_list("scan_unrolls", ["1"], "LSTM time-loop unroll factors to compare.")
_BACKENDS = flags.DEFINE_list("lstm_backends", ["auto"], "model.lstm_backend values to compare.")
_FLAX = flags.DEFINE_bool("flax", True, "Time the plain Flax baseline (float32).")
_TORCH = flags.DEFINE_bool("torch", True, "Time the PyTorch reference too (when installed).")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved timing rounds.")
_MIN_SECONDS = flags.DEFINE_float("min_seconds", 1.0, "Time each program this long per round.")
_MIN_CALLS = flags.DEFINE_integer("min_calls", 3, "... and at least this many steps.")
_OUTPUT = flags.DEFINE_string("output", None, "Also append the JSON lines to this file.")


@dataclasses.dataclass
class Program:
  """One timed program: its record's identifying fields and a step that runs and blocks."""

  fields: dict[str, Any]
  step: Callable[[], Any]
  compile_s: float | None = None
  round_rates: list[float] = dataclasses.field(default_factory=list)


def forward_macs_per_token(shape: dict[str, int]) -> float:
  """Matmul multiply-adds of the forward pass per target token: the encoder's share (source
  tokens per target token), decoder input and recurrent projections, vocabulary projection."""
  e, h, v, z = shape["embed_dim"], shape["hidden_size"], shape["vocab_size"], shape["latent_size"]
  encoder = (e * 4 * h + h * 4 * h) * shape["source_length"] / shape["length"]
  decoder = (e + z) * 4 * h + h * 4 * h + h * v
  return encoder + decoder


def random_batch(shape: dict[str, int], batch_size: int) -> dict[str, jax.Array]:
  keys = jax.random.split(jax.random.key(0), 2)
  targets = jax.random.randint(keys[1], (batch_size, shape["length"]), 4, shape["vocab_size"])
  sources = targets if shape["latent_size"] else jax.random.randint(
      keys[0], (batch_size, shape["source_length"]), 4, shape["source_vocab_size"])
  lengths = jnp.full((batch_size,), sources.shape[1], jnp.int32)
  return dict(inputs=sources, input_lengths=lengths, targets=targets)


def jax_program(name: str, shape: dict[str, int], batch_size: int, dtype: str, unroll: int,
                backend: str, num_devices: int) -> Program:
  """textgen-jax's train step, laid out over the first num_devices devices as training does."""
  batch = random_batch(shape, batch_size)
  model_kw = dict(embed_dim=shape["embed_dim"], hidden_size=shape["hidden_size"], dtype=dtype,
                  scan_unroll=unroll, lstm_backend=backend)
  if name == "seq2seq":
    model = Seq2Seq(Seq2SeqConfig(shape["source_vocab_size"], shape["vocab_size"], **model_kw))
    loss_fn = functools.partial(seq2seq_loss, model=model)
  else:
    model = TextVAE(TextVAEConfig(shape["vocab_size"], latent_size=shape["latent_size"],
                                  **model_kw))
    loss_fn = functools.partial(vae_objective.sentence_loss, model=model,
                                objective=vae_objective.VAEObjective())
  params = model.init(jax.random.key(2), batch["inputs"][:1], batch["input_lengths"][:1],
                      batch["targets"][:1])
  state = training.create_train_state(model.apply, params, optax.adam(1e-3))
  parallel_cfg = parallel_config()  # The training defaults (data parallel), on num_devices.
  parallel_cfg.num_devices = num_devices
  layout = parallel.make_layout(parallel_cfg)
  state_sharding = layout.tree_shardings(state)
  step = training.jit_train_step(loss_fn, state_sharding=state_sharding,
                                 batch_sharding=layout.batch)
  state, batch = jax.device_put(state, state_sharding), jax.device_put(batch, layout.batch)
  rng = jax.device_put(jax.random.key(1), jax.sharding.NamedSharding(layout.mesh,
                                                                     jax.sharding.PartitionSpec()))
  compile_s, compiled = benchmarking.time_compile(step, state, batch, rng)
  fields = dict(implementation="jax", dtype=dtype, scan_unroll=unroll, num_devices=num_devices,
                lstm_backend=cudnn_lstm.resolve_backend(backend, dtype))
  return Program(fields, _threaded(compiled, state, batch, rng), compile_s)


def flax_program(name: str, shape: dict[str, int], batch_size: int) -> Program:
  batch = random_batch(shape, batch_size)
  if name == "seq2seq":
    model = flax_reference.Seq2Seq(shape["source_vocab_size"], shape["vocab_size"],
                                   shape["embed_dim"], shape["hidden_size"])
  else:
    model = flax_reference.SentenceVAE(shape["vocab_size"], shape["embed_dim"],
                                       shape["hidden_size"], shape["latent_size"])
  step, state = flax_reference.make_train_step(model, batch)
  compile_s, compiled = benchmarking.time_compile(step, state, batch, jax.random.key(1))
  return Program(dict(implementation="flax", dtype="float32", num_devices=1),
                 _threaded(compiled, state, batch, jax.random.key(1)), compile_s)


def _threaded(compiled: Any, state: Any, batch: Any, rng: Any) -> Callable[[], Any]:
  """A step that threads the (donated) state through calls and blocks on its result."""
  holder = [state]

  def step():
    holder[0], metrics = compiled(holder[0], batch, rng)
    return jax.block_until_ready(metrics)

  return step


def torch_program(torch_reference: Any, shape: dict[str, int], batch_size: int,
                  dtype: str) -> Program:
  decoder = torch_reference.make_decoder(shape["vocab_size"], shape["embed_dim"],
                                         shape["hidden_size"], 1, shape["latent_size"], dtype,
                                         device=torch_reference.device_like(jax.devices()[0]))
  step = torch_reference.make_train_step(decoder, batch_size, shape["length"], encoder_layers=1,
                                         source_length=shape["source_length"],
                                         source_vocab_size=shape["source_vocab_size"])
  return Program(dict(implementation="torch", dtype=dtype, num_devices=1,
                      device=torch_reference.device_name(decoder)), step)


def time_in_rounds(programs: list[Program], tokens: int) -> None:
  """Warm-up, then --rounds rounds A B C, A B C, ...: each round's tokens/s per program."""
  for program in programs:
    program.step()
  for _ in range(_ROUNDS.value):
    for program in programs:
      seconds = benchmarking.time_calls(program.step, _MIN_CALLS.value, _MIN_SECONDS.value)
      program.round_rates.append(tokens / float(np.median(seconds)))


def record(program: Program, programs: list[Program], common: dict[str, Any],
           flops_per_token: float, peak: dict[str, float]) -> dict[str, Any]:
  """The program's JSON record with its round-by-round ratios to the other programs."""
  rate = float(np.median(program.round_rates))
  out = dict(common, **program.fields, tokens_per_s=rate, step_s=common["tokens"] / rate,
             rounds_tokens_per_s=program.round_rates, compile_s=program.compile_s,
             roofline_fraction=flops_per_token * rate / peak[program.fields["dtype"]])

  def baseline(**match):
    found = [p for p in programs if all(p.fields.get(k) == v for k, v in match.items())]
    return found[0] if found else None  # Possibly the program itself: a ratio of 1.

  fields = program.fields
  if fields["implementation"] == "jax":
    same = dict(implementation="jax", scan_unroll=fields["scan_unroll"],
                lstm_backend=fields["lstm_backend"])
    baselines = {
        "torch": baseline(implementation="torch", dtype=fields["dtype"]),
        "flax": baseline(implementation="flax"),
        "1_device": baseline(**same, dtype=fields["dtype"], num_devices=1),
        "float32": baseline(**same, dtype="float32", num_devices=fields["num_devices"]),
        "scan": baseline(implementation="jax", scan_unroll=fields["scan_unroll"],
                         lstm_backend="scan", dtype=fields["dtype"],
                         num_devices=fields["num_devices"]),
    }
    for name, other in baselines.items():
      if other is not None:
        ratios = [a / b for a, b in zip(program.round_rates, other.round_rates)]
        out[f"speedup_vs_{name}"] = float(np.median(ratios))
        out[f"speedup_vs_{name}_range"] = [min(ratios), max(ratios)]
  return out


def main(argv):
  del argv
  for name in _SHAPES.value:
    if name not in WORKLOADS:
      raise TextgenError(f"--shapes: unknown workload {name!r}; choose from {list(WORKLOADS)}")
  device_counts = sorted({jax.device_count() if n == "all" else int(n)
                          for n in _NUM_DEVICES.value})
  if not all(0 < n <= jax.device_count() for n in device_counts):
    raise TextgenError(f"--num_devices={','.join(_NUM_DEVICES.value)}: there are "
                       f"{jax.device_count()} devices (XLA_FLAGS="
                       "--xla_force_host_platform_device_count=8 makes 8 on a CPU)")
  for backend, dtype in itertools.product(_BACKENDS.value, _DTYPES.value):
    try:
      cudnn_lstm.resolve_backend(backend, dtype)
    except TextgenError as e:
      raise TextgenError(f"--lstm_backends={backend}: {str(e).split(': ', 1)[1]}") from None
  torch_reference = _import_torch_reference() if _TORCH.value else None
  output = None
  if _OUTPUT.value:
    os.makedirs(os.path.dirname(_OUTPUT.value) or ".", exist_ok=True)
    output = open(_OUTPUT.value, "a", encoding="utf-8")  # pylint: disable=consider-using-with
  device = jax.devices()[0]
  benchmarking.progress("measuring peak matmul rate")
  peak = {dtype: benchmarking.measure_matmul_flops(dtype, min_seconds=_MIN_SECONDS.value)
          for dtype in _DTYPES.value}
  benchmarking.emit(dict(bench="roofline", device=benchmarking.device_description(device),
                         cpu=benchmarking.cpu_description(), num_devices=jax.device_count(),
                         cpu_count=os.cpu_count(),
                         **{f"matmul_flops_per_s_{k}": v for k, v in peak.items()},
                         jax_version=jax.__version__,
                         glibc_tunables=os.environ.get("GLIBC_TUNABLES", "")), output)
  for name in _SHAPES.value:
    shape = dict(WORKLOADS[name])
    for key, flag in _SIZE_OVERRIDES.items():
      if flag.value is not None:
        shape[key] = flag.value
        if key in ("vocab_size", "length"):  # Source and target alike.
          shape["source_" + key] = flag.value
    flops_per_token = 6.0 * forward_macs_per_token(shape)  # Forward, then twice that backward.
    for batch_size in [int(b) for b in _BATCH_SIZES.value] or [shape["batch_size"]]:
      common = dict(bench="train", model=name, **dict(shape, batch_size=batch_size),
                    device=benchmarking.device_description(device),
                    tokens=batch_size * shape["length"], flops_per_token=flops_per_token)
      programs = build_programs(name, shape, batch_size, device_counts, torch_reference, common,
                                output)
      benchmarking.progress(f"{name} batch {batch_size}: {_ROUNDS.value} rounds of "
                            f"{len(programs)} programs")
      time_in_rounds(programs, common["tokens"])
      for program in programs:
        benchmarking.emit(record(program, programs, common, flops_per_token, peak), output)


def build_programs(name: str, shape: dict[str, int], batch_size: int, device_counts: list[int],
                   torch_reference: Any, common: dict[str, Any], output: Any) -> list[Program]:
  programs = []
  for dtype, unroll, backend, num_devices in itertools.product(
      _DTYPES.value, [int(u) for u in _UNROLLS.value], _BACKENDS.value, device_counts):
    if batch_size % num_devices:
      benchmarking.emit(dict(common, dtype=dtype, implementation="jax", num_devices=num_devices,
                             skipped="batch not divisible"), output)
      continue
    benchmarking.progress(f"{name} batch {batch_size} {dtype} unroll {unroll} {backend} "
                          f"{num_devices} device(s): compiling")
    programs.append(jax_program(name, shape, batch_size, dtype, unroll, backend, num_devices))
  if _FLAX.value:
    programs.append(flax_program(name, shape, batch_size))
  for dtype in _DTYPES.value if torch_reference is not None else []:
    try:
      program = torch_program(torch_reference, shape, batch_size, dtype)
      program.step()  # Fails here where, e.g., this CPU's torch cannot train bfloat16 LSTMs.
    except (RuntimeError, ValueError) as e:
      benchmarking.emit(dict(common, dtype=dtype, implementation="torch",
                             skipped=str(e).splitlines()[0][:200]), output)
      continue
    programs.append(program)
  return programs


def _import_torch_reference() -> Any:
  try:
    import torch_reference  # pylint: disable=import-outside-toplevel
    return torch_reference
  except ImportError:
    benchmarking.progress("note: torch is not installed (pip install -e '.[bench]'); "
                          "skipping the PyTorch reference")
    return None


if __name__ == "__main__":
  cli.run(main, huge_pages=True)
