r"""The LSTM language-model baseline on Penn Treebank: the VAE's decoder with no latent.

  python experiments/train_vae.py --config=experiments/configs/ptb_lm.py --workdir=runs/ptb_lm

The data come from $PTB_DIR or ../shared/data/ptb; see textgen_jax/config.py.
"""

from textgen_jax.vae.config import ptb_config


def get_config():
  return ptb_config(kind="lm")
