"""The training steps train.py times: textgen-jax's, plain Flax's and PyTorch's, on one workload.

Each is compiled (where it is compiled) and returned as a `Program`: a step that runs one
training step on fixed random tokens, threading its state, and blocks until it is done.
"""

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from experiments.bench import common, flax_reference
from textgen_jax import parallel, training
from textgen_jax.config import parallel_section
from textgen_jax.models import cudnn_lstm
from textgen_jax.seq2seq import loss as seq2seq_loss
from textgen_jax.seq2seq.model import Seq2Seq, Seq2SeqConfig
from textgen_jax.vae import loss as vae_loss
from textgen_jax.vae.model import SentenceVAE, SentenceVAEConfig


@dataclasses.dataclass
class Program:
  """One timed program: its record's identifying fields and a step that runs and blocks."""

  fields: dict[str, Any]
  step: Callable[[], Any]
  compile_s: float | None = None
  round_rates: list[float] = dataclasses.field(default_factory=list)  # Tokens/s per round.


def random_batch(shape: dict[str, int], batch_size: int) -> dict[str, jax.Array]:
  keys = jax.random.split(jax.random.key(0), 2)
  targets = jax.random.randint(keys[1], (batch_size, shape["length"]), 4, shape["vocab_size"])
  sources = (
    targets
    if shape["latent_size"]
    else jax.random.randint(
      keys[0], (batch_size, shape["source_length"]), 4, shape["source_vocab_size"]
    )
  )
  lengths = jnp.full((batch_size,), sources.shape[1], jnp.int32)
  return dict(inputs=sources, input_lengths=lengths, targets=targets)


def model_and_loss(
  name: str, shape: dict[str, int], dtype: str, unroll: int, backend: str, cell: str = "lstm"
) -> tuple[Any, Callable[..., Any]]:
  model_kw = dict(
    embed_dim=shape["embed_dim"],
    hidden_size=shape["hidden_size"],
    dtype=dtype,
    scan_unroll=unroll,
    lstm_backend=backend,
    cell=cell,
  )
  if name == "seq2seq":
    model = Seq2Seq(Seq2SeqConfig(shape["source_vocab_size"], shape["vocab_size"], **model_kw))
    return model, functools.partial(seq2seq_loss.loss, model=model)
  model = SentenceVAE(
    SentenceVAEConfig(shape["vocab_size"], latent_size=shape["latent_size"], **model_kw)
  )
  return model, functools.partial(
    vae_loss.sentence_loss, model=model, objective=vae_loss.VAEObjective()
  )


def jax_program(
  name: str,
  shape: dict[str, int],
  batch_size: int,
  dtype: str,
  unroll: int,
  backend: str,
  num_devices: int,
  cell: str = "lstm",
) -> Program:
  """textgen-jax's train step, laid out over the first num_devices devices as training does."""
  batch = random_batch(shape, batch_size)
  model, loss_fn = model_and_loss(name, shape, dtype, unroll, backend, cell)
  params = model.init(
    jax.random.key(2), batch["inputs"][:1], batch["input_lengths"][:1], batch["targets"][:1]
  )
  state = training.create_train_state(model.apply, params, optax.adam(1e-3))
  parallel_cfg = parallel_section()  # The training defaults (data parallel), on num_devices.
  parallel_cfg.num_devices = num_devices
  layout = parallel.make_layout(parallel_cfg, model.VOCABULARY_MATRICES)
  state_sharding = layout.tree_shardings(state)
  step = training.jit_train_step(
    loss_fn, state_sharding=state_sharding, batch_sharding=layout.batch
  )
  state, batch = jax.device_put(state, state_sharding), jax.device_put(batch, layout.batch)
  rng = jax.device_put(
    jax.random.key(1), jax.sharding.NamedSharding(layout.mesh, jax.sharding.PartitionSpec())
  )
  compile_s, compiled = common.time_compile(step, state, batch, rng)
  fields = dict(
    implementation="jax",
    dtype=dtype,
    scan_unroll=unroll,
    num_devices=num_devices,
    lstm_backend=cudnn_lstm.resolve_backend(backend, dtype, cell),
    cell=cell,
  )
  return Program(fields, threaded(compiled, state, batch, rng), compile_s)


def flax_program(name: str, shape: dict[str, int], batch_size: int, cell: str = "lstm") -> Program:
  batch = random_batch(shape, batch_size)
  if name == "seq2seq":
    model = flax_reference.Seq2Seq(
      shape["source_vocab_size"],
      shape["vocab_size"],
      shape["embed_dim"],
      shape["hidden_size"],
      cell,
    )
  else:
    model = flax_reference.SentenceVAE(
      shape["vocab_size"], shape["embed_dim"], shape["hidden_size"], shape["latent_size"], cell
    )
  step, state = flax_reference.make_train_step(model, batch)
  compile_s, compiled = common.time_compile(step, state, batch, jax.random.key(1))
  return Program(
    dict(implementation="flax", dtype="float32", num_devices=1, cell=cell),
    threaded(compiled, state, batch, jax.random.key(1)),
    compile_s,
  )


def threaded(compiled: Any, state: Any, batch: Any, rng: Any) -> Callable[[], Any]:
  """A step that threads the (donated) state through calls and blocks on its result."""
  holder = [state]

  def step():
    holder[0], metrics = compiled(holder[0], batch, rng)
    return jax.block_until_ready(metrics)

  return step


def torch_program(
  torch_reference: Any, shape: dict[str, int], batch_size: int, dtype: str, cell: str = "lstm"
) -> Program:
  """PyTorch's step; in bfloat16 its mixed precision (torch.autocast: float32 weights and Adam
  state, bfloat16 matmuls and LSTM), as textgen-jax's bfloat16 keeps float32 master weights."""
  decoder = torch_reference.make_decoder(
    shape["vocab_size"],
    shape["embed_dim"],
    shape["hidden_size"],
    1,
    shape["latent_size"],
    "float32",
    device=torch_reference.device_like(jax.devices()[0]),
    cell=cell,
  )
  step = torch_reference.make_train_step(
    decoder,
    batch_size,
    shape["length"],
    encoder_layers=1,
    source_length=shape["source_length"],
    source_vocab_size=shape["source_vocab_size"],
    autocast=dtype if dtype != "float32" else None,
  )
  return Program(
    dict(
      implementation="torch",
      dtype=dtype,
      num_devices=1,
      cell=cell,
      device=torch_reference.device_name(decoder),
      **({} if dtype == "float32" else {"precision": "autocast"}),
    ),
    step,
  )
