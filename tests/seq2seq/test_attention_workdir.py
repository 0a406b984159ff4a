"""A trained attention model end to end: held-out BLEU in metrics.jsonl, exact resume, checkpoint
averaging, n-best and attention maps from translate.py, and evaluate_translation.py."""

import json
import os

import jax
import numpy as np
import pytest

from tests.helpers import (
  assert_one_line_error,
  assert_trees_equal,
  make_pairs,
  run_script,
  tiny_config,
  write_text,
  write_tsv,
)
from textgen_jax import seq2seq
from textgen_jax.data import pipeline
from textgen_jax.data import readers
from textgen_jax import workdir as workdir_lib
from textgen_jax.errors import TextgenError

pytestmark = pytest.mark.slow
OVERRIDES = dict(
  model__attention="general",
  model__input_feeding=True,
  train__num_steps=60,
  train__eval_every=30,
  train__checkpoint_every=20,
  train__keep_checkpoints=3,
  opt__learning_rate=3e-2,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """(pairs path, workdir, translator) of a 60-step attention run with checkpoints 20, 40, 60."""
  root = tmp_path_factory.mktemp("attention")
  pairs = write_tsv(root / "pairs.tsv", make_pairs(40))
  workdir = str(root / "workdir")
  return pairs, workdir, seq2seq.train_and_evaluate(tiny_config(pairs, **OVERRIDES), workdir)


def test_held_out_bleu_and_chrf_are_logged_at_every_evaluation(trained):
  _, workdir, _ = trained
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  evaluations = [r for r in records if "valid_greedy_bleu" in r]
  assert [r["step"] for r in evaluations] == [30, 60]
  assert all(
    0.0 <= r["valid_greedy_chrf"] <= 100.0 and r["valid_greedy_chrf"] > 0 for r in evaluations
  )


def test_an_attention_run_resumes_exactly(trained, tmp_path):
  pairs, _, translator = trained
  workdir = str(tmp_path / "resumed")
  seq2seq.train_and_evaluate(tiny_config(pairs, **{**OVERRIDES, "train__num_steps": 40}), workdir)
  resumed = seq2seq.train_and_evaluate(tiny_config(pairs, **OVERRIDES), workdir)
  assert_trees_equal(resumed.params, translator.params)


def test_checkpoint_averaging(trained):
  _, workdir, translator = trained
  assert_trees_equal(seq2seq.Translator.load(workdir, average_last=1).params, translator.params)
  # The mean of identical checkpoints is each of them, bit for bit.
  assert_trees_equal(workdir_lib.average_params([translator.params] * 3), translator.params)
  at = {step: seq2seq.Translator.load(workdir, step).params for step in (20, 40, 60)}
  averaged = seq2seq.Translator.load(workdir, average_last=3).params
  expected = jax.tree.map(lambda a, b, c: (a + b + c) / 3, at[20], at[40], at[60])
  jax.tree.map(
    lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), averaged, expected
  )
  assert not np.allclose(
    averaged["params"]["output_layer"]["kernel"], at[60]["params"]["output_layer"]["kernel"]
  )
  last_two = seq2seq.Translator.load(workdir, step=40, average_last=2).params
  jax.tree.map(
    lambda x, a, b: np.testing.assert_allclose(x, (a + b) / 2, rtol=1e-6, atol=1e-7),
    last_two,
    at[20],
    at[40],
  )
  with pytest.raises(TextgenError, match="keeps 3 checkpoints up to step 60"):
    seq2seq.Translator.load(workdir, average_last=4)


def test_average_checkpoints_script_writes_a_workdir_translate_loads(trained, tmp_path):
  _, workdir, _ = trained
  out = str(tmp_path / "averaged")
  result = run_script("average_checkpoints.py", f"--workdir={workdir}", "--last=3", f"--out={out}")
  assert result.returncode == 0, result.stderr
  assert_trees_equal(
    seq2seq.Translator.load(out).params, seq2seq.Translator.load(workdir, average_last=3).params
  )


