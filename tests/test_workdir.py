"""Tests for textgen_jax.workdir: the family a workdir records, loading and saving a model with
it, older workdirs (no `family`), and the run keys a seed gives (textgen_jax.loop)."""

import functools
import json
import os
import re
import shutil
import socket

import jax
import ml_collections
import numpy as np
import pytest

from tests.helpers import (
  SENTENCES,
  assert_trees_equal,
  strip_run_state,
  make_pairs,
  read_metrics,
  rename_in_checkpoints,
  tiny_config,
  tiny_vae_config,
  write_tsv,
)
from textgen_jax import checkpointing, run_spec, seq2seq, vae
from textgen_jax import workdir as workdir_lib
from textgen_jax.data.tokenizers import make_tokenizer
from textgen_jax.data.vocab import Vocabulary
from textgen_jax.errors import TextgenError


def saved_translator(directory, hidden_size=16, num_pairs=20):
  """An untrained seq2seq model saved as an inference directory (no training run)."""
  config = tiny_config("unused.tsv", model__hidden_size=hidden_size)
  tokenizer = make_tokenizer("word", lowercase=True)
  vocabularies = [
    Vocabulary.build([tokenizer.tokenize(pair[side]) for pair in make_pairs(num_pairs)])
    for side in (0, 1)
  ]
  model = seq2seq.model.build_model(config.model, *vocabularies)
  params = jax.jit(functools.partial(seq2seq.model.init_params, model))(jax.random.key(3))
  translator = seq2seq.Translator(config, model, params, (tokenizer, tokenizer), *vocabularies)
  translator.save(str(directory))
  return translator


def drop_family(directory, added_later=False):
  """Rewrites config.json as workdirs were written before configs named their family (and,
  with added_later, before any field of ADDED_LATER existed)."""
  path = os.path.join(directory, workdir_lib.CONFIG_FILE)
  with open(path, encoding="utf-8") as f:
    saved = json.load(f)
  del saved["family"]
  family = workdir_lib.family_of(ml_collections.ConfigDict(saved))
  for section, field in workdir_lib.added_later(family) if added_later else ():
    saved.get(section, {}).pop(field, None)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(saved, f)


def test_each_family_config_names_its_family():
  assert seq2seq.get_config().family == "seq2seq"
  assert vae.get_config().family == vae.ptb_config().family == "vae"
  assert workdir_lib.family_of(tiny_config("x")) == "seq2seq"
  assert workdir_lib.family_of(tiny_vae_config("x", model__kind="lm")) == "vae"


def test_a_config_without_family_is_told_by_its_model_section():
  for config, family in (
    (tiny_config("x"), "seq2seq"),
    (tiny_vae_config("x"), "vae"),
    (tiny_vae_config("x", model__kind="lm"), "vae"),
  ):
    del config["family"]
    assert workdir_lib.family_of(config) == family


def test_save_then_load_gives_the_same_model_and_refuses_the_other_family(tmp_path):
  translator = saved_translator(tmp_path / "saved")
  loaded = seq2seq.Translator.load(str(tmp_path / "saved"))
  assert_trees_equal(loaded.params, translator.params)
  assert loaded.translate(["Go eat."]) == translator.translate(["Go eat."])
  with pytest.raises(TextgenError, match="holds a seq2seq model, not a vae model"):
    vae.SentenceModel.load(str(tmp_path / "saved"))


def test_a_workdir_from_before_family_was_recorded_still_loads(tmp_path):
  translator = saved_translator(tmp_path / "old")
  drop_family(str(tmp_path / "old"))
  loaded = seq2seq.Translator.load(str(tmp_path / "old"))
  assert_trees_equal(loaded.params, translator.params)
  with pytest.raises(TextgenError, match="holds a seq2seq model"):
    vae.SentenceModel.load(str(tmp_path / "old"))


@pytest.mark.slow
def test_a_vae_workdir_from_before_family_was_recorded_loads_and_resumes(tmp_path):
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("\n".join(SENTENCES * 4) + "\n", encoding="utf-8")
  workdir = str(tmp_path / "run")
  config = tiny_vae_config(corpus, train__num_steps=2, train__log_every=1)
  trained = vae.train_and_evaluate(config, workdir)
  drop_family(workdir, added_later=True)  # The oldest vintage: no run state either.
  strip_run_state(workdir)
  with pytest.raises(TextgenError, match="holds a vae model, not a seq2seq model"):
    seq2seq.Translator.load(workdir)
  assert_trees_equal(vae.SentenceModel.load(workdir).params, trained.params)
  config.train.num_steps = 3  # Resumes from step 2 of the old workdir.
  vae.train_and_evaluate(config, workdir)
  assert [r["step"] for r in read_metrics(workdir) if "train_loss" in r] == [1, 2, 3]
  assert vae.SentenceModel.load(workdir).step == 3


