"""End-to-end tests for textgen_jax.translation and the experiments/ command lines.

One tiny run (train_and_evaluate on a generated TSV) is shared by the module; tests that would
change its workdir work on a copy.
"""

import functools
import json
import os
import shutil
import subprocess
import sys

import jax
import pytest
import sacrebleu
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import (
  REPO_ROOT,
  assert_one_line_error,
  assert_trees_equal,
  make_pairs,
  run_script,
  tiny_config,
  write_text,
  write_tsv,
)
from textgen_jax import device_memory, metrics, seq2seq
from textgen_jax import workdir as workdir_lib
from textgen_jax.data.tokenizers import make_tokenizer
from textgen_jax.checkpointing import Checkpointer
from textgen_jax.data.vocab import UNK_ID, Vocabulary
from textgen_jax.decoding import DecodeSettings
from textgen_jax.errors import TextgenError
from textgen_jax.models import cudnn_lstm

INPUTS = ["Go eat.", "", "Run wait.", "   ", "Help stop."]
# Every test here trains or loads a run (the trained fixture takes seconds, the scripts more).
pytestmark = pytest.mark.slow

# Enough steps for greedy outputs that depend on the input (a few seconds).
TRAINED_OVERRIDES = dict(
  train__num_steps=60, train__eval_every=30, train__num_examples_to_print=2, opt__learning_rate=3e-2
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """(config, workdir, translator) of a 60-step run."""
  root = tmp_path_factory.mktemp("trained")
  config = tiny_config(write_tsv(root / "pairs.tsv", make_pairs(40)), **TRAINED_OVERRIDES)
  workdir = str(root / "workdir")
  translator = seq2seq.train_and_evaluate(config, workdir)
  return config, workdir, translator


def copy_workdir(workdir, tmp_path):
  copy = str(tmp_path / "workdir_copy")
  shutil.copytree(workdir, copy)
  return copy


def test_workdir_contents(trained):
  _, workdir, _ = trained
  for name in (
    "config.json",
    "source_vocab.json",
    "target_vocab.json",
    "metrics.jsonl",
    "loss_curve.png",
  ):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert Checkpointer(os.path.join(workdir, "checkpoints")).latest_step() == 60
  records = metrics.MetricWriter(workdir).read()
  assert [r["step"] for r in records if "train_loss" in r] == list(range(1, 61))
  valid = [r for r in records if "valid_loss" in r]
  assert [r["step"] for r in valid] == [30, 60]
  assert all(0.0 <= r["valid_greedy_exact_match"] <= 1.0 for r in valid)


def test_translate_returns_one_output_per_input(trained):
  _, _, translator = trained
  outputs = translator.translate(INPUTS)
  assert len(outputs) == len(INPUTS)
  assert all(isinstance(output, str) for output in outputs)
  assert outputs[1] == "" and outputs[3] == ""
  assert translator.translate([]) == []
  assert translator.translate(["", ""]) == ["", ""]


def test_translate_is_independent_of_batching_and_order(trained):
  _, _, translator = trained
  outputs = translator.translate(INPUTS)
  assert len(set(outputs)) > 2  # The outputs depend on the inputs, so order matters.
  assert translator.translate(INPUTS, batch_size=1) == outputs
  assert translator.translate(INPUTS[::-1], batch_size=3) == outputs[::-1]


def test_unknown_tokens_map_to_unk_and_do_not_crash(trained):
  _, _, translator = trained
  unknown = "Xylophone ʘ‿ʘ 😀 qwertz!"
  assert set(
    translator.source_vocab.encode(translator.source_tokenizer.tokenize("xylophone ʘ"))
  ) == {UNK_ID}
  outputs = translator.translate([unknown, "Go eat."])
  assert len(outputs) == 2 and all(isinstance(output, str) for output in outputs)


def test_long_inputs_are_cut_with_a_note(trained, capsys):
  _, _, translator = trained
  outputs = translator.translate(["go " * 20 + "."])
  assert len(outputs) == 1
  assert "cut 1 of 1 inputs" in capsys.readouterr().err


def test_char_level_translator_maps_unknown_characters_to_unk(pairs_tsv):
  config = tiny_config(pairs_tsv, data__tokenizer="char", data__max_len=12, data__num_buckets=2)
  tokenizer = make_tokenizer("char", lowercase=True)
  vocab = Vocabulary.build([tokenizer.tokenize("go eat.")])
  model = seq2seq.model.build_model(config.model, vocab, vocab)
  params = jax.jit(functools.partial(seq2seq.model.init_params, model))(jax.random.key(0))
  translator = seq2seq.Translator(config, model, params, (tokenizer, tokenizer), vocab, vocab)
  assert vocab.encode(tokenizer.tokenize("Ωz")) == [UNK_ID, UNK_ID]
  outputs = translator.translate(["Ωz ÿ!", "go eat.", "", "ɐ" * 30])
  assert len(outputs) == 4 and outputs[2] == ""
  assert all(len(output) <= 13 * len("<unk>") for output in outputs)


def test_evaluate_scores_against_every_reference_of_a_source(trained):
  _, _, translator = trained
  sources = ["Go eat.", "Run wait.", "Help stop."]
  outputs = translator.translate(sources)
  assert all(outputs)
  # Each source twice: once with a wrong reference, once with its output. Any reference hits.
  pairs = [(s, "zz " + o) for s, o in zip(sources, outputs)] + list(zip(sources, outputs))
  scores, lines = translator.evaluate(pairs, num_to_print=2)
  assert scores["greedy_exact_match"] == 1.0 and scores["greedy_chrf"] == pytest.approx(100.0)
  # BLEU is corpus BLEU of these (short) outputs against all references, as sacreBLEU says.
  references = [[translator.target_tokenizer.normalize(r) for r in ("zz " + o, o)] for o in outputs]
  assert scores["greedy_bleu"] == pytest.approx(
    sacrebleu.corpus_bleu(outputs, [list(refs) for refs in zip(*references)], lowercase=True).score
  )
  assert "on 3 sources (6 references)" in lines[0] and "nrefs:2" in lines[0]
  assert "case:lc" in lines[0]  # The model's data is lowercased: so is the scoring.
  assert len(lines) == 3 and repr(translator.source_tokenizer.normalize(sources[0])) in lines[1]
  wrong = [(s, o + " extra words") for s, o in zip(sources, outputs)]
  scores, lines = translator.evaluate(wrong)
  assert scores["greedy_exact_match"] == 0.0 and 0.0 < scores["greedy_chrf"] < 100.0
  assert len(lines) == 1
  assert translator.evaluate(pairs, max_sources=1)[1][0].startswith("  greedy: BLEU ")
  assert (
    "chrF 100.00 on 1 sources (2 references)" in translator.evaluate(pairs, max_sources=1)[1][0]
  )


def test_n_best_lists_are_the_beams_best_first(trained):
  _, _, translator = trained
  settings = DecodeSettings("beam", beam_size=4, length_alpha=0.6)
  lists = translator.n_best(INPUTS, 3, settings=settings)
  assert [len(n_best) for n_best in lists] == [3] * len(INPUTS)
  assert lists[1] == [("", 0.0)] * 3  # An empty input: empty outputs.
  best = translator.translate(INPUTS, settings=settings)
  for n_best, output, text in zip(lists, best, INPUTS):
    if text.strip():
      assert n_best[0][0] == output
      scores = [score for _, score in n_best]
      assert scores == sorted(scores, reverse=True) and all(s < 0 for s in scores)
      assert len({hypothesis for hypothesis, _ in n_best}) == 3
  with pytest.raises(TextgenError, match="n_best"):
    translator.n_best(INPUTS, 5, settings=settings)
  with pytest.raises(TextgenError, match="beam search"):
    translator.n_best(INPUTS, 1, settings=DecodeSettings())


def test_evaluate_on_no_pairs(trained):
  """No pairs (train.max_greedy_eval_pairs=0 with an empty split) give no score, not a NaN."""
  _, _, translator = trained
  assert translator.evaluate([], num_to_print=3) == ({}, [])


def test_translate_rejects_bad_arguments(trained):
  _, _, translator = trained
  with pytest.raises(TextgenError, match="rng"):
    translator.translate(["Go."], settings=DecodeSettings("sample"))
  with pytest.raises(TextgenError, match="batch_size"):
    translator.translate(["Go."], batch_size=0)


def test_sampling_with_the_same_key_is_reproducible(trained):
  _, _, translator = trained
  settings = DecodeSettings("sample", temperature=1.5)
  first = translator.translate(INPUTS, settings=settings, rng=jax.random.key(0))
  assert translator.translate(INPUTS, settings=settings, rng=jax.random.key(0)) == first
  assert len(first) == len(INPUTS) and first[1] == ""


def test_load_gives_the_trained_translator(trained):
  _, workdir, translator = trained
  loaded = seq2seq.Translator.load(workdir)
  assert_trees_equal(loaded.params, translator.params)
  assert loaded.source_vocab == translator.source_vocab
  assert loaded.target_vocab == translator.target_vocab
  assert (loaded.source_tokenizer, loaded.target_tokenizer) == (
    translator.source_tokenizer,
    translator.target_tokenizer,
  )
  assert loaded.translate(INPUTS) == translator.translate(INPUTS)


def test_save_and_load(trained, tmp_path):
  _, _, translator = trained
  directory = str(tmp_path / "export")
  translator.save(directory)
  loaded = seq2seq.Translator.load(directory)
  assert_trees_equal(loaded.params, translator.params)
  assert loaded.translate(INPUTS) == translator.translate(INPUTS)


def test_saving_again_to_the_same_directory_is_refused_and_keeps_the_first_save(trained, tmp_path):
  _, _, translator = trained
  directory = str(tmp_path / "export")
  translator.save(directory)
  changed = seq2seq.Translator(
    translator.config,
    translator.model,
    jax.tree.map(lambda x: x + 1.0, translator.params),
    (translator.source_tokenizer, translator.target_tokenizer),
    translator.source_vocab,
    translator.target_vocab,
  )
  with pytest.raises(TextgenError, match="already holds a saved model"):
    changed.save(directory)
  assert_trees_equal(seq2seq.Translator.load(directory).params, translator.params)


def test_load_without_checkpoint_raises(trained, tmp_path):
  with pytest.raises(TextgenError, match="no checkpoint"):
    seq2seq.Translator.load(str(tmp_path / "missing"))
  with pytest.raises(TextgenError, match="no checkpoint"):
    seq2seq.Translator.load(str(tmp_path))
  # Config and vocabularies present, but no checkpoint in checkpoints/.
  _, workdir, _ = trained
  partial = tmp_path / "partial"
  os.makedirs(partial / "checkpoints")
  for name in ("config.json", "source_vocab.json", "target_vocab.json"):
    shutil.copy(os.path.join(workdir, name), partial / name)
  with pytest.raises(TextgenError, match="no checkpoint"):
    seq2seq.Translator.load(str(partial))


@pytest.mark.parametrize(
  "field, value", [("model__hidden_size", 32), ("data__max_len", 7), ("seed", 1)]
)
def test_resuming_with_a_different_config_raises(trained, tmp_path, field, value):
  config, workdir, _ = trained
  workdir = copy_workdir(workdir, tmp_path)
  changed = tiny_config(config.data.train_path, **{**TRAINED_OVERRIDES, field: value})
  with pytest.raises(TextgenError, match="other settings") as info:
    seq2seq.train_and_evaluate(changed, workdir)
  assert field.replace("__", ".") in str(info.value)


def test_a_workdir_from_before_vocab_size_multiple_resumes_with_its_old_behaviour(tmp_path):
  config = tiny_config("pairs.tsv")
  saved = json.loads(config.to_json())
  del saved["data"]["vocab_size_multiple"]  # As written before the field existed.
  write_text(tmp_path / "config.json", json.dumps(saved))
  workdir_lib.check_resumable(str(tmp_path), config, {})
  config.data.vocab_size_multiple = 2
  with pytest.raises(TextgenError, match="data.vocab_size_multiple"):
    workdir_lib.check_resumable(str(tmp_path), config, {})


def test_malformed_training_data_names_file_and_line(tmp_path):
  path = write_text(tmp_path / "bad.tsv", "Go.\tVa !\nHi.\tSalut !\nno tab here\n")
  with pytest.raises(TextgenError, match=r"bad\.tsv:3:"):
    seq2seq.train_and_evaluate(tiny_config(path), str(tmp_path / "workdir"))
  assert not os.path.exists(tmp_path / "workdir")


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("model__hidden_size", 0, "model.hidden_size"),
    ("model__input_encoding", "bpe", "input_encoding"),
    ("model__dropout_rate", 1.0, "dropout_rate"),
    ("model__dtype", "float16", "dtype"),
    ("data__tokenizer", "bpe", "tokenizer"),
    ("model__lstm_backend", "rnn", "lstm_backend"),
  ],
)
def test_bad_config_raises_before_training(tmp_path, pairs_tsv, field, value, message):
  with pytest.raises(TextgenError, match=message):
    seq2seq.train_and_evaluate(tiny_config(pairs_tsv, **{field: value}), str(tmp_path / "workdir"))
  assert not os.path.exists(tmp_path / "workdir" / "checkpoints")