def test_translate_cli_n_best_and_attention_maps(trained, tmp_path):
  _, workdir, translator = trained
  inputs = ["Go eat.", "Run wait now."]
  maps = tmp_path / "maps"
  result = run_script(
    "translate.py",
    f"--workdir={workdir}",
    "--strategy=beam",
    "--beam_size=4",
    "--n_best=2",
    f"--attention_png={maps}",
    *inputs,
    timeout=120,
  )
  assert result.returncode == 0, result.stderr
  lines = [line.split("\t") for line in result.stdout.splitlines()]
  assert [(index, rank) for index, rank, _, _ in lines] == [
    ("0", "1"),
    ("0", "2"),
    ("1", "1"),
    ("1", "2"),
  ]
  settings = seq2seq.translator.decoding.DecodeSettings("beam", beam_size=4)
  expected = translator.n_best(inputs, 2, settings=settings)
  for index, rank, score, text in lines:
    best_text, best_score = expected[int(index)][int(rank) - 1]
    assert text == best_text and float(score) == pytest.approx(best_score, abs=1e-4)
  assert sorted(os.listdir(maps)) == ["attention_0.png", "attention_1.png"]
  assert all(os.path.getsize(maps / name) > 1000 for name in os.listdir(maps))
  alignment = translator.attention(inputs[:1], settings=settings)[0]
  assert alignment.source_tokens[:2] == ["go", "eat"]
  np.testing.assert_allclose(alignment.weights.sum(-1), 1.0, rtol=1e-5)
  assert alignment.weights.shape == (len(alignment.output_tokens), len(alignment.source_tokens))


def test_translate_cli_flag_errors(trained):
  _, workdir, _ = trained
  assert_one_line_error(
    run_script("translate.py", f"--workdir={workdir}", "--n_best=2", "Go."),
    "--n_best needs --strategy=beam",
  )
  assert_one_line_error(
    run_script(
      "translate.py", f"--workdir={workdir}", "--strategy=sample", "--attention_png=x", "Go."
    ),
    "--attention_png",
  )


def test_evaluate_translation_on_the_held_out_split_and_on_parallel_files(trained, tmp_path):
  _, workdir, translator = trained
  result = run_script(
    "evaluate_translation.py",
    f"--workdir={workdir}",
    "--strategy=beam",
    "--beam_size=3",
    timeout=120,
  )
  assert result.returncode == 0, result.stderr
  record = json.loads(result.stdout)
  assert record["test"] == "held-out split" and record["strategy"] == "beam"
  # The split training held out: its sources (grouped, each with all its references).
  pairs, _, _ = trained
  data = pipeline.read_data(
    tiny_config(pairs, **OVERRIDES), readers.read_pairs, seq2seq.translator.VOCABULARY_FILES
  )
  sources = {translator.source_tokenizer.normalize(s) for s, _ in data.valid_examples}
  assert record["sources"] == len(sources) and record["references"] == len(data.valid_examples)
  assert len(data.valid_examples) > len(sources) and "nrefs:var" in record["signature"]
  # Parallel files with two references each: the second is the model's own output.
  sources = ["Go eat.", "Run wait.", "Help stop now."]
  outputs = translator.translate(sources)
  source_file = write_text(tmp_path / "test.src", "\n".join(sources) + "\n")
  wrong = write_text(tmp_path / "test.ref0", "\n".join(["zz"] * 3) + "\n")
  right = write_text(tmp_path / "test.ref1", "\n".join(outputs) + "\n")
  result = run_script(
    "evaluate_translation.py",
    f"--workdir={workdir}",
    f"--test={source_file},{wrong},{right}",
    "--min_source_words=3",
    f"--output={tmp_path / 'scores.jsonl'}",
    timeout=120,
  )
  assert result.returncode == 0, result.stderr
  record = json.loads(result.stdout)
  assert record["sources"] == 1 and record["references"] == 2  # Only "Help stop now." has 3.
  assert record["exact_match"] == 1.0 and record["chrf"] == pytest.approx(100.0)
  assert json.loads((tmp_path / "scores.jsonl").read_text()) == record
  assert_one_line_error(
    run_script(
      "evaluate_translation.py",
      f"--workdir={workdir}",
      f"--test={source_file},{tmp_path / 'missing'}",
    ),
    "missing",
  )


def test_evaluate_refuses_a_held_out_split_from_a_changed_training_file(tmp_path):
  """The default held-out split is re-drawn from data.train_path: after `shuf` of that file in
  place most "held-out" sources had been trained on and BLEU rose silently. The run records its
  files' checksums; a changed file is a one-line error, the same bytes elsewhere are fine."""
  pairs_path = write_tsv(tmp_path / "pairs.tsv", make_pairs(40))
  workdir = str(tmp_path / "w")
  seq2seq.train_and_evaluate(tiny_config(pairs_path, train__num_steps=2), workdir)
  with open(pairs_path, encoding="utf-8") as f:
    lines = f.readlines()
  write_text(pairs_path, "".join(lines[::-1]))  # Shuffled in place.
  assert_one_line_error(
    run_script("evaluate_translation.py", f"--workdir={workdir}"),
    f"{pairs_path} is not the file this run trained on",
  )
