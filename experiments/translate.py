r"""Translates sentences with a trained workdir: one output line per input line.

  python experiments/translate.py --workdir=runs/fr_en "Go." "Hello!"
  python experiments/translate.py --workdir=runs/fr_en < sentences.txt > translations.txt
  python experiments/translate.py --workdir=runs/fr_en --strategy=beam --beam_size=5 "Go."
  python experiments/translate.py --workdir=runs/fr_en --strategy=sample --top_p=0.9 "Go."
  # The 3 best beam hypotheses per input, K lines each: input number, rank, score, text (tab-separated):
  python experiments/translate.py --workdir=runs/fr_en --strategy=beam --beam_size=5 --n_best=3 "Go."
  # With attention: a heatmap PNG per input (source tokens against output tokens) in a folder:
  python experiments/translate.py --workdir=runs/fr_en_attention --attention_png=maps "Go."

An n-best line is `INPUT_INDEX<TAB>RANK<TAB>SCORE<TAB>TRANSLATION`: the input's 0-based line
number, rank 1 for the best, and the score beam search ranks by (log p over the length
normalisation of --length_norm/--length_alpha).
"""

from textgen_jax import cli  # First: Ctrl-C during the imports below is one line too.

cli.exit_on_ctrl_c()

import os
import sys

import jax
from absl import flags

from textgen_jax import seq2seq
from textgen_jax.data import readers
from textgen_jax.errors import TextgenError
from textgen_jax.seq2seq import plots

_WORKDIR = flags.DEFINE_string(
  "workdir", None, "A training workdir (or a saved translator).", required=True
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Sentences decoded together.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (with --strategy=sample).")
_N_BEST = flags.DEFINE_integer(
  "n_best",
  0,
  "With --strategy=beam: print the K best hypotheses "
  "per input, tab-separated with their scores (0: the best alone).",
)
_ATTENTION_PNG = flags.DEFINE_string(
  "attention_png", None, "Folder for one attention heatmap PNG per input (models with attention)."
)
_STEP = flags.DEFINE_integer("step", None, "The checkpoint (default: the latest).")
_AVERAGE_LAST = flags.DEFINE_integer(
  "average_last",
  0,
  "Average the parameters of the last K kept checkpoints (0 or 1: one checkpoint).",
)
_decode_settings = cli.define_decode_flags()


def main(argv):
  # Bytes, so that a line that is not UTF-8 still gives its output line (with a warning).
  texts = argv[1:] if len(argv) > 1 else readers.read_input_lines(sys.stdin.buffer.read())
  settings = _decode_settings()
  if _ATTENTION_PNG.value and settings.strategy == "sample":
    raise TextgenError("--attention_png draws the maps of greedy or beam outputs")
  if _N_BEST.value and settings.strategy != "beam":
    raise TextgenError("--n_best needs --strategy=beam")
  translator = seq2seq.Translator.load(
    _WORKDIR.value, _STEP.value, average_last=_AVERAGE_LAST.value
  )
  if _N_BEST.value:
    for index, n_best in enumerate(
      translator.n_best(texts, _N_BEST.value, _BATCH_SIZE.value, settings)
    ):
      for rank, (text, score) in enumerate(n_best, start=1):
        print(f"{index}\t{rank}\t{score:.4f}\t{text}")
  else:
    for output in translator.translate(
      texts, _BATCH_SIZE.value, settings, jax.random.key(_SEED.value)
    ):
      print(output)
  if _ATTENTION_PNG.value:
    paths = plots.attention_heatmaps(
      translator.attention(texts, _BATCH_SIZE.value, settings), _ATTENTION_PNG.value
    )
    print(
      f"wrote {len(paths)} attention maps to {os.path.abspath(_ATTENTION_PNG.value)}",
      file=sys.stderr,
    )


if __name__ == "__main__":
  cli.run(main)