def test_workdirs_resume_and_load_across_lstm_backends(tmp_path):
  """The backend and the unroll are speed only: a run resumes with others, and a workdir from
  before lstm_backend existed, or saved with cudnn on a GPU, loads here."""
  config = tiny_config("pairs.tsv")
  saved = json.loads(config.to_json())
  del saved["model"]["lstm_backend"]  # As written before the field existed.
  saved["model"]["scan_unroll"] = 4
  write_text(tmp_path / "config.json", json.dumps(saved))
  for backend in ("auto", "scan"):
    config.model.lstm_backend = backend
    workdir_lib.check_resumable(str(tmp_path), config, {})
  saved["model"]["lstm_backend"] = "cudnn"
  write_text(tmp_path / "config.json", json.dumps(saved))
  assert workdir_lib.read_model_config(str(tmp_path)).model.lstm_backend == "auto"


def test_cudnn_on_a_cpu_is_a_one_line_error_naming_the_flag(tmp_path, pairs_tsv):
  if cudnn_lstm.cudnn_available():
    pytest.skip("this machine has a GPU with cuDNN")
  result = run_script(
    "train_seq2seq.py",
    f"--config.data.train_path={pairs_tsv}",
    "--config.model.lstm_backend=cudnn",
    f"--workdir={tmp_path / 'workdir'}",
  )
  assert_one_line_error(result, "--config.model.lstm_backend=cudnn: cuDNN's LSTM needs a CUDA GPU")
  assert not os.path.exists(tmp_path / "workdir" / "checkpoints")


