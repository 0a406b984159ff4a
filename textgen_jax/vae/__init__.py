"""The LSTM sentence VAE family (Bowman et al. 2016) and its language-model baseline (kind=lm).

config.py          the config schema (`get_config`, `ptb_config`) and its validation
model.py           the linen module `SentenceVAE`: posterior, decoder start, teacher-forced
                   logits, one decoding step
loss.py            reconstruction + beta * KL and the remedies for posterior collapse
aggressive.py      He et al. 2019's aggressive encoder training, around the compiled step
metrics.py         importance-weighted NLL, mutual information, active units
sentence_model.py  `SentenceModel`: sample, reconstruct, interpolate, evaluate; load and save
recipe.py          the family's hooks and `Family`; `train_and_evaluate(config, workdir)`
"""

from textgen_jax import families
from textgen_jax.vae.config import get_config, ptb_config
from textgen_jax.vae.model import SentenceVAE, SentenceVAEConfig
from textgen_jax.vae.recipe import FAMILY, train_and_evaluate
from textgen_jax.vae.sentence_model import SentenceModel

families.register(FAMILY)

__all__ = [
  "SentenceModel",
  "SentenceVAE",
  "SentenceVAEConfig",
  "get_config",
  "ptb_config",
  "train_and_evaluate",
]
