"""Tests for textgen_jax.files: atomic writes never open a path another user can plant, and text
that cannot be read is a one-line error naming its file."""

import os
import re

import pytest

from textgen_jax.errors import TextgenError
from textgen_jax.files import read_text, write_atomically


def test_a_symlink_at_the_old_temporary_name_is_left_alone(tmp_path):
  # On a shared workdir another user can plant <name>.tmp -> a file of ours: the write used to
  # open it and overwrite the target.
  target = tmp_path / "precious.txt"
  target.write_text("keep me", encoding="utf-8")
  (tmp_path / "config.json.tmp").symlink_to(target)
  path = str(tmp_path / "config.json")
  write_atomically(path, '{"a": 1}')
  assert target.read_text(encoding="utf-8") == "keep me"
  assert (tmp_path / "config.json.tmp").is_symlink()
  with open(path, encoding="utf-8") as f:
    assert f.read() == '{"a": 1}'
  assert not os.path.islink(path)
  assert sorted(os.listdir(tmp_path)) == ["config.json", "config.json.tmp", "precious.txt"]


def test_a_write_replaces_the_file_with_the_permissions_of_a_new_file(tmp_path):
  path = str(tmp_path / "vocab.json")
  write_atomically(path, "old")
  write_atomically(path, "new ü")
  with open(path, encoding="utf-8") as f:
    assert f.read() == "new ü"
  umask = os.umask(0o022)
  os.umask(umask)
  # Readable by whoever could read a file made by open(): not mkstemp's owner-only 0600.
  assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
  assert os.listdir(tmp_path) == ["vocab.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / "config.json"
  path.write_text("old", encoding="utf-8")
  with pytest.raises(UnicodeEncodeError):
    write_atomically(str(path), "a lone surrogate \ud800 cannot be UTF-8")
  assert path.read_text(encoding="utf-8") == "old"
  assert os.listdir(tmp_path) == ["config.json"]


def test_text_that_is_not_utf8_or_not_a_file_is_a_one_line_error_naming_it(tmp_path):
  latin1 = tmp_path / "latin1.json"
  latin1.write_bytes('{"name": "café"}'.encode("latin-1"))
  with pytest.raises(
    TextgenError,
    match=f"^{re.escape(str(latin1))}: not UTF-8 text "
    r"\(byte 0xe9 at offset 13\)",
  ):
    read_text(str(latin1))
  with pytest.raises(
    TextgenError,
    match=f"^{re.escape(str(tmp_path))}: cannot read it "
    r"\(Is a directory\)$",
  ):
    read_text(str(tmp_path))
  with pytest.raises(FileNotFoundError):  # The caller says what a missing file means.
    read_text(str(tmp_path / "missing"))
