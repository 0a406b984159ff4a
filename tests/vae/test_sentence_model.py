"""End-to-end tests of the sentence VAE and LM: training, generation, evaluation, bad input."""

import json
import os

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.helpers import (
  SENTENCES,
  assert_one_line_error,
  assert_trees_equal,
  make_pairs,
  read_metrics,
  run_script,
  tiny_config,
  tiny_vae_config,
  write_text,
  write_tsv,
)

from textgen_jax import seq2seq, vae
from textgen_jax.data import tokenizers
from textgen_jax.errors import TextgenError
from textgen_jax.decoding import DecodeSettings
from textgen_jax.vae.sentence_model import SentenceModel

# Every test here trains or loads a whole run (the trained fixtures take tens of seconds).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
  return write_text(
    tmp_path_factory.mktemp("corpus") / "sentences.txt", "\n".join(SENTENCES) + "\n"
  )


@pytest.fixture(scope="module")
def trained_vae(corpus, tmp_path_factory) -> tuple[SentenceModel, str]:
  """A tiny VAE trained until it memorises the corpus (its KL kept small by beta_max)."""
  workdir = str(tmp_path_factory.mktemp("vae"))
  config = tiny_vae_config(
    corpus,
    train__num_steps=300,
    train__log_every=100,
    vae__kl_schedule="constant",
    vae__beta_max=0.05,
    model__latent_size=8,
    model__hidden_size=64,
    train__checkpoint_every=300,
  )
  return vae.train_and_evaluate(config, workdir), workdir


def test_tiny_vae_reconstructs_the_sentences_it_was_trained_on(trained_vae):
  model, _ = trained_vae
  assert model.reconstruct(SENTENCES) == SENTENCES


def test_beam_search_reconstructs_them_too_and_width_1_is_greedy(trained_vae):
  model, _ = trained_vae
  assert model.reconstruct(SENTENCES, settings=DecodeSettings("beam", beam_size=4)) == SENTENCES
  prior = model.sample(6, jax.random.key(3), DecodeSettings())
  assert (
    model.sample(6, jax.random.key(3), DecodeSettings("beam", beam_size=1, length_alpha=0.0))
    == prior
  )


def test_loaded_model_matches_the_trained_one(trained_vae):
  model, workdir = trained_vae
  loaded = SentenceModel.load(workdir)
  assert_trees_equal(loaded.params, model.params)
  assert loaded.step == 300
  assert loaded.reconstruct(SENTENCES[:3]) == SENTENCES[:3]


def test_interpolation_ends_at_the_two_sentences(trained_vae):
  model, _ = trained_vae
  path = model.interpolate(SENTENCES[0], SENTENCES[1], num_points=5)
  assert [w for w, _ in path] == [0.0, 0.25, 0.5, 0.75, 1.0]
  assert path[0][1] == SENTENCES[0] and path[-1][1] == SENTENCES[1]
  assert all(isinstance(text, str) for _, text in path)


def test_prior_samples_are_seeded_and_batched(trained_vae):
  model, _ = trained_vae
  nucleus = DecodeSettings("sample", top_p=0.9)
  first = model.sample(5, jax.random.key(0), nucleus)
  assert first == model.sample(5, jax.random.key(0), nucleus)
  assert len(first) == 5 and all(isinstance(s, str) for s in first)
  # Batching does not change samples' count or validity; small batches cover all rows.
  assert len(model.sample(7, jax.random.key(1), nucleus, batch_size=2)) == 7
  vocabulary = set(model.vocab.tokens)
  for strategy in (
    DecodeSettings(),
    DecodeSettings("sample", top_k=3),
    DecodeSettings("sample", temperature=0.5),
  ):
    for sentence in model.sample(4, jax.random.key(2), strategy):
      assert set(sentence.split()) <= vocabulary


def test_greedy_decoding_of_a_batch_equals_decoding_each_row(trained_vae):
  model, _ = trained_vae
  z = np.asarray(jax.random.normal(jax.random.key(3), (6, model.model.config.latent_size)))
  together = model.decode(z)
  alone = [model.decode(z[i : i + 1])[0] for i in range(6)]
  assert together == alone


