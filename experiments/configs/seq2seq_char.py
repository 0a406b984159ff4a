r"""Character-level seq2seq, for string transduction tasks (spelling, dates, transliteration).

  python experiments/train_seq2seq.py --config=experiments/configs/seq2seq_char.py \
      --config.data.train_path=pairs.tsv --workdir=runs/char
"""

from textgen_jax.seq2seq.config import get_config as seq2seq_config


def get_config():
  config = seq2seq_config()
  config.data.tokenizer = "char"
  config.data.lowercase = False
  config.data.max_len = 40
  config.data.num_buckets = 4
  config.model.dropout_rate = 0.1
  config.model.bidirectional = True
  return config
