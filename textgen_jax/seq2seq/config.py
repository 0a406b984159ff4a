"""The seq2seq family's config schema and its validation.

`get_config()` is the default run: word-level English->French on the bundled Tatoeba pairs,
3,500 steps of 64 pairs, about 4 minutes on 2 CPU cores; held out by source, held-out loss 1.214
nats per token, greedy BLEU 30.57, chrF 51.62, exact match 0.222 at the end (docs/translation.md, measured
2026-12-02).
"""

import os

import ml_collections

from textgen_jax import config as config_lib
from textgen_jax import population
from textgen_jax.errors import TextgenError
from textgen_jax.models.attention import KINDS as ATTENTION_KINDS

NAME = "seq2seq"
DEFAULT_CORPUS = os.path.join(
  os.path.dirname(os.path.dirname(__file__)), "data", "corpora", "fra_eng_40k.tsv"
)
INPUT_ENCODINGS = ("embedding", "one_hot")


# What the members of a population may vary besides their seed (textgen_jax/population.py).
PER_MEMBER_FIELDS = population.ENGINE_FIELDS | {"train.label_smoothing", "model.dropout_rate"}


def get_config() -> ml_collections.ConfigDict:
  """Word-level English->French on the bundled Tatoeba pairs."""
  config = ml_collections.ConfigDict()
  config.family = NAME  # Recorded in the workdir's config.json.
  config.seed = 0  # One seed for parameters, dropout, data split and data order.
  # TSV: source<TAB>target[<TAB>ignored...]; a line without a tab or with an empty side is
  # malformed.
  # Held out by source: Tatoeba lists several translations of many sentences, and a source on
  # both sides would be scored on what was trained on; metrics use all its references.
  config.data = config_lib.data_section(train_path=DEFAULT_CORPUS, valid_split="grouped")

  config.model = ml_collections.ConfigDict()
  config.model.embed_dim = 256
  config.model.hidden_size = 256
  config.model.encoder_layers = 1
  config.model.decoder_layers = 1
  config.model.bidirectional = False  # Bidirectional encoder; its state is projected.
  config.model.dropout_rate = 0.2  # On embeddings, between layers and before the output layer.
  config.model.input_encoding = "embedding"  # "embedding" or "one_hot" (the Keras seed).
  # Attention over the encoder's outputs: "none" (the final state alone carries the source),
  # Luong's "dot" or "general", or Bahdanau's "additive" score (textgen_jax/models/attention.py).
  config.model.attention = "none"
  config.model.input_feeding = False  # Luong's input feeding: h~ feeds the next decoder step.
  # Output layer = target embedding transposed (Press and Wolf 2017), one array.
  config.model.tie_embeddings = False
  # Source and target read one embedding table; needs a joint vocabulary (sentencepiece).
  config.model.share_embeddings = False
  config_lib.model_dtype_and_backend(config.model)

  config.parallel = config_lib.parallel_section()
  config.population = config_lib.population_section()
  config.opt = config_lib.opt_section()
  config.train = config_lib.train_section()
  config.train.label_smoothing = 0.0
  # Held-out sources greedily decoded per eval for BLEU, chrF and exact match (0: all).
  config.train.max_greedy_eval_pairs = 1000
  return config


RANGES = {
  **config_lib.RANGES,
  "model.embed_dim": ">= 1",
  "model.hidden_size": ">= 1",
  "model.encoder_layers": ">= 1",
  "model.decoder_layers": ">= 1",
  "model.dropout_rate": "[0, 1)",
  "train.label_smoothing": "[0, 1)",
  "train.max_greedy_eval_pairs": ">= 0",
}


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises naming the flag when a field is out of range (of every member of a population)."""
  for member in config_lib.members(config, PER_MEMBER_FIELDS):
    _validate_run(member)


def _validate_run(config: ml_collections.ConfigDict) -> None:
  config_lib.validate_shared(config, NAME, RANGES)
  if config.model.input_encoding not in INPUT_ENCODINGS:
    raise TextgenError(
      f"--config.model.input_encoding={config.model.input_encoding!r}: choose embedding or one_hot"
    )
  if config.model.attention not in ATTENTION_KINDS:
    raise TextgenError(
      f"--config.model.attention={config.model.attention!r}: choose one of "
      f"{', '.join(ATTENTION_KINDS)}"
    )
  if config.model.share_embeddings and (
    config.data.tokenizer != "sentencepiece" or config.data.subword_vocabularies != "joint"
  ):
    raise TextgenError(
      "--config.model.share_embeddings=True needs one vocabulary for both sides: train a joint "
      "one with --config.data.tokenizer=sentencepiece --config.data.subword_vocabularies=joint"
    )
  if config.model.tie_embeddings and config.model.input_encoding == "one_hot":
    raise TextgenError(
      "--config.model.tie_embeddings=True ties the output layer to the target embedding, but "
      "--config.model.input_encoding=one_hot has none: use embedding inputs"
    )
  if config.model.input_feeding and config.model.attention == "none":
    raise TextgenError(
      "--config.model.input_feeding=True feeds the attentional vector, so it "
      "needs --config.model.attention (dot, general or additive)"
    )