def test_fit_rejects_unknown_train_settings(tmp_path, pairs_tsv):
  with pytest.raises(TextgenError, match="num_stepz"):
    seq2seq.fit(pairs_tsv, str(tmp_path / "workdir"), num_stepz=10)


def run_translate_cli(*args, stdin=""):
  return run_script("translate.py", *args, stdin=stdin, timeout=120)


def test_cli_missing_workdir_is_a_one_line_error(tmp_path):
  missing = str(tmp_path / "no_such_run")
  assert_one_line_error(run_translate_cli(f"--workdir={missing}", "Go."), missing)


@pytest.mark.parametrize(
  "flag, message",
  [
    ("--temperature=0", "--temperature"),
    ("--top_p=1.5", "--top_p"),
    ("--beam_size=0", "--beam_size"),
    ("--beam_size=100000", "larger than the vocabulary"),
  ],
)
def test_cli_bad_decoding_flag_is_a_one_line_error(trained, flag, message):
  _, workdir, _ = trained
  assert_one_line_error(
    run_translate_cli(f"--workdir={workdir}", "--strategy=beam", flag, "Go."), message
  )


def test_beam_translation_width_1_is_greedy_and_wider_beams_translate(trained):
  _, _, translator = trained
  greedy = translator.translate(INPUTS)
  assert (
    translator.translate(INPUTS, settings=DecodeSettings("beam", beam_size=1, length_alpha=0.0))
    == greedy
  )
  beam = translator.translate(INPUTS, batch_size=3, settings=DecodeSettings("beam", beam_size=4))
  assert len(beam) == len(INPUTS) and beam[1] == beam[3] == ""
  assert all(isinstance(output, str) for output in beam)