@pytest.mark.slow
def test_a_vae_workdir_from_before_the_output_layer_was_renamed_loads_and_resumes_exactly(tmp_path):
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("\n".join(SENTENCES * 4) + "\n", encoding="utf-8")
  config = tiny_vae_config(corpus, train__num_steps=3, train__log_every=1)
  straight = vae.train_and_evaluate(config, str(tmp_path / "straight"))
  old = str(tmp_path / "old")
  config.train.num_steps = 2
  vae.train_and_evaluate(config, old)
  rename_in_checkpoints(old, {"output_layer": "decoder_output"})
  saved = checkpointing.Checkpointer(os.path.join(old, "checkpoints"))
  assert "decoder_output" in dict(saved._manager.item_metadata(2)["params"])["params"]
  assert set(vae.SentenceModel.load(old).params["params"]) == set(straight.params["params"])
  config.train.num_steps = 3  # Resumes the old checkpoint's Adam moments under today's names.
  assert_trees_equal(vae.train_and_evaluate(config, old).params, straight.params)


def test_run_keys_are_one_per_purpose_and_keep_the_old_parameter_and_dropout_keys():
  for seed in (0, 1, 17):
    keys = run_spec.run_keys(seed, vae.FAMILY.run_keys)
    assert list(keys.family) == ["reset", "aggressive"]
    all_keys = [keys.params, keys.dropout, keys.evaluation, *keys.family.values()]
    data = [tuple(np.asarray(jax.random.key_data(key)).tolist()) for key in all_keys]
    assert len(set(data)) == 5
    # Each purpose keeps the key it had when RunKeys listed the VAE's keys: fold_in(root, i).
    root = jax.random.key(seed)
    for key, index in zip(all_keys, range(5)):
      assert np.array_equal(
        jax.random.key_data(key), jax.random.key_data(jax.random.fold_in(root, index))
      )
    old_params, old_dropout = jax.random.split(jax.random.key(seed))
    assert data[0] == tuple(np.asarray(jax.random.key_data(old_params)).tolist())
    assert data[1] == tuple(np.asarray(jax.random.key_data(old_dropout)).tolist())


HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
os.write(fd, b"host elsewhere pid 4242")
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


def test_the_training_lock_names_its_holder_and_is_taken_over_once_it_died(tmp_path, capsys):
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel

  workdir = str(tmp_path)
  lock_path = os.path.join(workdir, workdir_lib.LOCK_FILE)
  holder = subprocess.Popen(
    [sys.executable, "-c", HOLD_LOCK, lock_path], stdout=subprocess.PIPE, text=True
  )
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(
      TextgenError,
      match=f"{workdir} is being trained by another process "
      r"\(host elsewhere pid 4242, holding .*train.lock\)",
    ):
      workdir_lib.lock_for_training(workdir)
  finally:
    holder.kill()
    holder.communicate()
  # Its OS lock died with it; the file it left names it, and is taken over.
  workdir_lib.lock_for_training(workdir)
  try:
    assert "took over" in capsys.readouterr().out
    with open(lock_path, encoding="utf-8") as f:
      assert f.read().strip().endswith(f"pid {os.getpid()}")
    workdir_lib.lock_for_training(workdir)  # Held by this process already: a no-op.
  finally:
    workdir_lib.unlock(workdir)
  with open(lock_path, encoding="utf-8") as f:
    assert f.read() == ""  # Released: no holder named.
  workdir_lib.lock_for_training(workdir)  # Free again.
  workdir_lib.unlock(workdir)
  assert "took over" not in capsys.readouterr().out


SECRET = "api_key = s3cr3t\n"