def test_evaluate_reports_the_literature_numbers(trained_vae):
  model, _ = trained_vae
  results = model.evaluate(SENTENCES, num_samples=20, chunk_size=7, batch_size=4)
  words = sum(len(s.split()) for s in SENTENCES)
  assert results["num_sentences"] == 8 and results["num_tokens"] == words + 8
  np.testing.assert_allclose(
    results["perplexity"], np.exp(results["nll_per_sentence"] * 8 / (words + 8)), rtol=1e-6
  )
  np.testing.assert_allclose(results["neg_elbo"], results["reconstruction"] + results["kl"])
  # The importance-weighted bound is at least as tight as the ELBO (up to sampling noise).
  assert results["nll_per_sentence"] <= results["neg_elbo"] + 0.5
  assert results["kl"] > 0 and 0 <= results["active_units"] <= 8
  assert results["mutual_information"] > 0.5  # The code tells the 8 sentences apart.
  assert results["seconds"] > 0


def test_bfloat16_evaluation_agrees_with_float32(trained_vae):
  # bfloat16 matmuls, float32 accumulation and log-sum-exp: within 0.05 nats per sentence of
  # float32 with the same samples (issue 24's bound), yet not the float32 program.
  model, _ = trained_vae
  key = jax.random.key(7)
  float32 = model.evaluate(SENTENCES, num_samples=50, rng=key, verbose=False)
  bfloat16 = model.evaluate(SENTENCES, num_samples=50, rng=key, verbose=False, dtype="bfloat16")
  assert (float32["dtype"], bfloat16["dtype"]) == ("float32", "bfloat16")
  difference = abs(bfloat16["nll_per_sentence"] - float32["nll_per_sentence"])
  assert 0 < difference < 0.05, difference
  with pytest.raises(TextgenError, match="dtype must be one of float32, bfloat16"):
    model.evaluate(SENTENCES, num_samples=2, dtype="float16")


def test_evaluate_one_sentence_has_no_active_units_and_no_warnings(trained_vae):
  # Active units are a variance across sentences: of one, numpy warned and it read 0.
  model, _ = trained_vae
  results = model.evaluate(SENTENCES[:1], num_samples=4)  # pytest turns warnings into errors.
  assert results["active_units"] is None and np.isfinite(results["nll_per_sentence"])


def test_evaluate_rejects_a_non_positive_k(trained_vae):
  model, _ = trained_vae
  with pytest.raises(TextgenError, match="K must be positive"):
    model.evaluate(SENTENCES, num_samples=0)


def test_unknown_words_at_reconstruct_time_are_read_as_unk_and_reported(trained_vae, capsys):
  model, _ = trained_vae
  outputs = model.reconstruct(["the zebra sat on the mat"])
  assert len(outputs) == 1
  assert "1 words not in the vocabulary are read as <unk>: 'zebra'" in capsys.readouterr().err


def test_an_empty_input_is_a_clear_error(trained_vae):
  model, _ = trained_vae
  with pytest.raises(TextgenError, match="input 2 is empty"):
    model.reconstruct(["the cat", "   "])


@settings(max_examples=25, deadline=None)
@given(texts=st.lists(st.text(max_size=60), min_size=1, max_size=6))
def test_any_lines_reconstruct_to_one_line_each_or_name_the_empty_one(trained_vae, texts):
  """generate_vae.py --mode=reconstruct's contract: one output line per input line, or a
  one-line error naming the input that has no tokens."""
  model, _ = trained_vae
  empty = [i + 1 for i, text in enumerate(texts) if not model.tokenizer.tokenize(text)]
  if empty:
    with pytest.raises(TextgenError, match=f"^input {empty[0]} is empty$"):
      model.reconstruct(texts)
  else:
    outputs = model.reconstruct(texts)
    assert len(outputs) == len(texts)
    assert all(isinstance(o, str) and "\n" not in o and "\r" not in o for o in outputs)


def test_language_model_trains_from_the_same_script_with_one_switch(corpus, tmp_path):
  config = tiny_vae_config(corpus, model__kind="lm", train__num_steps=40)
  model = vae.train_and_evaluate(config, str(tmp_path))
  assert set(model.params["params"]) == {"decoder_embedding", "decoder_lstm", "output_layer"}
  results = model.evaluate(SENTENCES, num_samples=3)
  assert "kl" not in results and results["importance_samples"] == 0
  # The LM's NLL is exact: it equals the validation loss that training logged (same sentences).
  records = read_metrics(tmp_path)
  valid = [r for r in records if "valid_loss" in r][-1]
  np.testing.assert_allclose(
    results["nll_per_sentence"] * 8, valid["valid_loss"] * results["num_tokens"], rtol=1e-5
  )
  assert len(model.sample(3, jax.random.key(0), DecodeSettings("sample"))) == 3
  with pytest.raises(TextgenError, match="needs a VAE"):
    model.reconstruct(SENTENCES[:1])


