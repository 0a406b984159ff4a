r"""A tiny model and a short run, for smoke tests of the pipeline (about a minute on CPU).

  python experiments/train_seq2seq.py --config=experiments/configs/seq2seq_tiny.py \
      --workdir=/tmp/tiny
"""

from textgen_jax import seq2seq


def get_config():
  config = seq2seq.get_config()
  config.data.max_examples = 2000
  config.data.batch_size = 32
  config.model.embed_dim = 32
  config.model.hidden_size = 32
  config.train.num_steps = 200
  config.train.log_every = 50
  config.train.eval_every = 100
  config.train.checkpoint_every = 100
  config.train.num_examples_to_print = 3
  return config