def test_a_symlinked_training_lock_is_refused_leaving_its_target_unread(tmp_path, capsys):
  # On a shared workdir train.lock may be another user's symlink to a file of ours: it was
  # read (its start printed in the takeover note) and truncated to 0 bytes.
  target = tmp_path / "private.txt"
  target.write_text(SECRET, encoding="utf-8")
  workdir = tmp_path / "run"
  workdir.mkdir()
  lock_path = workdir / workdir_lib.LOCK_FILE
  lock_path.symlink_to(target)
  with pytest.raises(
    TextgenError,
    match=f"^{re.escape(str(lock_path))} is a symbolic link, "
    "not the workdir's lock file; remove it",
  ):
    workdir_lib.lock_for_training(str(workdir))
  assert target.read_text(encoding="utf-8") == SECRET
  assert "s3cr3t" not in "".join(capsys.readouterr())
  lock_path.unlink()  # As the message says: then it is made anew.
  workdir_lib.lock_for_training(str(workdir))
  workdir_lib.unlock(str(workdir))


def test_a_training_lock_holding_something_else_is_taken_over_without_showing_it(tmp_path, capsys):
  lock_path = tmp_path / workdir_lib.LOCK_FILE
  lock_path.write_text(SECRET, encoding="utf-8")
  workdir_lib.lock_for_training(str(tmp_path))
  try:
    out = capsys.readouterr().out
    assert "took over" in out and "something other than a training's host and PID" in out
    assert "s3cr3t" not in out
    assert lock_path.read_text(encoding="utf-8") == (
      f"host {socket.gethostname()} pid {os.getpid()}\n"
    )
  finally:
    workdir_lib.unlock(str(tmp_path))


@pytest.mark.parametrize(
  "edit,message",
  [
    (
      lambda c: c["model"].update(hiden_size=c["model"].pop("hidden_size")),
      "model.hiden_size is not a field of a seq2seq config; did you mean model.hidden_size?",
    ),
    (lambda c: c["model"].pop("hidden_size"), "model.hidden_size is missing"),
    (lambda c: c["model"].update(hidden_size="big"), "model.hidden_size is 'big', not an integer"),
    (lambda c: c["model"].update(dropout_rate=True), "model.dropout_rate is True, not a number"),
    (lambda c: c.pop("data"), "no data section"),
    (lambda c: c.update(model=3), "model is 3, not a section"),
    (
      lambda c: c.update(population={**c["population"], "num_members": "x"}),
      "population.num_members is 'x', not an integer",
    ),
  ],
)
def test_a_hand_edited_config_json_is_a_one_line_error_naming_it(tmp_path, edit, message):
  saved_translator(tmp_path / "run")
  path = str(tmp_path / "run" / "config.json")
  with open(path, encoding="utf-8") as f:
    saved = json.load(f)
  edit(saved)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(saved, f)
  with pytest.raises(TextgenError, match=f"^{re.escape(path)}: {re.escape(message)}$"):
    seq2seq.Translator.load(str(tmp_path / "run"))


def test_a_config_json_without_sections_is_a_one_line_error(tmp_path):
  saved_translator(tmp_path / "run")
  path = tmp_path / "run" / "config.json"
  path.write_text("[1, 2]", encoding="utf-8")
  with pytest.raises(TextgenError, match="config.json: not a JSON object of config sections"):
    seq2seq.Translator.load(str(tmp_path / "run"))


def test_a_config_json_that_is_not_utf8_or_not_a_file_is_a_one_line_error(tmp_path):
  path = tmp_path / workdir_lib.CONFIG_FILE
  path.write_bytes('{"model": {"name": "café"}}'.encode("latin-1"))
  with pytest.raises(TextgenError, match=f"^{re.escape(str(path))}: not UTF-8 text"):
    workdir_lib.read_config(str(tmp_path))
  path.unlink()
  path.mkdir()
  with pytest.raises(
    TextgenError,
    match=f"^{re.escape(str(path))}: cannot read it "
    r"\(Is a directory\)$",
  ):
    workdir_lib.read_config(str(tmp_path))
  path.rmdir()
  path.write_text('{"model.size": 3}', encoding="utf-8")  # ConfigDict refuses dotted names.
  with pytest.raises(TextgenError, match=f"^{re.escape(str(path))}: not a config"):
    workdir_lib.read_config(str(tmp_path))


def test_a_vocabulary_checksum_file_that_is_not_utf8_is_a_one_line_error(tmp_path):
  path = tmp_path / workdir_lib.VOCABULARY_CHECKSUMS
  path.write_bytes(b"\xff\xfe" + "0123  vocab.json\n".encode("utf-16-le"))
  with pytest.raises(TextgenError, match=f"^{re.escape(str(path))}: not UTF-8 text"):
    workdir_lib.check_vocabulary_files(str(tmp_path), ["vocab.json"])


# Files of another run copied into a workdir.


