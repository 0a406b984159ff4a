r"""Training speed: teacher-forced train steps of both model shapes, against PyTorch.

  python experiments/bench_train.py --output=runs/bench_train.jsonl
  # 1 versus 8 devices on a CPU (8 host-platform devices sharing its cores):
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python experiments/bench_train.py \
      --num_devices=1,8 --output=runs/bench_train.jsonl

One JSON line per measurement: target tokens/s, compile time, and the fraction of the matmul
FLOP bound (the device's peak matmul rate, measured at start). The JAX step is the one training
uses (textgen_jax.training.train_step: loss, gradients, Adam update, state donated); the
PyTorch reference (the `bench` extra) runs the same shapes with nn.LSTM, cross-entropy and
torch.optim.Adam, side by side in the same process. With several devices the step is the one
training compiles for a data-parallel mesh (textgen_jax.parallel): the batch split over the first
n devices, state replicated; each row gives its ratio to one device and to float32.

Shapes: seq2seq (vocab 100, embedding 256, hidden 256, source and target 60 tokens) and the PTB
VAE (vocab 10,000, embedding 256, hidden 512, latent 32, 40 tokens; KL term included).
"""

import functools
import itertools
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags

from textgen_jax import benchmarking, cli, parallel, training, vae_objective
from textgen_jax.config import parallel_config
from textgen_jax.errors import TextgenError
from textgen_jax.models.seq2seq import Seq2Seq, Seq2SeqConfig
from textgen_jax.models.text_vae import TextVAE, TextVAEConfig
from textgen_jax.translation import seq2seq_loss

SHAPES = {
    "seq2seq": dict(vocab_size=100, embed_dim=256, hidden_size=256, latent_size=0, length=60),
    "vae": dict(vocab_size=10_000, embed_dim=256, hidden_size=512, latent_size=32, length=40),
}

_SHAPES = flags.DEFINE_list("shapes", list(SHAPES), f"Model sizes: {list(SHAPES)}.")
_SIZE_OVERRIDES = {name: flags.DEFINE_integer(name, None, f"Override the shapes' {name}.")
                   for name in ("vocab_size", "embed_dim", "hidden_size", "latent_size", "length")}
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["32", "128"], "Batch sizes to sweep.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Matmul dtypes.")
_NUM_DEVICES = flags.DEFINE_list("num_devices", ["1", "all"],
                                 "Data-parallel device counts to compare ('all': every device).")
_UNROLLS = flags.DEFINE_list("scan_unrolls", ["1"], "LSTM time-loop unroll factors to compare.")
_TORCH = flags.DEFINE_bool("torch", True, "Time the PyTorch reference too (when installed).")
_MIN_SECONDS = flags.DEFINE_float("min_seconds", 2.0, "Time each configuration at least this long.")
_MIN_CALLS = flags.DEFINE_integer("min_calls", 3, "... and at least this many steps.")
_OUTPUT = flags.DEFINE_string("output", None, "Also append the JSON lines to this file.")


def forward_macs_per_token(shape: dict[str, int]) -> int:
  """Matmul multiply-adds of the forward pass per target token: encoder (one source token per
  target token in both shapes), decoder input and recurrent projections, vocabulary projection."""
  e, h, v, z = shape["embed_dim"], shape["hidden_size"], shape["vocab_size"], shape["latent_size"]
  encoder = e * 4 * h + h * 4 * h
  decoder = (e + z) * 4 * h + h * 4 * h + h * v
  return encoder + decoder


