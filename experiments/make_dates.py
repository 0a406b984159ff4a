r"""Writes a date-normalisation transduction task: free-form English dates -> ISO 8601.

  python experiments/make_dates.py --out_dir=data/dates
  python experiments/train_seq2seq.py --config=experiments/configs/seq2seq_char.py \
      --config.data.train_path=data/dates/train.tsv \
      --config.data.valid_path=data/dates/valid.tsv --workdir=runs/dates

Sources mix eight surface forms ("Tuesday, March 3, 1998", "3 mar 1998", "03/03/1998", ...),
with and without leading zeros;
targets are "1998-03-03". Validation dates never occur in training, in any form.
"""

import datetime
import os
import re

import numpy as np
from absl import flags

from textgen_jax import cli
from textgen_jax.errors import TextgenError

_OUT_DIR = flags.DEFINE_string("out_dir", "data/dates", "Where train.tsv and valid.tsv go.")
_NUM_TRAIN = flags.DEFINE_integer("num_train", 20000, "Training pairs.")
_NUM_VALID = flags.DEFINE_integer("num_valid", 1000, "Validation pairs (unseen dates).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")

FORMATS = (
  "%A, %B %d, %Y",
  "%B %d, %Y",
  "%d %B %Y",
  "%d %b %Y",
  "%b %d %Y",
  "%m/%d/%Y",
  "%d.%m.%Y",
  "%a %d %b %Y",
)


def date_pairs(dates: list[datetime.date], rng: np.random.Generator) -> list[tuple[str, str]]:
  """One (free-form, ISO) pair per date: a random format, leading zeros and case varied."""
  pairs = []
  for date in dates:
    source = date.strftime(FORMATS[rng.integers(len(FORMATS))])
    if rng.random() < 0.5:
      source = re.sub(r"\b0(\d)", r"\1", source)  # "March 03" -> "March 3", "03/07" -> "3/7"
    if rng.random() < 0.3:
      source = source.lower()
    pairs.append((source, date.isoformat()))
  return pairs


def main(argv):
  del argv
  cli.check_output_directory("--out_dir", _OUT_DIR.value)
  rng = np.random.default_rng(_SEED.value)
  first, last = datetime.date(1900, 1, 1), datetime.date(2099, 12, 31)
  offsets = rng.choice((last - first).days + 1, _NUM_TRAIN.value + _NUM_VALID.value, replace=False)
  dates = [first + datetime.timedelta(days=int(d)) for d in offsets]
  splits = {"train.tsv": dates[: _NUM_TRAIN.value], "valid.tsv": dates[_NUM_TRAIN.value :]}
  for filename, split_dates in splits.items():
    path = os.path.join(_OUT_DIR.value, filename)
    try:  # Checked above; what remains is a full disk or a train.tsv that is a directory.
      os.makedirs(_OUT_DIR.value, exist_ok=True)
      with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{s}\t{t}\n" for s, t in date_pairs(split_dates, rng))
    except OSError as e:
      raise TextgenError(
        f"--out_dir={_OUT_DIR.value}: cannot write {path} ({e.strerror})"
      ) from None
    print(f"wrote {len(split_dates)} pairs to {path}")


if __name__ == "__main__":
  cli.run(main)
