"""The config sections every model family shares, with their defaults and validation.

A family's schema (`textgen_jax.seq2seq.config.get_config`, `textgen_jax.vae.config.get_config`)
is these sections with the family's defaults, plus its own `model` section (and the VAE's `vae`
section). Configs in experiments/configs/ start from a schema and override fields; on the command
line every field is a flag, `--config.<section>.<field>=value`.

Every numeric field has its valid range declared once, in a `*_RANGES` table beside the section
that defines it ("section.field" -> interval, e.g. "[0, 1)" or ">= 1"); `check_ranges` holds
each field of a config to its range, so no value is accepted because nobody thought to check it.
"""

import math
from collections.abc import Iterator, Mapping
from typing import Any

import ml_collections

from textgen_jax import population as population_lib
from textgen_jax.data import tokenizers
from textgen_jax.errors import TextgenError
from textgen_jax.models import cudnn_lstm
from textgen_jax.models.rnn import CELLS
from textgen_jax.training import make_optimizer


def data_section(**defaults: Any) -> ml_collections.ConfigDict:
  """Reading, tokenising, vocabulary and batching; `defaults` are the family's values."""
  data = ml_collections.ConfigDict()
  data.train_path = ""  # The training file (the family says its format).
  data.valid_path = ""  # Held-out file in the same format; empty: a seeded split of train_path.
  data.valid_fraction = 0.05  # Share of train_path held out when valid_path is empty.
  # How it is held out: "random" examples, or "grouped": whole groups of examples with the same
  # (normalised) first column, so no source sentence is on both sides and every reference of a
  # held-out source is held out with it.
  data.valid_split = "random"
  data.max_examples = 0  # Use only the first N examples of train_path (0: all).
  # Train on a seeded random N of the training split (0: all), chosen after the held-out split
  # and the vocabulary are made from the whole of it: runs on 5,000 and on 20,000 examples
  # then share one vocabulary and one held-out set, and the smaller set is inside the larger.
  data.train_examples = 0
  data.skip_malformed = False  # Skip (and count) malformed lines; default: error naming them.
  # "word" (punctuation split off), "char", "whitespace", or "sentencepiece": subwords trained
  # on the training split (byte fallback, so nothing is unknown).
  data.tokenizer = "word"
  data.vocab_size = 8000  # SentencePiece's pieces (bytes and its specials included), per model.
  data.subword_model = "unigram"  # SentencePiece's "unigram" or "bpe".
  # "joint": one SentencePiece model and vocabulary for every column (source and target);
  # "separate": one per column, each trained on that column's text alone.
  data.subword_vocabularies = "joint"
  # Subword regularisation, in training batches only (0: off): each step segments its examples
  # anew. Unigram models: SentencePiece's sampling from every segmentation, probability ~
  # P(segmentation)^alpha with this alpha (Kudo 2018; 0.1-0.5 are usual); BPE models: the
  # BPE-dropout probability (Provilkov et al. 2020: 0.1).
  data.subword_sampling = 0.0
  data.lowercase = True  # Lowercase before tokenising.
  data.max_len = 16  # Most tokens per sentence, EOS not counted.
  data.too_long = "truncate"  # Longer sentences: "truncate" (and count) or "error".
  data.min_count = 2  # Tokens seen fewer times in training data map to UNK.
  data.max_size = 0  # Largest vocabulary, specials included (0: no limit).
  data.vocab_size_multiple = 1  # Pad vocabularies with unused tokens to a multiple of it.
  data.num_buckets = 4  # Padded lengths compiled for: few buckets, few compilations.
  data.batch_size = 64  # The global batch, split over the data-parallel devices.
  data.seed = -1  # Seed of the data split and order; -1: the run's seed.
  # Seed of which examples fill each batch (the shuffle within each length bucket); -1: data.seed.
  # The sequence of batch lengths stays data.seed's (see BucketedBatches).
  data.shuffle_seed = -1
  data.update(defaults)
  return data


DATA_RANGES = {
  "data.valid_fraction": "(0, 1)",
  "data.max_examples": ">= 0",
  "data.train_examples": ">= 0",
  "data.max_len": ">= 1",
  "data.min_count": ">= 1",
  "data.vocab_size": ">= 1",
  "data.subword_sampling": "[0, 1]",
  "data.max_size": ">= 0",
  "data.vocab_size_multiple": ">= 1",
  "data.num_buckets": ">= 1",
  "data.batch_size": ">= 1",
  "data.seed": ">= -1",
  "data.shuffle_seed": ">= -1",
}


