r"""Word-level English->French on the bundled 40k Tatoeba pairs (the default run).

  python experiments/train_seq2seq.py --workdir=runs/fr_en

Expect about 10 minutes on 2 CPU cores; see README.md for the held-out figures it reaches.
"""

from textgen_jax.seq2seq.config import get_config as seq2seq_config


def get_config():
  return seq2seq_config()