def test_train_cli_bad_data_path_is_a_one_line_error(tmp_path):
  missing = str(tmp_path / "missing.tsv")
  result = run_script(
    "train_seq2seq.py", f"--config.data.train_path={missing}", f"--workdir={tmp_path / 'workdir'}"
  )
  assert_one_line_error(result, missing)


def test_cli_translates_one_line_per_input(trained):
  _, workdir, translator = trained
  texts = ["Go eat.", "", "Help stop."]
  result = run_translate_cli(f"--workdir={workdir}", stdin="\n".join(texts) + "\n")
  assert result.returncode == 0, result.stderr
  assert result.stdout.split("\n")[:-1] == translator.translate(texts)


def test_cli_gives_one_line_per_input_line_whatever_bytes_it_holds(trained):
  """Issue 22: U+2028, U+0085, form feeds and \\x1c stay inside their line, bytes that are not
  UTF-8 read as U+FFFD with a warning, and a NUL byte is a one-line error. (That the BOM is
  dropped is tested in tests/data/test_readers.py: this tiny model may translate it the same.)"""
  _, workdir, translator = trained
  lines = ["\ufeffGo eat.", "café red\u2028cat", "cat dog\x0csun", "red\x85blue", "moon\x1ctree"]
  stdin = "\n".join(lines).encode("utf-8") + b"\nGo \xffeat.\nHelp stop.\r\n"
  result = _run_translate_bytes(f"--workdir={workdir}", stdin=stdin)
  assert result.returncode == 0, result.stderr
  expected = translator.translate(["Go eat."] + lines[1:] + ["Go \ufffdeat.", "Help stop."])
  assert result.stdout.split("\n") == expected + [""]
  assert (
    "warning: <stdin> line 6: not UTF-8; undecodable bytes read as U+FFFD"
    in result.stderr.splitlines()
  )
  assert_one_line_error(
    _run_translate_bytes(f"--workdir={workdir}", stdin=b"Go.\nG\x00o.\n"),
    "<stdin>:2: contains a NUL byte",
  )