def parallel_section() -> ml_collections.ConfigDict:
  """Devices and hosts (see textgen_jax/parallel.py)."""
  parallel = ml_collections.ConfigDict()
  parallel.num_devices = 0  # Devices to train on (0: all); the batch is split over them.
  parallel.model_shards = 1  # >1: vocabulary matrices split over this many devices each.
  parallel.member_shards = 1  # >1: a population's members split over this many device groups.
  parallel.distributed = False  # jax.distributed.initialize() first: several hosts.
  # Found by JAX on TPU pods, SLURM and Open MPI; elsewhere set all three (on each process).
  parallel.coordinator_address = ""  # host:port of process 0.
  parallel.num_processes = 0
  parallel.process_id = -1
  return parallel


PARALLEL_RANGES = {
  "parallel.num_devices": ">= 0",
  "parallel.model_shards": ">= 1",
  "parallel.member_shards": ">= 1",
  "parallel.num_processes": ">= 0",
  "parallel.process_id": ">= -1",
}


def population_section() -> ml_collections.ConfigDict:
  """Several runs trained in one compiled program (see textgen_jax/population.py)."""
  population = ml_collections.ConfigDict()
  population.num_members = 0  # Members trained together; 0 or 1: one ordinary run.
  population.seeds = ""  # Comma-separated member seeds; empty: seed, seed + 1, ...
  # Per-member values, "field=v1,v2,...;field=...", one value per member, e.g.
  # "opt.learning_rate=1e-3,3e-3,1e-2,3e-2". Shapes stay shared (sweep those as programs).
  population.vary = ""
  population.select_metric = "valid_loss"  # Held-out metric that ranks members at the end.
  # "shared": all members read the same batches; "member": each in its own seed's order.
  population.data_order = "shared"
  # Members computed together by one vmap; the step loops over groups of this many (lax.map),
  # one member at a time without vmap when 1 (on a CPU the fastest for large models). 0: all.
  population.vmap_size = 0
  return population


POPULATION_RANGES = {"population.num_members": ">= 0", "population.vmap_size": ">= 0"}


def data_seed(config: ml_collections.ConfigDict) -> int:
  """The seed of the data split and order: data.seed, or the run's seed when it is -1."""
  return config.data.seed if config.data.get("seed", -1) >= 0 else config.seed


def shuffle_seed(config: ml_collections.ConfigDict) -> int:
  """The seed of the shuffle within buckets: data.shuffle_seed, or data_seed(config) if -1."""
  return config.data.shuffle_seed if config.data.get("shuffle_seed", -1) >= 0 else data_seed(config)


def opt_section(**defaults: Any) -> ml_collections.ConfigDict:
  """The optimizer and its learning-rate schedule (see textgen_jax/training.py)."""
  opt = ml_collections.ConfigDict()
  opt.name = "adam"  # "adam", "adamw" or "sgd" (b1 is the momentum).
  opt.learning_rate = 3e-3  # Peak rate, reached after warmup_steps.
  opt.b1 = 0.9
  opt.b2 = 0.999
  opt.weight_decay = 0.0  # AdamW only.
  opt.warmup_steps = 100  # Linear warmup from 0.
  # After warmup: "constant", "cosine" (to 10%), "rsqrt", or "plateau": constant, multiplied by
  # plateau_factor after plateau_patience held-out evaluations (train.held_out_metric) without
  # improvement, at most plateau_max_decays times (textgen_jax/plateau.py).
  opt.schedule = "cosine"
  opt.plateau_patience = 2
  opt.plateau_max_decays = 5
  opt.plateau_factor = 0.5
  opt.grad_clip_norm = 1.0  # Global-norm clipping; 0 turns it off.
  opt.skip_non_finite = 0  # Skip up to N non-finite steps in a row (0: stop at one).
  opt.update(defaults)
  return opt


