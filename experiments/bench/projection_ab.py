r"""The Dense layers' gradients (input, feed and vocabulary projections): plain autodiff against
models.rnn's custom VJP (dense_dot_general).

  python -m experiments.bench.projection_ab vae,seq2seq        # one run's train step
  python -m experiments.bench.projection_ab vae 2              # a population of 2, vmapped

Both programs are built in one process, the plain one by swapping `dense_dot_general` for
`dot_general_float32` (the matmul the models used before) while its model is traced, then
timed in interleaved rounds (A B, A B, ...). One JSON line per workload: tokens/s of each and the
median of the round-by-round ratios (custom over plain) with its range.
"""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.bench import common, population, programs as programs_lib
from experiments.bench.shapes import WORKLOADS
from textgen_jax import cli, run_spec, training
from textgen_jax.models import rnn
from textgen_jax.seq2seq import model as seq2seq_model
from textgen_jax.vae import model as vae_model

ROUNDS, MIN_CALLS, MIN_SECONDS = 5, 3, 2.0


def program(name: str, num_members: int, projection) -> tuple:
  """(step, target tokens per step) of a train step whose models project with `projection`."""
  shape = WORKLOADS[name]
  modules = (rnn, seq2seq_model, vae_model)
  saved = [module.dense_dot_general for module in modules]
  for module in modules:
    module.dense_dot_general = projection
  try:
    batch = programs_lib.random_batch(shape, shape["batch_size"])
    model, loss_fn = programs_lib.model_and_loss(name, shape, "float32", 1, "scan")
    if num_members:
      state = population._states(model, batch, num_members)
      inputs = (jax.vmap(run_spec.run_keys)(jnp.arange(num_members)), {})
      step = jax.jit(
        functools.partial(
          training.population_train_step, make_hooks=lambda hyper, keys: (loss_fn, None)
        ),
        donate_argnums=0,
      )
    else:
      params = model.init(
        jax.random.key(2), batch["inputs"][:1], batch["input_lengths"][:1], batch["targets"][:1]
      )
      state = training.create_train_state(None, params, optax.adam(1e-3))
      inputs, step = jax.random.key(1), training.jit_train_step(loss_fn)
    _, compiled = common.time_compile(step, state, batch, inputs)  # Traced here, patched.
  finally:
    for module, original in zip(modules, saved):
      module.dense_dot_general = original
  tokens = max(num_members, 1) * shape["batch_size"] * shape["length"]
  return programs_lib.threaded(compiled, state, batch, inputs), tokens


def main(argv):
  names = argv[1].split(",") if len(argv) > 1 else ["vae", "seq2seq"]
  num_members = int(argv[2]) if len(argv) > 2 else 0
  for name in names:
    programs = [
      program(name, num_members, rnn.dot_general_float32),
      program(name, num_members, rnn.dense_dot_general),
    ]
    medians = common.time_in_rounds([step for step, _ in programs], ROUNDS, MIN_CALLS, MIN_SECONDS)
    rates = [[tokens / s for s in seconds] for (_, tokens), seconds in zip(programs, medians)]
    ratio, ratio_range = common.round_by_round_ratio(rates[1], rates[0])
    print(
      json.dumps(
        dict(
          bench="vocabulary_projection_ab",
          model=name,
          num_members=num_members,
          cpu=common.cpu_description(),
          plain_tokens_per_s=float(np.median(rates[0])),
          custom_vjp_tokens_per_s=float(np.median(rates[1])),
          speedup=ratio,
          speedup_range=ratio_range,
          rounds=ROUNDS,
        )
      )
    )


if __name__ == "__main__":
  cli.run(main, huge_pages=True)