def jax_step(shape_name: str, shape: dict[str, int], dtype: str, batch_size: int,
             unroll: int, num_devices: int) -> tuple[Any, Any, dict[str, jax.Array]]:
  """(train step, initial state, batch) for one configuration, laid out over the first
  num_devices devices as training lays it out; random tokens (speed only)."""
  v, length = shape["vocab_size"], shape["length"]
  keys = jax.random.split(jax.random.key(0), 3)
  sources = jax.random.randint(keys[0], (batch_size, length), 4, v)
  targets = jax.random.randint(keys[1], (batch_size, length), 4, v)
  lengths = jnp.full((batch_size,), length, jnp.int32)
  if shape_name == "seq2seq":
    model = Seq2Seq(Seq2SeqConfig(v, v, shape["embed_dim"], shape["hidden_size"], dtype=dtype,
                                  scan_unroll=unroll))
    params = model.init(keys[2], sources[:1], lengths[:1], targets[:1])
    loss_fn = functools.partial(seq2seq_loss, model=model)
    batch = dict(inputs=sources, input_lengths=lengths, targets=targets)
  else:
    model = TextVAE(TextVAEConfig(v, embed_dim=shape["embed_dim"], hidden_size=shape["hidden_size"],
                                  latent_size=shape["latent_size"], dtype=dtype,
                                  scan_unroll=unroll))
    params = model.init(keys[2], targets[:1], lengths[:1], targets[:1])
    loss_fn = functools.partial(vae_objective.sentence_loss, model=model,
                                objective=vae_objective.VAEObjective())
    batch = dict(inputs=targets, input_lengths=lengths, targets=targets)
  state = training.create_train_state(model.apply, params, optax.adam(1e-3))
  parallel_cfg = parallel_config()  # The training defaults (data parallel), on num_devices.
  parallel_cfg.num_devices = num_devices
  layout = parallel.make_layout(parallel_cfg)
  state_sharding = layout.tree_shardings(state)
  step = training.jit_train_step(loss_fn, state_sharding=state_sharding,
                                 batch_sharding=layout.batch)
  return step, jax.device_put(state, state_sharding), jax.device_put(batch, layout.batch)


def time_jax(step: Any, state: Any, batch: dict[str, jax.Array]) -> benchmarking.Timing:
  """Compile (timed), then steady-state steps; the state is donated and threaded through; the
  dropout key is replicated over the batch's devices."""
  replicated = jax.sharding.NamedSharding(batch["targets"].sharding.mesh,
                                          jax.sharding.PartitionSpec())
  rng = jax.device_put(jax.random.key(1), replicated)
  compile_s, compiled = benchmarking.time_compile(step, state, batch, rng)
  holder = [state]

  def one_step():
    holder[0], metrics = compiled(holder[0], batch, rng)
    return metrics

  seconds = benchmarking.time_calls(one_step, _MIN_CALLS.value, _MIN_SECONDS.value)
  return benchmarking.Timing(compile_s, seconds)


