r"""The LSTM language-model baseline on Penn Treebank: the VAE's decoder with no latent.

  python experiments/train_vae.py --config=experiments/configs/ptb_lm.py --workdir=runs/ptb_lm

The data come from $PTB_DIR or ../shared/data/ptb; see textgen_jax/vae/config.py.

Measured (2-core Intel Xeon, seed 0, 2026-11-22; experiments/results/ptb.md): at step 5,000
(3.8 epochs, 1 h 13 min on one core) test NLL 106.95 nats per sentence (exact), perplexity 131.6.
"""

from textgen_jax import vae


def get_config():
  return vae.ptb_config(kind="lm")
