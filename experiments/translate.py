r"""Translates sentences with a trained workdir: one output line per input line.

  python experiments/translate.py --workdir=runs/fr_en "Go." "Hello!"
  python experiments/translate.py --workdir=runs/fr_en < sentences.txt > translations.txt
  python experiments/translate.py --workdir=runs/fr_en --strategy=beam --beam_size=5 "Go."
  python experiments/translate.py --workdir=runs/fr_en --strategy=sample --top_p=0.9 "Go."
"""

import sys

import jax
from absl import flags

from textgen_jax import cli, seq2seq

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir (or a saved translator).",
                               required=True)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Sentences decoded together.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (with --strategy=sample).")
_decode_settings = cli.define_decode_flags()


def main(argv):
  texts = argv[1:] if len(argv) > 1 else sys.stdin.read().splitlines()
  settings = _decode_settings()
  translator = seq2seq.Translator.load(_WORKDIR.value)
  for output in translator.translate(texts, _BATCH_SIZE.value, settings,
                                     jax.random.key(_SEED.value)):
    print(output)


if __name__ == "__main__":
  cli.run(main)
