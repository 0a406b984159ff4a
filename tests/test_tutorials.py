"""The tutorials' Python blocks run, in order, at toy size (TEXTGEN_TUTORIAL=toy), so the pages
cannot drift from the code; and experiments/run_tutorial.py writes outputs where they belong."""

import os
import pathlib

import pytest

from experiments import run_tutorial

DOCS = pathlib.Path(__file__).parents[1] / "docs"
TUTORIALS = ["tutorial_seq2seq.md", "tutorial_vae.md"]


@pytest.mark.slow
@pytest.mark.parametrize("page", TUTORIALS)
def test_a_tutorial_runs_at_toy_size(page, tmp_path, monkeypatch):
  monkeypatch.setenv("TEXTGEN_TUTORIAL", "toy")
  monkeypatch.setenv("TEXTGEN_TUTORIAL_RUNS", str(tmp_path / "runs"))
  monkeypatch.setenv("TEXTGEN_TUTORIAL_FIGURES", str(tmp_path / "figures"))
  text = (DOCS / page).read_text(encoding="utf-8")
  blocks = run_tutorial.python_blocks(text)
  assert len(blocks) >= 5
  outputs = run_tutorial.run(text, page)
  assert len(outputs) == len(blocks)
  # Every figure the page embeds is committed, and the toy run drew its own.
  for line in text.splitlines():
    if line.startswith("![") and "](" in line:
      figure = line.split("](", 1)[1].rstrip(")")
      assert (DOCS / figure).is_file(), figure
      assert (tmp_path / "figures" / os.path.basename(figure)).is_file(), figure


def test_outputs_replace_the_text_block_after_each_python_block():
  page = (
    "intro\n```python\nprint(1)\n```\n```text\nold\n```\nmiddle\n"
    "```python\nx = 2\n```\ntail\n```python\nprint(x)\n```\n"
  )
  outputs = run_tutorial.run(page)
  assert outputs == ["1\n", "", "2\n"]
  assert run_tutorial.with_outputs(page, outputs) == (
    "intro\n```python\nprint(1)\n```\n```text\n1\n```\nmiddle\n"
    "```python\nx = 2\n```\ntail\n```python\nprint(x)\n```\n```text\n2\n```\n"
  )
