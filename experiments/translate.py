r"""Translates sentences with a trained workdir: one output line per input line.

  python experiments/translate.py --workdir=runs/fr_en "Go." "Hello!"
  python experiments/translate.py --workdir=runs/fr_en < sentences.txt > translations.txt
"""

import sys

import jax
from absl import flags

from textgen_jax import cli, translation
from textgen_jax.errors import TextgenError

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir (or a saved translator).",
                               required=True)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Sentences decoded together.")
_TEMPERATURE = flags.DEFINE_float("temperature", None, "Sample at this temperature (default: greedy).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (with --temperature).")


def main(argv):
  texts = argv[1:] if len(argv) > 1 else sys.stdin.read().splitlines()
  if _TEMPERATURE.value is not None and _TEMPERATURE.value <= 0:
    raise TextgenError(f"--temperature must be > 0, got {_TEMPERATURE.value} (omit it for greedy)")
  translator = translation.Translator.load(_WORKDIR.value)
  rng = jax.random.key(_SEED.value) if _TEMPERATURE.value is not None else None
  for output in translator.translate(texts, _BATCH_SIZE.value, _TEMPERATURE.value, rng):
    print(output)


if __name__ == "__main__":
  cli.run(main)
