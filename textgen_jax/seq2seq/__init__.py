"""The LSTM seq2seq family: an encoder reads the source, its final state starts the decoder.

config.py      the config schema (`get_config`) and its validation
model.py       the linen module `Seq2Seq` (encode, teacher-forced logits, one decoding step)
loss.py        masked token cross-entropy with label smoothing
translator.py  `Translator`: text in, text out, batched and compiled; load and save
metrics.py     corpus BLEU and chrF (sacreBLEU) and exact match, every reference of a source
plots.py       attention heatmaps (source tokens against output tokens)
recipe.py      the recipe: `train_and_evaluate(config, workdir)` and `fit(tsv, workdir)`
"""

from textgen_jax import families
from textgen_jax.seq2seq.config import FAMILY, get_config
from textgen_jax.seq2seq.model import Seq2Seq, Seq2SeqConfig
from textgen_jax.seq2seq.recipe import fit, train_and_evaluate
from textgen_jax.seq2seq.translator import TRAIN_SCRIPT, VOCABULARY_FILES, Translator

families.register(
  families.Family(
    FAMILY,
    get_config,
    VOCABULARY_FILES,
    TRAIN_SCRIPT,
    train_and_evaluate,
    Translator,
    added_later=frozenset({("model", "attention"), ("model", "input_feeding")}),
  )
)

__all__ = ["Seq2Seq", "Seq2SeqConfig", "Translator", "fit", "get_config", "train_and_evaluate"]
