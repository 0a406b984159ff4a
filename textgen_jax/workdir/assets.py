"""A workdir's files: its config.json and vocabularies (with their checksums), the record of
the data files it trained on, and where its checkpoints live."""

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from textgen_jax.checkpointing import (
  check_writable_path,
  file_sha256,
)
from textgen_jax.data.readers import parallel_paths
from textgen_jax.data.tokenizers import SentencePieceTokenizer, Tokenizer
from textgen_jax.data.vocab import Vocabulary
from textgen_jax.errors import TextgenError
from textgen_jax.files import read_text, write_atomically


CONFIG_FILE = "config.json"


# The SHA-256 of each vocabulary file as training wrote it (`sha256sum -c` reads it): a
# vocabulary file copied from another run gives the checkpoint's embedding rows other words.
VOCABULARY_CHECKSUMS = "vocabularies.sha256"


# The SHA-256 of each data file the run was trained on (data.train_path, data.valid_path), so
# that a resume with the same file under another path goes on, one with a changed file is
# refused, and the held-out split re-derived from train_path is known to be the one held out.
DATA_CHECKSUMS = "data_files.json"


DATA_FIELDS = ("train_path", "valid_path")


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, "checkpoints")


def best_dir(workdir: str) -> str:
  """The parameters of the best held-out evaluation, with early stopping (loop)."""
  return os.path.join(workdir, "best")


def has_checkpoints(workdir: str) -> bool:
  directory = checkpoint_dir(workdir)
  return os.path.isdir(directory) and bool(os.listdir(directory))


def make_workdir(workdir: str) -> None:
  """Creates the workdir and checks that it takes files and checkpoints, before anything is
  trained."""
  check_writable_path(workdir, f"--workdir={workdir}")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise TextgenError(f"--workdir={workdir}: cannot create it ({e.strerror})") from None
  probe = os.path.join(workdir, f".write_test.{os.getpid()}")
  try:
    # Created exclusively, never through a symlink planted under that name.
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
    os.remove(probe)
  except OSError as e:
    raise TextgenError(f"--workdir={workdir}: cannot write there ({e.strerror})") from None


def read_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  try:
    saved = json.loads(read_text(path))  # Not UTF-8, a directory: one line naming it.
  except FileNotFoundError:
    raise TextgenError(f"{path}: not found; is {workdir} a textgen-jax workdir?") from None
  except json.JSONDecodeError as e:
    raise TextgenError(f"{path}: not valid JSON ({e})") from None
  if not isinstance(saved, dict):
    raise TextgenError(f"{path}: not a JSON object of config sections")
  try:
    return ml_collections.ConfigDict(saved)
  except ValueError as e:  # A field name ConfigDict refuses, such as one with a dot.
    raise TextgenError(f"{path}: not a config ({e})") from None


def read_model_config(workdir: str) -> ml_collections.ConfigDict:
  """The saved config for loading its model here: the LSTM backend back to "auto", so a model
  trained with cuDNN on a GPU loads on a CPU (backends share parameters)."""
  config = read_config(workdir)
  if isinstance(config.get("model"), ml_collections.ConfigDict):
    config.model.lstm_backend = "auto"
  return config


def family_of(config: ml_collections.ConfigDict) -> str:
  """The model family a saved config describes. Workdirs written before configs named their
  family tell it by the model section: only the VAE/LM's has a `kind`."""
  if "family" in config:
    return config.family
  return "vae" if "kind" in config.get("model", {}) else "seq2seq"


def write_assets(
  directory: str,
  config: ml_collections.ConfigDict,
  tokenizers: Sequence[Tokenizer],
  vocabularies: Mapping[str, Vocabulary],
) -> None:
  """Writes each vocabulary (file name -> vocabulary, one tokenizer each, in order), their
  checksums, the subword tokenizers' models and config.json, each atomically."""
  for tokenizer in tokenizers:
    if isinstance(tokenizer, SentencePieceTokenizer):
      # Bound to the vocabulary files by the SHA-256 they record (tokenizer_from_config checks).
      write_atomically(os.path.join(directory, tokenizer.file), tokenizer.model)
  for tokenizer, (filename, vocab) in zip(tokenizers, vocabularies.items(), strict=True):
    vocab.save(os.path.join(directory, filename), tokenizer.to_config())
  write_atomically(
    os.path.join(directory, VOCABULARY_CHECKSUMS),
    "".join(
      f"{file_sha256(os.path.join(directory, filename))}  {filename}\n" for filename in vocabularies
    ),
  )
  write_atomically(os.path.join(directory, CONFIG_FILE), config.to_json(indent=2))


def data_checksums(data_cfg: ml_collections.ConfigDict) -> dict[str, list[str]]:
  """The SHA-256 of each file of data.train_path and data.valid_path (two for parallel files;
  none for an empty field): field -> digests."""
  return {
    field: [file_sha256(path) for path in (parallel_paths(data_cfg[field]) or [data_cfg[field]])]
    for field in DATA_FIELDS
    if data_cfg.get(field)
  }


def write_data_checksums(workdir: str, data_cfg: ml_collections.ConfigDict) -> None:
  write_atomically(
    os.path.join(workdir, DATA_CHECKSUMS),
    json.dumps(
      {
        field: {"path": data_cfg[field], "sha256": digests}
        for field, digests in data_checksums(data_cfg).items()
      },
      indent=2,
    )
    + "\n",
  )


def read_data_checksums(workdir: str) -> dict[str, Any] | None:
  """What write_data_checksums recorded, or None for a workdir written before it existed."""
  path = os.path.join(workdir, DATA_CHECKSUMS)
  try:
    recorded = json.loads(read_text(path))  # Not UTF-8, a directory: one line naming it.
    if not all(isinstance(recorded[field]["sha256"], list) for field in recorded):
      raise ValueError("no sha256 lists")
    return recorded
  except FileNotFoundError:
    return None
  except (ValueError, KeyError, TypeError) as e:
    raise TextgenError(
      f"{path}: unreadable ({type(e).__name__}); it records the data files the run trained on"
    ) from None


def changed_data_files(
  workdir: str, data_cfg: ml_collections.ConfigDict, fields: Sequence[str] = DATA_FIELDS
) -> list[str] | None:
  """The fields among `fields` whose files now differ in content from those the run recorded
  (a file named by another path but equal in content is the same file); None for a workdir
  with no record (written before the record existed, or a saved model)."""
  recorded = read_data_checksums(workdir)
  if recorded is None:
    return None
  current = data_checksums(data_cfg)
  return [field for field in fields if recorded.get(field, {}).get("sha256") != current.get(field)]


def check_vocabulary_files(workdir: str, vocabulary_files: Sequence[str]) -> None:
  """Raises a one-line error naming a vocabulary file that is not the one training wrote
  (workdirs written before the checksums were recorded are not checked)."""
  checksums_path = os.path.join(workdir, VOCABULARY_CHECKSUMS)
  try:
    text = read_text(checksums_path)  # Not UTF-8, a directory: one line naming it.
  except FileNotFoundError:
    return
  lines = [line.split("  ", 1) for line in text.splitlines() if line]
  if any(len(parts) != 2 for parts in lines):
    raise TextgenError(f"{checksums_path}: not a list of '<SHA-256>  <file name>' lines")
  written = {filename: digest for digest, filename in lines}
  for filename in vocabulary_files:
    path = os.path.join(workdir, filename)
    if filename in written and file_sha256(path) != written[filename]:
      raise TextgenError(
        f"{path}: not the vocabulary this run was trained with (its SHA-256 "
        f"differs from {checksums_path}); was it copied from another run?"
      )