OPT_RANGES = {
  "opt.learning_rate": "> 0",
  "opt.b1": "[0, 1)",
  "opt.b2": "[0, 1)",
  "opt.weight_decay": ">= 0",
  "opt.warmup_steps": ">= 0",
  "opt.grad_clip_norm": ">= 0",
  "opt.skip_non_finite": ">= 0",
  "opt.plateau_patience": ">= 1",
  "opt.plateau_max_decays": ">= 0",
  "opt.plateau_factor": "(0, 1)",
}


def train_section(**defaults: Any) -> ml_collections.ConfigDict:
  """The loop's schedule of steps, logs, evaluations and checkpoints (textgen_jax/loop.py)."""
  train = ml_collections.ConfigDict()
  train.num_steps = 3500  # Length of the run, in optimizer steps.
  train.log_every = 100  # Steps between train-metric records.
  train.eval_every = 1000  # Steps between validation passes (and at the end).
  train.checkpoint_every = 500  # Steps between checkpoints (and at the end).
  train.keep_checkpoints = 3  # Newest checkpoints kept.
  train.num_examples_to_print = 8  # Held-out examples printed at each evaluation.
  train.max_eval_batches = 0  # Cap on validation batches per pass (0: all).
  # The held-out metric (a key of metrics.jsonl's evaluation records computed from the held-out
  # loss sums) that the plateau schedule and early stopping follow.
  train.held_out_metric = "valid_loss"
  # Stop after this many evaluations without improvement of held_out_metric; inference then
  # loads the best checkpoint (<workdir>/best/). 0: train to num_steps.
  train.early_stopping_patience = 0
  train.update(defaults)
  return train


TRAIN_RANGES = {
  "train.num_steps": ">= 1",
  "train.log_every": ">= 1",
  "train.eval_every": ">= 1",
  "train.checkpoint_every": ">= 1",
  "train.keep_checkpoints": ">= 1",
  "train.num_examples_to_print": ">= 0",
  "train.max_eval_batches": ">= 0",
  "train.early_stopping_patience": ">= 0",
}


DTYPES = ("float32", "bfloat16")  # What model.dtype may be: the matmul type.


def model_dtype_and_backend(model: ml_collections.ConfigDict) -> None:
  """Adds the model fields both families have: the cell, and speed and precision."""
  model.dtype = "float32"  # Matmul dtype, "float32" or "bfloat16"; cell state is float32.
  model.scan_unroll = 1  # Timesteps per iteration of the teacher-forced LSTM loop.
  model.lstm_backend = "auto"  # "scan", "cudnn" (GPU, float32) or "auto": cudnn on GPUs.
  model.cell = "lstm"  # The recurrent cell, "lstm" or "gru" (models/rnn.py).


MODEL_RANGES = {"model.scan_unroll": ">= 1"}
# The shared sections' ranges (and the run's seed); a family adds its own fields'.
RANGES = {
  "seed": ">= 0",
  **DATA_RANGES,
  **PARALLEL_RANGES,
  **POPULATION_RANGES,
  **OPT_RANGES,
  **TRAIN_RANGES,
  **MODEL_RANGES,
}


def in_range(value: float, interval: str) -> bool:
  """Whether a finite `value` lies in `interval`: ">= a", "> a", or "[a, b]" with either end
  open, "(a, b)"."""
  if not math.isfinite(value):
    return False
  if interval.startswith(">="):
    return value >= float(interval[2:])
  if interval.startswith(">"):
    return value > float(interval[1:])
  low, high = (float(end) for end in interval[1:-1].split(","))
  return (low <= value if interval[0] == "[" else low < value) and (
    value <= high if interval[-1] == "]" else value < high
  )


def numeric_fields(
  config: ml_collections.ConfigDict, prefix: str = ""
) -> Iterator[tuple[str, float]]:
  """("section.field", value) of every int or float field (not bool), sections included."""
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from numeric_fields(value, f"{prefix}{key}.")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      yield f"{prefix}{key}", value


def check_ranges(config: ml_collections.ConfigDict, ranges: Mapping[str, str]) -> None:
  """Raises naming the flag when a numeric field is outside its declared range, or has none
  (a new field must declare its range)."""
  for name, value in numeric_fields(config):
    if name not in ranges:  # A field added without its range: the tests walk every field.
      raise TextgenError(f"--config.{name}: no valid range is declared for this field")
    if not in_range(value, ranges[name]):
      raise TextgenError(f"--config.{name} must be {describe(ranges[name])}, got {value}")