def test_vae_resume_with_pretraining_reset_equals_an_uninterrupted_run(corpus, tmp_path):
  overrides = dict(
    vae__pretrain_steps=3,
    vae__free_bits=0.1,
    vae__word_dropout=0.2,
    model__embedding_dropout=0.1,
    train__checkpoint_every=2,
  )
  full = vae.train_and_evaluate(
    tiny_vae_config(corpus, train__num_steps=6, **overrides), str(tmp_path / "full")
  )
  vae.train_and_evaluate(
    tiny_vae_config(corpus, train__num_steps=2, **overrides), str(tmp_path / "split")
  )
  resumed = vae.train_and_evaluate(
    tiny_vae_config(corpus, train__num_steps=6, **overrides), str(tmp_path / "split")
  )
  assert_trees_equal(full.params, resumed.params)


def test_training_logs_reconstruction_kl_and_beta(corpus, tmp_path):
  config = tiny_vae_config(
    corpus,
    train__num_steps=4,
    train__log_every=2,
    vae__anneal_steps=4,
    train__eval_every=4,
    train__eval_num_samples=3,
    train__num_examples_to_print=2,
  )
  vae.train_and_evaluate(config, str(tmp_path))
  records = read_metrics(tmp_path)
  train = [r for r in records if "train_loss" in r]
  assert [r["step"] for r in train] == [2, 4]
  # Steps 0, 1 then 2, 3 of a 4-step linear schedule: mean beta 0.125 then 0.625.
  np.testing.assert_allclose([r["kl_weight"] for r in train], [0.125, 0.625], rtol=1e-6)
  valid = [r for r in records if "valid_loss" in r][-1]
  for key in (
    "valid_reconstruction",
    "valid_kl",
    "valid_neg_elbo",
    "valid_iw_nll_per_sentence",
    "valid_iw_perplexity",
    "valid_mutual_information",
    "valid_active_units",
  ):
    assert np.isfinite(valid[key])
  # The token-level perplexity of the reconstruction term is not overwritten by the IW one.
  np.testing.assert_allclose(valid["valid_perplexity"], np.exp(valid["valid_loss"]), rtol=1e-6)


def test_whitespace_tokenizer_keeps_pretokenised_text():
  tokenizer = tokenizers.make_tokenizer("whitespace")
  text = " mr. <unk> said N shares of abc 's stock were n't sold "
  assert tokenizer.tokenize(text) == [
    "mr.",
    "<unk>",
    "said",
    "N",
    "shares",
    "of",
    "abc",
    "'s",
    "stock",
    "were",
    "n't",
    "sold",
  ]
  assert tokenizer.detokenize(tokenizer.tokenize(text)) == tokenizer.normalize(text)


# ---- Bad input ---------------------------------------------------------------------------------