def _run_translate_bytes(*args: str, stdin: bytes) -> subprocess.CompletedProcess:
  """run_script with bytes on stdin (text mode cannot send bytes that are not UTF-8)."""
  result = subprocess.run(
    [sys.executable, os.path.join("experiments", "translate.py"), *args],
    input=stdin,
    capture_output=True,
    cwd=REPO_ROOT,
    timeout=120,
    check=False,
  )
  return subprocess.CompletedProcess(
    result.args, result.returncode, result.stdout.decode("utf-8"), result.stderr.decode("utf-8")
  )


def test_too_long_sentence_error_names_file_and_line(tmp_path):
  path = write_text(
    tmp_path / "long.tsv", "Go.\tVa !\nHi.\tSalut !\nGo go go go go go go.\tVa !\nRun.\tCours !\n"
  )
  config = tiny_config(path, data__too_long="error", data__valid_fraction=0.25)
  with pytest.raises(TextgenError, match=r"long\.tsv:3: source has 8 tokens.*data\.max_len=6"):
    seq2seq.train_and_evaluate(config, str(tmp_path / "workdir"))
  assert not os.path.exists(tmp_path / "workdir")


def test_a_batch_too_large_for_device_memory_is_a_clear_error(trained, monkeypatch):
  _, _, translator = trained
  fresh = seq2seq.Translator(
    translator.config,
    translator.model,
    translator.params,
    (translator.source_tokenizer, translator.target_tokenizer),
    translator.source_vocab,
    translator.target_vocab,
  )  # Nothing compiled yet.
  monkeypatch.setattr(device_memory, "free_bytes", lambda device: 1024)
  with pytest.raises(
    TextgenError,
    match="translating a batch of 4 does not fit in device memory"
    r".*use a smaller batch_size",
  ):
    fresh.translate(INPUTS, batch_size=4)


@settings(max_examples=25, deadline=None)
@given(texts=st.lists(st.text(max_size=60), min_size=1, max_size=6))
def test_any_lines_translate_to_exactly_one_line_each(trained, texts):
  _, _, translator = trained
  outputs = translator.translate(texts)
  assert len(outputs) == len(texts)
  assert all("\n" not in output and "\r" not in output for output in outputs)
