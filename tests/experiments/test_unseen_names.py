"""Tests for experiments/make_unseen_names_test.py: held-out pairs with unseen names and numbers."""

import re

import pytest

from tests.helpers import run_script, tiny_config, write_tsv
from textgen_jax import seq2seq

PAIRS = [
  ("Tom is here.", "Tom est ici."),
  ("Mary is 25.", "Mary a 25 ans."),
  ("I like cats.", "J'aime les chats."),
  ("Call Tom.", "Appelle Tom."),
  ("Call Tom.", "Appelez Tom."),
] * 8 + [(f"Ask Anna {i}0.", f"Demande à Anna {i}0.") for i in range(10)]


@pytest.mark.slow
def test_shared_names_and_numbers_are_replaced_by_ones_training_never_saw(tmp_path):
  workdir = str(tmp_path / "run")
  config = tiny_config(write_tsv(tmp_path / "pairs.tsv", PAIRS), train__num_steps=1)
  config.data.valid_fraction = 0.5
  seq2seq.train_and_evaluate(config, workdir)
  output = tmp_path / "unseen.tsv"
  result = run_script("make_unseen_names_test.py", f"--workdir={workdir}", f"--output={output}")
  assert result.returncode == 0, result.stderr
  training = " ".join(s + " " + t for s, t in PAIRS).lower()
  lines = [line.split("\t") for line in output.read_text(encoding="utf-8").splitlines()]
  assert lines and f"{len(lines)} of " in result.stdout
  sources_seen = {}
  for source, target in lines:
    source_words = set(re.findall(r"\w+", source))
    new = {w for w in source_words if w.lower() not in re.findall(r"\w+", training)}
    assert new, (source, target)  # Something was substituted...
    assert new <= set(re.findall(r"\w+", target))  # ... the same on both sides.
    assert "I like cats." != source  # Pairs with nothing shared are left out.
    sources_seen.setdefault(source, set()).add(target)
  # "Call Tom." has two references: one substitute for both, so they stay one source.
  call = [s for s in sources_seen if s.startswith("Call ")]
  assert call and all(len(sources_seen[s]) == 2 for s in call)
