r"""A sentence VAE on Penn Treebank that keeps its latent code in use.

  python experiments/train_vae.py --config=experiments/configs/ptb_vae.py --workdir=runs/ptb_vae

Recipe: beta annealed linearly from 0 to 1 over the first 2,000 steps (1.5 epochs), with free
bits of 0.25 nats per latent dimension (Kingma et al. 2016): a dimension whose batch-mean KL is
below 0.25 pays nothing, so up to 8 nats of code are free. Li et al. 2019's encoder pretraining
is one switch away (--config.vae.pretrain_steps=N). The data come from $PTB_DIR or
../shared/data/ptb. Dropout 0.3, not He et al.'s 0.5: our runs are a few epochs long.

Measured (2-core Intel Xeon, seed 0, 2026-11-22; experiments/results/ptb.md): at step 5,000
(3.8 epochs, 1 h 23 min on one core) test NLL 107.18 nats per sentence (500-sample bound,
perplexity 133.0), -ELBO 110.49, KL 7.35, MI 4.52, 32 of 32 units active.
"""

from textgen_jax import vae


def get_config():
  config = vae.ptb_config(kind="vae")
  config.vae.kl_schedule = "linear"
  config.vae.anneal_steps = 2000
  config.vae.free_bits = 0.25
  config.vae.free_bits_mode = "per_dimension"
  return config
