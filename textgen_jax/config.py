"""Experiment configuration schemas and defaults (ml_collections.ConfigDict).

Configs in experiments/configs/ start from `seq2seq_config()` or `sentence_vae_config()` and
override fields; on the command line every field can be set with `--config.<section>.<field>=v`.
"""

import os

import ml_collections

from textgen_jax.errors import TextgenError

DEFAULT_CORPUS = os.path.join(os.path.dirname(__file__), "data", "corpora", "fra_eng_40k.tsv")
# Penn Treebank is research-only and not shipped: $PTB_DIR, else ../shared/data/ptb beside the repo.
PTB_DIR = os.environ.get("PTB_DIR", os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), os.pardir, "shared", "data", "ptb"))


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
  config.data.vocab_size_multiple = 1  # Pad vocabularies with unused tokens to a multiple of it.
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
  config.model.scan_unroll = 1  # Timesteps per iteration of the teacher-forced LSTM loop.
  config.model.lstm_backend = "auto"  # "scan", "cudnn" (GPU, float32) or "auto": cudnn on GPUs.

  config.parallel = parallel_config()

  config.opt = ml_collections.ConfigDict()
  config.opt.name = "adam"  # "adam", "adamw" or "sgd" (b1 is the momentum).
  config.opt.learning_rate = 3e-3  # Peak rate, reached after warmup_steps.
  config.opt.b1 = 0.9
  config.opt.b2 = 0.999
  config.opt.weight_decay = 0.0  # AdamW only.
  config.opt.warmup_steps = 100  # Linear warmup from 0.
  config.opt.schedule = "cosine"  # After warmup: "constant", "cosine" (to 10%) or "rsqrt".
  config.opt.grad_clip_norm = 1.0  # Global-norm clipping; 0 turns it off.
  config.opt.skip_non_finite = 0  # Skip up to N non-finite steps in a row (0: stop at one).

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


def parallel_config() -> ml_collections.ConfigDict:
  """Devices and hosts, the same for every model family (see textgen_jax/parallel.py)."""
  parallel = ml_collections.ConfigDict()
  parallel.num_devices = 0  # Devices to train on (0: all); the batch is split over them.
  parallel.model_shards = 1  # >1: vocabulary matrices split over this many devices each.
  parallel.distributed = False  # jax.distributed.initialize() first: several hosts.
  # Found by JAX on TPU pods, SLURM and Open MPI; elsewhere set all three (on each process).
  parallel.coordinator_address = ""  # host:port of process 0.
  parallel.num_processes = 0
  parallel.process_id = -1
  return parallel


def sentence_vae_config() -> ml_collections.ConfigDict:
  """A sentence VAE (or, with model.kind="lm", a language model) at the literature's PTB size.

  Sizes follow Li et al. 2019 and Fu et al. 2019 (embedding 256, hidden 256, latent 32, batch
  32); dropout and clipping follow He et al. 2019. data.train_path must be set.
  """
  config = ml_collections.ConfigDict()
  config.seed = 0  # One seed for parameters, dropout, latent samples, data split and order.

  config.data = ml_collections.ConfigDict()
  config.data.train_path = ""  # One sentence per line.
  config.data.valid_path = ""  # Held-out sentences; empty: a seeded split of train_path.
  config.data.valid_fraction = 0.05  # Share of train_path held out when valid_path is empty.
  config.data.max_examples = 0  # Use only the first N sentences of train_path (0: all).
  config.data.skip_malformed = False  # Skip (and count) empty lines; default: error.
  config.data.tokenizer = "whitespace"  # "whitespace" (pre-tokenised text), "word" or "char".
  config.data.lowercase = False
  config.data.max_len = 100  # Most tokens per sentence, EOS not counted (PTB's longest: 82).
  config.data.too_long = "truncate"  # Longer sentences: "truncate" (and count) or "error".
  config.data.min_count = 1  # Tokens seen fewer times in training data map to UNK.
  config.data.max_size = 0  # Largest vocabulary, specials included (0: no limit).
  config.data.vocab_size_multiple = 1  # Pad the vocabulary with unused tokens to a multiple of it.
  config.data.num_buckets = 8
  config.data.batch_size = 32

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
  config.model.dtype = "float32"  # Matmul dtype, "float32" or "bfloat16"; cell state is float32.
  config.model.scan_unroll = 1  # Timesteps per iteration of the teacher-forced LSTM loop.
  config.model.lstm_backend = "auto"  # "scan", "cudnn" (GPU, float32) or "auto": cudnn on GPUs.

  config.vae = ml_collections.ConfigDict()  # See textgen_jax/vae_objective.py.
  config.vae.kl_schedule = "linear"  # "constant", "linear", "sigmoid" or "cyclical".
  config.vae.beta_max = 1.0
  config.vae.anneal_steps = 10000  # linear and sigmoid: steps to reach beta_max.
  config.vae.cycle_steps = 10000  # cyclical: period.
  config.vae.cycle_ratio = 0.5  # cyclical: share of each period spent increasing.
  config.vae.free_bits = 0.0  # Nats per latent dimension or per sentence (0: off).
  config.vae.free_bits_mode = "per_dimension"  # "per_dimension" or "per_batch".
  config.vae.word_dropout = 0.0  # Decoder-input words replaced by UNK at this rate.
  config.vae.pretrain_steps = 0  # Autoencoder steps, then the decoder is reset (0: off).

  config.parallel = parallel_config()

  config.opt = ml_collections.ConfigDict()
  config.opt.name = "adam"
  config.opt.learning_rate = 1e-3
  config.opt.b1 = 0.9
  config.opt.b2 = 0.999
  config.opt.weight_decay = 0.0
  config.opt.warmup_steps = 0
  config.opt.schedule = "constant"
  config.opt.grad_clip_norm = 5.0
  config.opt.skip_non_finite = 0  # Skip up to N non-finite steps in a row (0: stop at one).

  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 20000
  config.train.log_every = 200
  config.train.eval_every = 2000
  config.train.checkpoint_every = 1000
  config.train.keep_checkpoints = 3
  config.train.num_examples_to_print = 4  # Prior samples and reconstructions at each evaluation.
  config.train.max_eval_batches = 0  # Cap on validation batches per pass (0: all).
  # Importance-weighted NLL, mutual information and active units at each evaluation.
  config.train.eval_num_samples = 10  # K for the periodic importance-weighted NLL (0: skip it).
  config.train.eval_max_sentences = 1000  # Held-out sentences used for them (0: all).
  return config


def ptb_config(kind: str = "vae") -> ml_collections.ConfigDict:
  """Mikolov's Penn Treebank (10k words, <unk>, N) as in the text-VAE literature."""
  config = sentence_vae_config()
  config.model.kind = kind
  config.data.train_path = os.path.normpath(os.path.join(PTB_DIR, "ptb.train.txt"))
  config.data.valid_path = os.path.normpath(os.path.join(PTB_DIR, "ptb.valid.txt"))
  # Lighter than He et al.'s 0.5: a run that fits in these machines' hours lasts a few epochs.
  config.model.embedding_dropout = 0.3
  config.model.output_dropout = 0.3
  config.train.num_steps = 12000
  config.train.eval_max_sentences = 500
  return config


def check_positive(config: ml_collections.ConfigDict, fields: list[str]) -> None:
  """Raises naming the flag when a numeric field is not positive."""
  for name in fields:
    value = config
    for part in name.split("."):
      value = value[part]
    if not value > 0:
      raise TextgenError(f"--config.{name} must be positive, got {value}")