def describe(interval: str) -> str:
  """An interval in words: "at least 1", "above 0", "in [0, 1)"."""
  if interval.startswith(">="):
    return f"at least {interval[2:].strip()}"
  if interval.startswith(">"):
    return f"above {interval[1:].strip()}"
  return f"in {interval}"


def validate_shared(
  config: ml_collections.ConfigDict, family: str, ranges: Mapping[str, str]
) -> None:
  """Raises naming the flag when a field is out of its range (`ranges`: the family's table of
  every numeric field) or a shared choice is unknown; the family checks its own choices."""
  if config.get("family", family) != family:
    raise TextgenError(f"--config.family={config.family!r}: this script trains {family} models")
  check_ranges(config, ranges)
  if config.data.tokenizer not in tokenizers.KINDS:
    raise TextgenError(
      f"--config.data.tokenizer={config.data.tokenizer!r}: choose one of "
      f"{', '.join(tokenizers.KINDS)}"
    )
  if config.data.subword_model not in tokenizers.SENTENCEPIECE_TYPES:
    raise TextgenError(
      f"--config.data.subword_model={config.data.subword_model!r}: choose unigram or bpe"
    )
  if config.data.subword_vocabularies not in tokenizers.SUBWORD_VOCABULARIES:
    raise TextgenError(
      f"--config.data.subword_vocabularies={config.data.subword_vocabularies!r}: choose joint "
      "or separate"
    )
  if config.data.subword_sampling and config.data.tokenizer != "sentencepiece":
    raise TextgenError(
      f"--config.data.subword_sampling={config.data.subword_sampling} samples SentencePiece "
      "segmentations: it needs --config.data.tokenizer=sentencepiece"
    )
  if config.data.subword_sampling and config.get("population", {}).get("data_order") == "member":
    raise TextgenError(
      f"--config.data.subword_sampling={config.data.subword_sampling} with "
      "--config.population.data_order=member is not supported (members' batches must share "
      "one shape, and their draws would differ in length): use data_order=shared"
    )
  if config.data.valid_split not in ("random", "grouped"):
    raise TextgenError(
      f"--config.data.valid_split={config.data.valid_split!r}: choose random or grouped"
    )
  if config.model.dtype not in DTYPES:
    raise TextgenError(f"--config.model.dtype={config.model.dtype!r}: choose float32 or bfloat16")
  if config.model.cell not in CELLS:
    raise TextgenError(f"--config.model.cell={config.model.cell!r}: choose lstm or gru")
  # Raises if unusable.
  cudnn_lstm.resolve_backend(config.model.lstm_backend, config.model.dtype, config.model.cell)
  make_optimizer(config.opt, config.train.num_steps)  # Raises on an unknown name or schedule.


def members(
  config: ml_collections.ConfigDict, per_member: frozenset[str]
) -> list[ml_collections.ConfigDict]:
  """The config of each member of its population ([config] for one run), for validation. A
  population runs the scan: cuDNN's LSTM in JAX has no batching rule for the member axis."""
  population = population_lib.parse(config, per_member)
  if population is None:
    if config.parallel.member_shards > 1:
      raise TextgenError(
        "--config.parallel.member_shards > 1 needs a population "
        "(--config.population.num_members > 1)"
      )
    return [config]
  if config.train.early_stopping_patience:
    raise TextgenError(
      "--config.train.early_stopping_patience: a population trains its members "
      "for the same steps; use the plateau schedule, or early stopping in "
      "separate runs"
    )
  if population.vmap_size and config.parallel.member_shards > 1:
    raise TextgenError(
      "--config.population.vmap_size loops over the members on each device; "
      "with --config.parallel.member_shards > 1 leave it 0"
    )
  if config.parallel.member_shards > 1 and population.size % config.parallel.member_shards:
    raise TextgenError(
      f"--config.parallel.member_shards={config.parallel.member_shards} must "
      f"divide the population's {population.size} members"
    )
  if config.model.lstm_backend == "cudnn":
    raise TextgenError(
      "--config.model.lstm_backend=cudnn: a population's members are vmapped "
      "and cuDNN's LSTM in JAX cannot be; use scan or auto"
    )
  return [population_lib.member_config(config, k, population) for k in range(population.size)]