def test_a_corpus_with_an_empty_line_names_the_line_or_is_counted(tmp_path, capsys):
  path = write_text(tmp_path / "gaps.txt", "the cat sat\n\na dog ran\n")
  with pytest.raises(TextgenError, match=r"gaps.txt:2: empty line"):
    vae.train_and_evaluate(tiny_vae_config(path), str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w" / "checkpoints")
  config = tiny_vae_config(path, data__skip_malformed=True, train__num_steps=1)
  vae.train_and_evaluate(config, str(tmp_path / "w2"))
  assert "skipped 1 malformed lines (first: line 2 (empty line))" in capsys.readouterr().out


def test_a_sentence_longer_than_max_len_is_named_or_counted(tmp_path, capsys):
  path = write_text(tmp_path / "long.txt", "the cat sat\n" + " ".join(["word"] * 12) + "\n")
  with pytest.raises(TextgenError, match=r"long.txt:2: sentence has 12 tokens"):
    vae.train_and_evaluate(tiny_vae_config(path, data__too_long="error"), str(tmp_path / "w"))
  vae.train_and_evaluate(tiny_vae_config(path, train__num_steps=1), str(tmp_path / "w2"))
  assert "truncated 1 of 2 sentences to data.max_len=8 tokens" in capsys.readouterr().out


@pytest.mark.parametrize(
  "override, flag",
  [
    (dict(model__kind="gan"), "model.kind"),
    (dict(vae__kl_schedule="exp"), "vae.kl_schedule"),
    (dict(model__latent_size=0), "model.latent_size"),
    (dict(train__eval_num_samples=-1), "train.eval_num_samples"),
    (dict(model__output_dropout=1.0), "model.output_dropout"),
    (dict(model__lstm_backend="rnn"), "model.lstm_backend"),
  ],
)
def test_bad_settings_name_the_flag(corpus, tmp_path, override, flag):
  with pytest.raises(TextgenError, match=f"--config.{flag}"):
    vae.train_and_evaluate(tiny_vae_config(corpus, **override), str(tmp_path))


def test_resuming_with_other_model_settings_is_refused(corpus, tmp_path, trained_vae):
  _, workdir = trained_vae
  config = tiny_vae_config(corpus, model__latent_size=5)
  with pytest.raises(TextgenError, match="model.latent_size"):
    vae.train_and_evaluate(config, workdir)


def test_generate_cli_modes(trained_vae):
  _, workdir = trained_vae
  sample = run_script(
    "generate_vae.py", f"--workdir={workdir}", "--mode=sample", "--num=3", "--top_k=5"
  )
  assert sample.returncode == 0, sample.stderr
  assert len(sample.stdout.splitlines()) == 3
  reconstruct = run_script(
    "generate_vae.py", f"--workdir={workdir}", "--mode=reconstruct", SENTENCES[0], SENTENCES[4]
  )
  assert reconstruct.stdout.splitlines() == [SENTENCES[0], SENTENCES[4]], reconstruct.stderr
  homotopy = run_script(
    "generate_vae.py",
    f"--workdir={workdir}",
    "--mode=interpolate",
    "--num_points=3",
    SENTENCES[0],
    SENTENCES[1],
  )
  lines = homotopy.stdout.splitlines()
  assert lines[0] == f"0.00\t{SENTENCES[0]}" and lines[-1] == f"1.00\t{SENTENCES[1]}"
  assert len(lines) == 3


def test_generate_cli_reconstructs_one_line_per_stdin_line(trained_vae):
  """Issue 22: a blank line gives an empty line (the model has nothing to encode) and U+2028
  stays inside its line, so output line i answers input line i."""
  model, workdir = trained_vae
  lines = [SENTENCES[0], "", SENTENCES[4], "   ", "the cat\u2028sat on the mat"]
  result = run_script(
    "generate_vae.py",
    f"--workdir={workdir}",
    "--mode=reconstruct",
    stdin="\ufeff" + "\n".join(lines) + "\n",
    timeout=120,
  )
  assert result.returncode == 0, result.stderr
  sentences = model.reconstruct([lines[0], lines[2], lines[4]])
  assert result.stdout.split("\n") == [sentences[0], "", sentences[1], "", sentences[2], ""]


def test_generate_cli_refuses_a_seq2seq_workdir(tmp_path):
  config = tiny_config(write_tsv(tmp_path / "pairs.tsv", make_pairs(20)), train__num_steps=1)
  seq2seq.train_and_evaluate(config, str(tmp_path / "seq2seq"))
  result = run_script("generate_vae.py", f"--workdir={tmp_path / 'seq2seq'}", "--mode=sample")
  assert_one_line_error(result, "seq2seq", "train_vae.py")


def test_generate_and_evaluate_cli_bad_flags(trained_vae, tmp_path):
  _, workdir = trained_vae
  assert_one_line_error(
    run_script("evaluate_vae.py", f"--workdir={workdir}", "--num_samples=0"),
    "--num_samples",
    "positive",
  )
  assert_one_line_error(
    run_script("generate_vae.py", f"--workdir={workdir}", "--top_p=1.5"), "--top_p"
  )
  assert_one_line_error(
    run_script("generate_vae.py", f"--workdir={workdir}", "--mode=interpolate", "only one"),
    "exactly 2 sentences",
  )
  assert_one_line_error(
    run_script("generate_vae.py", f"--workdir={tmp_path / 'nothing'}"),
    "nothing: no checkpoint found",
    "train_vae.py",
  )
  assert_one_line_error(
    run_script("evaluate_vae.py", f"--workdir={workdir}", "--step=7"),
    "no checkpoint at step 7",
    "[300]",
  )


def test_evaluate_cli_writes_one_json_line(trained_vae, corpus, tmp_path):
  _, workdir = trained_vae
  output = tmp_path / "results.jsonl"
  result = run_script(
    "evaluate_vae.py",
    f"--workdir={workdir}",
    f"--data_path={corpus}",
    "--num_samples=4",
    "--chunk_size=2",
    "--dtype=bfloat16",
    f"--output={output}",
  )
  assert result.returncode == 0, result.stderr
  record = json.loads(result.stdout.splitlines()[0])
  assert record["num_sentences"] == 8 and record["importance_samples"] == 4
  assert record["dtype"] == "bfloat16"
  assert record["step"] == 300
  assert json.loads(output.read_text()) == record
