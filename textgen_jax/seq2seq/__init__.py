"""The LSTM seq2seq family: an encoder reads the source, its final state starts the decoder.

config.py      the config schema (`get_config`) and its validation
model.py       the linen module `Seq2Seq` (encode, teacher-forced logits, one decoding step)
loss.py        masked token cross-entropy with label smoothing
translator.py  `Translator`: text in, text out, batched and compiled; load and save
metrics.py     corpus BLEU and chrF (sacreBLEU) and exact match, every reference of a source
plots.py       attention heatmaps (source tokens against output tokens)
recipe.py      the family's hooks and `Family`; `train_and_evaluate(config, workdir)`, `fit`
"""

from textgen_jax import families
from textgen_jax.seq2seq.config import get_config
from textgen_jax.seq2seq.model import Seq2Seq, Seq2SeqConfig
from textgen_jax.seq2seq.recipe import FAMILY, fit, train_and_evaluate
from textgen_jax.seq2seq.translator import Translator

families.register(FAMILY)

__all__ = ["Seq2Seq", "Seq2SeqConfig", "Translator", "fit", "get_config", "train_and_evaluate"]
