r"""Multi30k German->English (WMT16 task 1), the setup of the most used seq2seq tutorials
(bentrevett/pytorch-seq2seq): train / val / test_2016_flickr, lowercased tokens, min count 2,
batch 128, 10 epochs (2,270 steps), Adam at 1e-3 with gradient clipping at 1, dropout 0.5,
embedding 256, hidden 512, greedy decoding.

The data is research-only: it is read from ../shared/data/multi30k (or --config.data paths),
never copied here. It uses the corpus's own lowercased, Moses-tokenised files (tok/), split on
whitespace; the tutorials tokenise with spaCy instead, so BLEU on tokens compares closely, not
exactly.

  # Their 2-layer LSTM without attention (published: BLEU 13.76, test PPL 43.8):
  python experiments/train_seq2seq.py --config=experiments/configs/multi30k.py:lstm \
      --workdir=runs/m30k_lstm
  # Their bidirectional encoder with Bahdanau attention (published, with GRUs: BLEU 28.30):
  python experiments/train_seq2seq.py --config=experiments/configs/multi30k.py:attention \
      --workdir=runs/m30k_attention
  # Tokenised lowercased BLEU on test_2016_flickr (greedy; then --strategy=beam --beam_size=5):
  python experiments/evaluate_translation.py --workdir=runs/m30k_attention --tokenize=none \
      --test=../shared/data/multi30k/tok/test_2016_flickr.lc.norm.tok.de,../shared/data/multi30k/tok/test_2016_flickr.lc.norm.tok.en

From the raw files (cased, untokenised) with one joint SentencePiece model (8,000 unigram pieces,
byte fallback) for both languages, output detokenised and scored by sacreBLEU against the raw
references (issue 25):

  python experiments/train_seq2seq.py --config=experiments/configs/multi30k.py:attention_sp \
      --workdir=runs/m30k_attention_sp
  python experiments/evaluate_translation.py --workdir=runs/m30k_attention_sp \
      --test=../shared/data/multi30k/raw/test_2016_flickr.de.gz,../shared/data/multi30k/raw/test_2016_flickr.en.gz

Measured results: experiments/results/translation.md.
"""

import os

from textgen_jax import seq2seq

DATA = os.path.join(
  os.path.dirname(__file__), "..", "..", "..", "shared", "data", "multi30k", "tok"
)
RAW = os.path.join(os.path.dirname(DATA), "raw")
VARIANTS = ("lstm", "attention", "attention_sp")


def parallel(split: str) -> str:
  """The split's German,English files (read_pairs reads such a pair line by line)."""
  return ",".join(
    os.path.normpath(os.path.join(DATA, f"{split}.lc.norm.tok.{language}"))
    for language in ("de", "en")
  )


def raw_parallel(split: str) -> str:
  """The split's raw German,English files (gzipped, as distributed)."""
  return ",".join(
    os.path.normpath(os.path.join(RAW, f"{split}.{language}.gz")) for language in ("de", "en")
  )


def get_config(variant: str = "attention"):
  if variant not in VARIANTS:
    raise ValueError(f"unknown Multi30k variant {variant!r}; choose one of {VARIANTS}")
  config = seq2seq.get_config()
  config.data.train_path = parallel("train")
  config.data.valid_path = parallel("val")
  config.data.tokenizer = "whitespace"  # The files are tokenised (and lowercased) already.
  config.data.lowercase = True
  config.data.min_count = 2
  config.data.max_len = 40  # Longer sentences (a handful) are cut, and counted.
  config.data.num_buckets = 6
  config.data.batch_size = 128
  config.model.embed_dim = 256
  config.model.hidden_size = 512
  config.model.dropout_rate = 0.5
  if variant == "lstm":
    config.model.encoder_layers = config.model.decoder_layers = 2
  else:  # Bahdanau's additive score over a bidirectional encoder, its context fed back.
    config.model.bidirectional = True
    config.model.attention = "additive"
    config.model.input_feeding = True
  if variant == "attention_sp":
    config.data.train_path = raw_parallel("train")
    config.data.valid_path = raw_parallel("val")
    config.data.tokenizer = "sentencepiece"
    config.data.vocab_size = 8000
    config.data.lowercase = False
    config.data.max_len = 50  # 99.9% of training sentences have at most 44 pieces.
  config.opt.learning_rate = 1e-3
  config.opt.warmup_steps = 0
  config.opt.schedule = "constant"
  config.opt.grad_clip_norm = 1.0
  config.train.num_steps = 2270  # 10 epochs of 29,000 pairs in batches of 128.
  config.train.log_every = 50
  config.train.eval_every = 227  # Every epoch.
  config.train.checkpoint_every = 227
  config.train.keep_checkpoints = 3
  config.train.num_examples_to_print = 3
  config.train.max_greedy_eval_pairs = 0  # All 1,014 validation sentences.
  return config
