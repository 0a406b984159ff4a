"""The seq2seq experiment's configuration schema and defaults (ml_collections.ConfigDict).

Configs in experiments/configs/ start from `seq2seq_config()` and override fields; on the command
line every field can be set with `--config.<section>.<field>=value`.
"""

import os

import ml_collections

from textgen_jax.errors import TextgenError

DEFAULT_CORPUS = os.path.join(os.path.dirname(__file__), "data", "corpora", "fra_eng_40k.tsv")


def seq2seq_config() -> ml_collections.ConfigDict:
  """Word-level English->French on the bundled Tatoeba pairs; about 10 minutes on 2 CPU cores."""
  config = ml_collections.ConfigDict()
  config.seed = 0  # One seed for parameters, dropout, data split and data order.

  config.data = ml_collections.ConfigDict()
  config.data.train_path = DEFAULT_CORPUS  # TSV: source<TAB>target[<TAB>ignored...].
  config.data.valid_path = ""  # Held-out TSV; empty: a seeded split of train_path.
  config.data.valid_fraction = 0.05  # Share of train_path held out when valid_path is empty.
  config.data.max_examples = 0  # Use only the first N pairs of train_path (0: all).
  config.data.skip_malformed = False  # Skip (and count) lines without a tab; default: error.
  config.data.tokenizer = "word"  # "word" (punctuation split off) or "char".
  config.data.lowercase = True  # Lowercase both sides before tokenising.
  config.data.max_len = 16  # Most tokens per sentence, EOS not counted.
  config.data.too_long = "truncate"  # Longer sentences: "truncate" (and count) or "error".
  config.data.min_count = 2  # Tokens seen fewer times in training data map to UNK.
  config.data.max_size = 0  # Largest vocabulary per side, specials included (0: no limit).
  config.data.num_buckets = 4  # Padded lengths compiled for: few buckets, few compilations.
  config.data.batch_size = 64

  config.model = ml_collections.ConfigDict()
  config.model.embed_dim = 256
  config.model.hidden_size = 256
  config.model.encoder_layers = 1
  config.model.decoder_layers = 1
  config.model.bidirectional = False  # Bidirectional encoder; its state is projected.
  config.model.dropout_rate = 0.2  # On embeddings, between layers and before the output layer.
  config.model.input_encoding = "embedding"  # "embedding" or "one_hot" (the Keras seed).
  config.model.dtype = "float32"  # Matmul dtype, "float32" or "bfloat16"; cell state is float32.

  config.opt = ml_collections.ConfigDict()
  config.opt.name = "adam"  # "adam", "adamw" or "sgd" (b1 is the momentum).
  config.opt.learning_rate = 3e-3  # Peak rate, reached after warmup_steps.
  config.opt.b1 = 0.9
  config.opt.b2 = 0.999
  config.opt.weight_decay = 0.0  # AdamW only.
  config.opt.warmup_steps = 100  # Linear warmup from 0.
  config.opt.schedule = "cosine"  # After warmup: "constant", "cosine" (to 10%) or "rsqrt".
  config.opt.grad_clip_norm = 1.0  # Global-norm clipping; 0 turns it off.

  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 3500  # Length of the run, in optimizer steps (about 10 min on 2 cores).
  config.train.label_smoothing = 0.0
  config.train.log_every = 100  # Steps between train-metric records.
  config.train.eval_every = 1000  # Steps between validation passes (and at the end).
  config.train.checkpoint_every = 500  # Steps between checkpoints (and at the end).
  config.train.keep_checkpoints = 3  # Newest checkpoints kept.
  config.train.num_examples_to_print = 8  # Held-out translations printed at each evaluation.
  config.train.max_eval_batches = 0  # Cap on validation batches per pass (0: all).
  config.train.max_greedy_eval_pairs = 1000  # Held-out pairs greedily decoded per eval (0: all).
  return config


def check_positive(config: ml_collections.ConfigDict, fields: list[str]) -> None:
  """Raises naming the flag when a numeric field is not positive."""
  for name in fields:
    value = config
    for part in name.split("."):
      value = value[part]
    if not value > 0:
      raise TextgenError(f"--config.{name} must be positive, got {value}")
