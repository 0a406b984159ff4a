"""The sentence VAE / LM family's config schema (and its PTB version) and its validation."""

import dataclasses
import os

import ml_collections

from textgen_jax import config as config_lib
from textgen_jax import plateau, population
from textgen_jax.errors import TextgenError
from textgen_jax.vae import loss as loss_lib
from textgen_jax.vae.model import KINDS

NAME = "vae"
# Penn Treebank is research-only and not shipped: $PTB_DIR, else ../shared/data/ptb beside the repo.
PTB_DIR = os.environ.get(
  "PTB_DIR",
  os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    os.pardir,
    "shared",
    "data",
    "ptb",
  ),
)


# What the members of a population may vary besides their seed (textgen_jax/population.py).
PER_MEMBER_FIELDS = (
  population.ENGINE_FIELDS
  | {
    f"vae.{name}"
    for name in (
      "kl_schedule",
      "beta_max",
      "anneal_steps",
      "cycle_steps",
      "cycle_ratio",
      "free_bits",
      "free_bits_mode",
      "word_dropout",
      "pretrain_steps",
    )
  }
  | {"model.embedding_dropout", "model.output_dropout"}
)
# The per-member fields named by a word, and their words (a member carries the word's index).
MEMBER_CHOICES = {
  "vae.kl_schedule": loss_lib.KL_SCHEDULES,
  "vae.free_bits_mode": loss_lib.FREE_BITS_MODES,
}


def get_config() -> ml_collections.ConfigDict:
  """A sentence VAE (or, with model.kind="lm", a language model) at the literature's PTB size.

  Sizes follow Li et al. 2019 and Fu et al. 2019 (embedding 256, hidden 256, latent 32, batch
  32); dropout and clipping follow He et al. 2019. data.train_path must be set.
  """
  config = ml_collections.ConfigDict()
  config.family = NAME  # Recorded in the workdir's config.json.
  config.seed = 0  # One seed for parameters, dropout, latent samples, data split and order.
  # One sentence per line; an empty line is malformed. PTB's longest sentence has 82 tokens.
  config.data = config_lib.data_section(
    tokenizer="whitespace", lowercase=False, max_len=100, min_count=1, num_buckets=8, batch_size=32
  )

  config.model = ml_collections.ConfigDict()
  config.model.kind = "vae"  # "vae", or "lm": the same decoder with no latent.
  config.model.embed_dim = 256
  config.model.hidden_size = 256
  config.model.latent_size = 32
  config.model.encoder_layers = 1
  config.model.decoder_layers = 1
  config.model.z_to_initial_state = True  # Decoder state starts at Dense(z).
  config.model.z_to_every_input = True  # z concatenated to every decoder input.
  config.model.embedding_dropout = 0.5  # On input embeddings.
  config.model.output_dropout = 0.5  # On decoder outputs, before the vocabulary projection.
  # Output layer = decoder input embedding transposed (Press and Wolf 2017), one array.
  config.model.tie_embeddings = False
  config_lib.model_dtype_and_backend(config.model)

  # The remedies for posterior collapse; fields and defaults are VAEObjective's (loss.py).
  config.vae = ml_collections.ConfigDict(dataclasses.asdict(loss_lib.VAEObjective()))
  config.parallel = config_lib.parallel_section()
  config.population = config_lib.population_section()
  config.opt = config_lib.opt_section(
    learning_rate=1e-3, warmup_steps=0, schedule="constant", grad_clip_norm=5.0
  )
  config.train = config_lib.train_section(
    num_steps=20000,
    log_every=200,
    eval_every=2000,
    checkpoint_every=1000,
    num_examples_to_print=4,
    held_out_metric="valid_neg_elbo",
  )
  # Importance-weighted NLL, mutual information and active units at each evaluation.
  config.train.eval_num_samples = 10  # K for the periodic importance-weighted NLL (0: skip it).
  config.train.eval_max_sentences = 1000  # Held-out sentences used for them (0: all).
  return config


RANGES = {
  **config_lib.RANGES,
  **loss_lib.RANGES,
  "model.embed_dim": ">= 1",
  "model.hidden_size": ">= 1",
  "model.latent_size": ">= 1",
  "model.encoder_layers": ">= 1",
  "model.decoder_layers": ">= 1",
  "model.embedding_dropout": "[0, 1)",
  "model.output_dropout": "[0, 1)",
  "train.eval_num_samples": ">= 0",
  "train.eval_max_sentences": ">= 0",
}


def ptb_config(kind: str = "vae") -> ml_collections.ConfigDict:
  """Mikolov's Penn Treebank (10k words, <unk>, N) as in the text-VAE literature."""
  config = get_config()
  config.model.kind = kind
  if kind == "lm":  # No ELBO: the held-out NLL per token ranks as the NLL per sentence does.
    config.train.held_out_metric = "valid_loss"
  config.data.train_path = os.path.normpath(os.path.join(PTB_DIR, "ptb.train.txt"))
  config.data.valid_path = os.path.normpath(os.path.join(PTB_DIR, "ptb.valid.txt"))
  # Lighter than He et al.'s 0.5: a run that fits in these machines' hours lasts a few epochs.
  config.model.embedding_dropout = 0.3
  config.model.output_dropout = 0.3
  config.train.num_steps = 12000
  config.train.eval_max_sentences = 500
  return config


def validate(config: ml_collections.ConfigDict) -> loss_lib.VAEObjective:
  """Raises naming the flag when a field is out of range (of every member of a population);
  returns the objective of the config's own `vae` section."""
  members = config_lib.members(config, PER_MEMBER_FIELDS)
  for member in members:
    _validate_run(member)
  checked = _validate_run(config)
  if checked.aggressive:
    _check_aggressive(config, len(members))
  return checked


def _check_aggressive(config: ml_collections.ConfigDict, num_members: int) -> None:
  """Aggressive training needs an encoder, one run, and one process (it reads its phase back
  from metrics.jsonl, which process 0 alone writes)."""
  if config.model.kind != "vae":
    raise TextgenError(
      "--config.vae.aggressive=True trains a VAE's encoder; "
      f"model.kind={config.model.kind!r} has none"
    )
  if num_members > 1:
    raise TextgenError(
      "--config.vae.aggressive=True runs one model per program (its encoder "
      "loop's length is decided per run); train a population without it, or "
      "its members as separate runs"
    )
  if config.parallel.distributed:
    raise TextgenError(
      "--config.vae.aggressive=True runs on one host (several devices are "
      "fine); unset --config.parallel.distributed"
    )


def _validate_run(config: ml_collections.ConfigDict) -> loss_lib.VAEObjective:
  config_lib.validate_shared(config, NAME, RANGES)
  if config.model.kind not in KINDS:
    raise TextgenError(f"--config.model.kind={config.model.kind!r}: choose vae or lm")
  if (
    config.model.kind == "lm"
    and plateau.tracked(config)
    and any(word in config.train.held_out_metric for word in ("elbo", "kl", "reconstruction"))
  ):
    raise TextgenError(
      f"--config.train.held_out_metric={config.train.held_out_metric}: an LM "
      "has no latent, so no ELBO or KL; use valid_loss"
    )
  return loss_lib.check_objective(config.vae)
