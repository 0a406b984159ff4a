r"""Workdir names campaign: every printable ASCII character and some Unicode in a workdir's name,
each trained, resumed, loaded and translated.

  python experiments/workdir_names.py > experiments/results/workdir_names.jsonl 2> /dev/null

For each name (a character between two letters, "a<c>b"; "/" separates directories and is
skipped) a tiny run trains 2 steps in `<tmp>/<name>/`, resumes to 3 from that checkpoint, and
Translator.load translates one sentence from it. A name orbax cannot write under (a glob
character: * ? [, or a backslash, which TensorStore reads as a directory separator) must be
refused in one line before anything is made. One JSON line per name,
then a summary line. Minutes on 2 CPU cores (each run compiles its steps).
"""

import contextlib
import json
import os
import string
import sys
import tempfile
import time

import ml_collections

from textgen_jax import seq2seq
from textgen_jax.checkpointing import GLOB_CHARACTERS, SEPARATOR_CHARACTERS
from textgen_jax.errors import TextgenError

UNICODE = ["é", "Ω", "日本語", "שלום", "🙂", "\u00a0", "\u200b", "\u2028", "e\u0301", "ﬁ"]


def names() -> list[str]:
  characters = [c for c in string.printable if c.isprintable() and c != "/"] + UNICODE
  return [f"a{c}b" for c in characters]


def tiny_config(train_path: str, num_steps: int) -> ml_collections.ConfigDict:
  """Seconds per run: 200 bundled pairs, one bucket, H=16."""
  config = seq2seq.get_config()
  config.data.train_path, config.data.max_examples = train_path, 200
  config.data.max_len, config.data.num_buckets, config.data.batch_size = 8, 1, 8
  config.model.embed_dim, config.model.hidden_size = 8, 16
  config.opt.schedule, config.opt.warmup_steps = "constant", 0
  config.train.num_steps, config.train.checkpoint_every = num_steps, 2
  config.train.num_examples_to_print, config.train.max_greedy_eval_pairs = 0, 8
  return config


def trial(root: str, name: str, train_path: str) -> dict:
  workdir = os.path.join(root, name)
  record = {
    "name": name,
    "refused": False,
    "trained": False,
    "resumed": False,
    "translated": False,
    "problem": None,
  }
  try:
    seq2seq.train_and_evaluate(tiny_config(train_path, 2), workdir)
    record["trained"] = True
    seq2seq.train_and_evaluate(tiny_config(train_path, 3), workdir)
    record["resumed"] = True
    outputs = seq2seq.Translator.load(workdir).translate(["Go eat."])
    record["translated"] = len(outputs) == 1
  except TextgenError as e:
    record["refused"] = str(e).startswith(f"--workdir={workdir}: its path contains")
    record["problem"] = str(e)
    record["made_nothing"] = not os.path.exists(workdir)
  except Exception as e:  # pylint: disable=broad-except  # A failure is a finding, recorded.
    record["problem"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
  record["expected"] = (
    record["refused"] and record.get("made_nothing", False)
    if any(c in GLOB_CHARACTERS + SEPARATOR_CHARACTERS for c in name)
    else record["translated"]
  )
  return record


def main() -> None:
  start = time.time()
  with tempfile.TemporaryDirectory() as root:
    train_path = seq2seq.config.DEFAULT_CORPUS
    records = []
    for name in names():
      with contextlib.redirect_stdout(sys.stderr):  # Training's lines; stdout is the records'.
        records.append(trial(os.path.join(root, "runs"), name, train_path))
      print(json.dumps(records[-1], ensure_ascii=False), flush=True)
  refused = [r["name"] for r in records if r["refused"]]
  print(
    json.dumps(
      {
        "summary": True,
        "names": len(records),
        "trained_resumed_translated": sum(r["translated"] for r in records),
        "refused_in_one_line": refused,
        "as_expected": sum(r["expected"] for r in records),
        "seconds": round(time.time() - start),
      },
      ensure_ascii=False,
    )
  )
  sys.exit(0 if all(r["expected"] for r in records) else 1)


if __name__ == "__main__":
  main()