def test_a_vocabulary_file_from_another_run_is_a_one_line_error_naming_it(tmp_path):
  saved_translator(tmp_path / "run")
  saved_translator(tmp_path / "other", num_pairs=3)  # Fewer words: other embedding shapes.
  path = str(tmp_path / "run" / "target_vocab.json")
  shutil.copyfile(tmp_path / "other" / "target_vocab.json", path)
  with pytest.raises(
    TextgenError,
    match=f"^{re.escape(path)}: not the vocabulary this run was "
    "trained with .*was it copied from another run",
  ):
    seq2seq.Translator.load(str(tmp_path / "run"))
  # A workdir from before the checksums were recorded: the shapes tell, naming every candidate.
  os.remove(tmp_path / "run" / workdir_lib.VOCABULARY_CHECKSUMS)
  with pytest.raises(
    TextgenError,
    match=r"checkpoint parameters do not match the model .*"
    f"described by .*config.json, .*source_vocab.json, {re.escape(path)}",
  ):
    seq2seq.Translator.load(str(tmp_path / "run"))


@pytest.mark.parametrize("other", ["size", "family"])
def test_a_checkpoint_of_another_model_is_a_one_line_error_naming_it(tmp_path, other):
  saved_translator(tmp_path / "run")
  if other == "size":
    saved_translator(tmp_path / "other", hidden_size=32)
  else:
    config = tiny_vae_config("unused.txt")
    tokenizer = make_tokenizer("word", lowercase=True)
    vocab = Vocabulary.build([tokenizer.tokenize(s) for s in SENTENCES])
    model = vae.model.build_model(config.model, vocab)
    params = jax.jit(functools.partial(vae.model.init_params, model))(jax.random.key(0))
    vae.SentenceModel(config, model, params, (tokenizer,), vocab).save(str(tmp_path / "other"))
  foreign = str(tmp_path / "run" / "checkpoints" / "7")
  shutil.copytree(tmp_path / "other" / "checkpoints" / "0", foreign)
  with pytest.raises(
    TextgenError,
    match=f"^{re.escape(foreign)}: checkpoint parameters do not "
    "match the model .*was one of them edited or copied from another run",
  ):
    seq2seq.Translator.load(str(tmp_path / "run"))


@pytest.mark.slow  # Four short trainings: 13 s.
def test_resume_compares_data_files_by_content_not_by_path_text(tmp_path, monkeypatch):
  pairs_path = write_tsv(tmp_path / "pairs.tsv", make_pairs(40))
  workdir = str(tmp_path / "w")
  seq2seq.train_and_evaluate(
    tiny_config(pairs_path, train__num_steps=2, train__checkpoint_every=2), workdir
  )
  monkeypatch.chdir(tmp_path)  # The same file named by a relative path resumes.
  seq2seq.train_and_evaluate(tiny_config("pairs.tsv", train__num_steps=3), workdir)
  assert workdir_lib.read_config(workdir).data.train_path == "pairs.tsv"
  copy = write_tsv(tmp_path / "copy.tsv", make_pairs(40))  # Equal bytes, another name.
  seq2seq.train_and_evaluate(tiny_config(copy, train__num_steps=4), workdir)
  changed = write_tsv(tmp_path / "changed.tsv", make_pairs(40)[::-1])
  with pytest.raises(
    TextgenError,
    match=r"^--config.data.train_path=.*changed.tsv: not the "
    r"data this run trained on \(.*copy.tsv; SHA-256 in .*data_files.json\)",
  ):
    seq2seq.train_and_evaluate(tiny_config(changed, train__num_steps=5), workdir)


def test_fields_added_later_take_the_familys_default_but_the_old_values_named():
  families = {name: workdir_lib.family_defaults(name) for name in ("seq2seq", "vae")}
  assert families["seq2seq"].family == "seq2seq" and families["vae"].family == "vae"
  for name, defaults in families.items():
    for section, field in workdir_lib.added_later(name):  # Each is the family's own field.
      assert field in defaults[section], (name, section, field)
  assert ("model", "attention") not in workdir_lib.added_later("vae")
  assert families["seq2seq"].data.valid_split == "grouped"  # Today's default, not old runs'.
  before = {name: workdir_lib.values_before(name) for name in families}
  assert before["seq2seq"]["data", "valid_split"] == "random"
  assert before["seq2seq"]["model", "attention"] == "none"
  assert before["vae"]["vae", "aggressive_max_steps"] == 100