def main(argv):
  del argv
  torch_reference = None
  if _TORCH.value:
    try:
      import torch_reference  # pylint: disable=import-outside-toplevel
    except ImportError:
      benchmarking.progress("note: torch is not installed (pip install -e '.[bench]'); "
                            "skipping the PyTorch reference")
  for name in _SHAPES.value:
    if name not in SHAPES:
      raise TextgenError(f"--shapes: unknown shape {name!r}; choose from {list(SHAPES)}")
  batch_sizes = [int(b) for b in _BATCH_SIZES.value]
  device_counts = sorted({jax.device_count() if n == "all" else int(n)
                          for n in _NUM_DEVICES.value})
  if not all(0 < n <= jax.device_count() for n in device_counts):
    raise TextgenError(f"--num_devices={','.join(_NUM_DEVICES.value)}: there are "
                       f"{jax.device_count()} devices (XLA_FLAGS="
                       "--xla_force_host_platform_device_count=8 makes 8 on a CPU)")
  output = None
  if _OUTPUT.value:
    os.makedirs(os.path.dirname(_OUTPUT.value) or ".", exist_ok=True)
    output = open(_OUTPUT.value, "a", encoding="utf-8")  # pylint: disable=consider-using-with
  device = jax.devices()[0]
  benchmarking.progress("measuring peak matmul rate")
  peak = {dtype: benchmarking.measure_matmul_flops(dtype, min_seconds=_MIN_SECONDS.value)
          for dtype in _DTYPES.value}
  benchmarking.emit(dict(bench="roofline", device=benchmarking.device_description(device),
                         num_devices=jax.device_count(), cpu_count=os.cpu_count(),
                         **{f"matmul_flops_per_s_{k}": v for k, v in peak.items()},
                         jax_version=jax.__version__), output)
  for name in _SHAPES.value:
    shape = dict(SHAPES[name])
    shape.update({k: flag.value for k, flag in _SIZE_OVERRIDES.items() if flag.value is not None})
    flops_per_token = 6.0 * forward_macs_per_token(shape)  # Forward, then twice that backward.
    for batch_size in batch_sizes:
      tokens = batch_size * shape["length"]
      common = dict(bench="train", model=name, **shape, batch_size=batch_size,
                    device=benchmarking.device_description(device),
                    flops_per_token=flops_per_token)
      records = []
      for dtype in _DTYPES.value:
        for unroll, num_devices in itertools.product([int(u) for u in _UNROLLS.value],
                                                     device_counts):
          if batch_size % num_devices:
            benchmarking.emit(dict(common, dtype=dtype, implementation="jax",
                                   num_devices=num_devices, skipped="batch not divisible"),
                              output)
            continue
          benchmarking.progress(f"{name} batch {batch_size} {dtype} unroll {unroll} "
                                f"{num_devices} device(s): jax")
          step, state, batch = jax_step(name, shape, dtype, batch_size, unroll, num_devices)
          timing = time_jax(step, state, batch)
          records.append(dict(common, dtype=dtype, scan_unroll=unroll, implementation="jax",
                              num_devices=num_devices,
                              tokens_per_s=tokens / timing.median_s, step_s=timing.median_s,
                              step_p90_s=timing.percentile(90), compile_s=timing.compile_s,
                              flops_per_s=flops_per_token * tokens / timing.median_s,
                              roofline_fraction=flops_per_token * tokens / timing.median_s /
                              peak[dtype]))
        if torch_reference is not None:
          benchmarking.progress(f"{name} batch {batch_size} {dtype}: torch")
          decoder = torch_reference.make_decoder(shape["vocab_size"], shape["embed_dim"],
                                                 shape["hidden_size"], 1, shape["latent_size"],
                                                 dtype)
          try:
            seconds = torch_reference.time_train_steps(
                decoder, batch_size, shape["length"], encoder_layers=1,
                min_calls=_MIN_CALLS.value, min_seconds=_MIN_SECONDS.value)
          except (RuntimeError, ValueError) as e:  # e.g. no bfloat16 nn.LSTM training here.
            benchmarking.emit(dict(common, dtype=dtype, implementation="torch",
                                   skipped=str(e).splitlines()[0][:200]), output)
            continue
          median_s = float(np.median(seconds))
          records.append(dict(common, dtype=dtype, implementation="torch", num_devices=1,
                              tokens_per_s=tokens / median_s, step_s=median_s,
                              step_p90_s=float(np.percentile(seconds, 90)),
                              flops_per_s=flops_per_token * tokens / median_s,
                              roofline_fraction=flops_per_token * tokens / median_s / peak[dtype]))
      for record in records:
        add_ratios(record, records)
        benchmarking.emit(record, output)


def add_ratios(record: dict[str, Any], records: list[dict[str, Any]]) -> None:
  """Speed relative to the same run's torch, one-device and float32 rows of the same shape."""
  def rate(**match):
    found = [r["tokens_per_s"] for r in records
             if all(r.get(k) == v for k, v in match.items())]
    return found[0] if found else None

  if record["implementation"] != "jax":
    return
  same = dict(implementation="jax", scan_unroll=record["scan_unroll"])
  baselines = {
      "speedup_vs_torch": rate(implementation="torch", dtype=record["dtype"]),
      "speedup_vs_1_device": rate(**same, dtype=record["dtype"], num_devices=1),
      "speedup_vs_float32": rate(**same, dtype="float32", num_devices=record["num_devices"]),
  }
  for key, baseline in baselines.items():
    if baseline:
      record[key] = record["tokens_per_s"] / baseline


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  cli.run(main, huge_pages=True)
