"""Output flags the scripts write to are checked before the work (textgen_jax.cli's
check_output_file and check_output_directory): a path that cannot be written is a one-line error
naming the flag, not a traceback after an hour of evaluation."""

import os
import re

import pytest

from tests.helpers import assert_one_line_error, run_script
from textgen_jax import cli
from textgen_jax.errors import TextgenError


def test_an_output_file_in_a_missing_directory_or_that_is_a_directory_is_refused(tmp_path):
  missing = str(tmp_path / "missing" / "results.jsonl")
  with pytest.raises(TextgenError, match=f"^--output={re.escape(missing)}: no directory "):
    cli.check_output_file("--output", missing)
  with pytest.raises(
    TextgenError, match=f"^--output={re.escape(str(tmp_path))}: a directory, not a file$"
  ):
    cli.check_output_file("--output", str(tmp_path))
  (tmp_path / "file").write_text("", encoding="utf-8")
  under_a_file = str(tmp_path / "file" / "results.jsonl")
  with pytest.raises(TextgenError, match="file is not a directory$"):
    cli.check_output_file("--output", under_a_file)


def test_a_writable_output_file_passes_and_is_neither_created_nor_truncated(tmp_path):
  cli.check_output_file("--output", None)
  cli.check_output_file("--output", str(tmp_path / "new.jsonl"))
  existing = tmp_path / "results.jsonl"
  existing.write_text('{"bleu": 30.0}\n', encoding="utf-8")
  cli.check_output_file("--output", str(existing))
  assert os.listdir(tmp_path) == ["results.jsonl"]
  assert existing.read_text(encoding="utf-8") == '{"bleu": 30.0}\n'


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes everywhere")
def test_an_output_path_without_write_permission_is_refused(tmp_path):
  locked = tmp_path / "locked"
  locked.mkdir(mode=0o500)
  try:
    with pytest.raises(TextgenError, match="permission denied"):
      cli.check_output_file("--output", str(locked / "results.jsonl"))
    with pytest.raises(TextgenError, match="permission denied"):
      cli.check_output_directory("--out", str(locked / "new" / "deeper"))
  finally:
    locked.chmod(0o700)


def test_an_output_directory_that_is_a_file_or_under_one_is_refused(tmp_path):
  file = tmp_path / "file"
  file.write_text("", encoding="utf-8")
  with pytest.raises(
    TextgenError, match=f"^--out={re.escape(str(file))}: exists and is not a directory$"
  ):
    cli.check_output_directory("--out", str(file))
  with pytest.raises(TextgenError, match=f": {re.escape(str(file))} is not a directory$"):
    cli.check_output_directory("--out", str(file / "run"))
  cli.check_output_directory("--out", str(tmp_path))  # Exists: fine.
  cli.check_output_directory("--out", str(tmp_path / "new" / "run"))  # Can be made: fine.
  assert os.listdir(tmp_path) == ["file"]


@pytest.mark.slow
@pytest.mark.parametrize(
  "script,flag,fragment",
  [
    ("evaluate_translation.py", "--output", "no directory"),
    ("evaluate_vae.py", "--output", "no directory"),
    ("average_checkpoints.py", "--out", "exists and is not a directory"),
    ("make_dates.py", "--out_dir", "exists and is not a directory"),
  ],
)
def test_scripts_refuse_an_unwritable_output_in_one_line_before_the_work(
  tmp_path, script, flag, fragment
):
  # The workdir does not exist: an error naming the output flag, not the workdir, shows the
  # check ran before anything was loaded or evaluated.
  (tmp_path / "file").write_text("", encoding="utf-8")
  output = str(tmp_path / ("missing/results.jsonl" if flag == "--output" else "file"))
  others = (
    ["--num_train=5", "--num_valid=2"]
    if script == "make_dates.py"
    else [f"--workdir={tmp_path / 'no_workdir'}"]
  )
  result = run_script(script, *others, f"{flag}={output}", timeout=120)
  assert_one_line_error(result, f"{flag}={output}: {fragment}")
