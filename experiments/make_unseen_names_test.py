r"""A test set of names and numbers a run never saw: its own held-out pairs, with every name and
number that the source and the target share replaced by one that occurs nowhere in its training
text.

  python experiments/make_unseen_names_test.py --workdir=runs/fr_en --output=runs/unseen_names.tsv
  python experiments/evaluate_translation.py --workdir=runs/fr_en --test=runs/unseen_names.tsv

How: the run's held-out split is drawn again from its config.json (the same seed and grouping
as training). A pair is kept when its source and target share at least one capitalised word
("Tom", "Boston"; sentence-initial words included when they occur in both) or one number, the
same string on both sides. Each shared name becomes a made-up one (two or three syllables from
a seeded generator, capitalised) and each shared number of two or more digits a random number
with as many digits (every single digit occurs in training), both checked against every word of
the training split (case-insensitively), so that a word vocabulary can only read them as <unk>.
The same substitute replaces a string on both sides (and in every reference of a source);
since only strings copied verbatim between the languages are replaced, the target stays a
translation of the source.
"""

import random
import re

from absl import flags

from textgen_jax import cli
from textgen_jax import config as config_lib
from textgen_jax.data import pipeline, readers
from textgen_jax.data.tokenizers import make_tokenizer
from textgen_jax.workdir import read_model_config

_WORKDIR = flags.DEFINE_string("workdir", None, "A translation workdir.", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "The TSV to write.", required=True)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the made-up names and numbers.")

_NAME = re.compile(r"\b[A-Z][a-z]{2,}\b")
_NUMBER = re.compile(r"\b\d+\b")
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


def shared(pattern: re.Pattern, source: str, target: str) -> list[str]:
  return sorted(set(pattern.findall(source)) & set(pattern.findall(target)))


def substitute(text: str, substitutes: dict[str, str]) -> str:
  """Each whole-word occurrence of a key replaced by its value, in one pass."""
  pattern = re.compile(r"\b(" + "|".join(map(re.escape, substitutes)) + r")\b")
  return pattern.sub(lambda match: substitutes[match.group(1)], text)


def main(argv):
  del argv
  cli.check_output_file("--output", _OUTPUT.value)
  config = read_model_config(_WORKDIR.value)
  splits = pipeline.read_splits(
    config, readers.read_pairs, make_tokenizer("whitespace", config.data.lowercase)
  )
  seen = {
    word.lower()
    for source, target in splits.train
    for word in re.findall(r"\w+", source + " " + target)
  }
  rng = random.Random(_SEED.value)

  def made_up_name() -> str:
    while True:
      name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
      if name.lower() not in seen:
        return name

  def made_up_number(digits: int) -> str:
    while True:
      number = str(rng.randint(10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1))
      if number not in seen:
        return number

  written, drawn = 0, {}
  with open(_OUTPUT.value, "w", encoding="utf-8") as f:
    for source, target in splits.valid:
      # The references of one source keep one substitute per string, so they stay one group.
      names = shared(_NAME, source, target)
      numbers = [n for n in shared(_NUMBER, source, target) if len(n) > 1]
      for string in names + numbers:
        if (source, string) not in drawn:
          drawn[source, string] = made_up_name() if string in names else made_up_number(len(string))
      substitutes = {string: drawn[source, string] for string in names + numbers}
      if not substitutes:
        continue
      f.write(f"{substitute(source, substitutes)}\t{substitute(target, substitutes)}\n")
      written += 1
  print(
    f"{written} of {len(splits.valid)} held-out pairs of {_WORKDIR.value} share a name or number; "
    f"written with unseen ones to {_OUTPUT.value} "
    f"(data seed {config_lib.data_seed(config)})"
  )


if __name__ == "__main__":
  cli.run(main)
