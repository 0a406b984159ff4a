"""Tests for textgen_jax.cli: the re-execution with huge pages keeps the script's arguments, and
mistakes in --config flags are one-line errors."""

import os
import subprocess
import sys

import pytest

from tests.helpers import assert_one_line_error, run_script, write_text
from textgen_jax import cli

pytestmark = pytest.mark.slow  # Subprocesses: the fast subset (-m 'not slow') skips them.

SCRIPT = """
import os
from absl import flags
from textgen_jax import cli
NAME = flags.DEFINE_string("name", None, "")
def main(argv):
  print(os.environ.get("GLIBC_TUNABLES", ""), NAME.value, argv[1:], sep="|")
cli.run(main, huge_pages=True)
"""


def run(tmp_path, env_update):
  script = tmp_path / "script.py"
  script.write_text(SCRIPT)
  env = dict(os.environ, **env_update)
  env.pop("GLIBC_TUNABLES", None)
  result = subprocess.run(
    [sys.executable, str(script), "--name=x y", "extra"],
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
    check=True,
  )
  return result.stdout.strip().split("|")


def test_scripts_restart_once_with_huge_pages_and_the_same_arguments(tmp_path):
  if not cli._glibc_version() >= (2, 35) or not os.path.exists(
    "/sys/kernel/mm/transparent_hugepage/enabled"
  ):
    pytest.skip("no glibc huge-page tunable on this machine")
  tunables, name, rest = run(tmp_path, {"TEXTGEN_JAX_HUGE_PAGES": "1"})
  assert tunables == cli.HUGE_PAGES_TUNABLE
  assert name == "x y" and rest == "['extra']"


def test_huge_pages_can_be_turned_off(tmp_path):
  tunables, name, _ = run(tmp_path, {"TEXTGEN_JAX_HUGE_PAGES": "0"})
  assert tunables == "" and name == "x y"


@pytest.mark.parametrize("script", ["train_seq2seq.py", "train_vae.py"])
@pytest.mark.parametrize(
  "flag, fragments",
  [
    (
      "--config.model.hiden_size=3",
      ["--config.model.hiden_size: no config field 'hiden_size'; did you mean 'hidden_size'?"],
    ),
    ("--config.modle.hidden_size=3", ["--config.modle.hidden_size", "did you mean 'model'?"]),
    ("--config.model.hidden_size=abc", ["--config.model.hidden_size=abc", "invalid literal"]),
    (
      "--config=missing_config.py",
      ["--config=missing_config.py: cannot load it", "No such file or directory"],
    ),
  ],
)
def test_config_mistakes_are_one_line_errors(tmp_path, script, flag, fragments):
  """Typos and wrong types in --config flags: one line, the flag named, no library traceback."""
  result = run_script(script, flag, f"--workdir={tmp_path / 'workdir'}", timeout=120)
  assert_one_line_error(result, *fragments)
  assert not os.path.exists(tmp_path / "workdir")


def test_a_config_file_without_get_config_or_that_raises_is_a_one_line_error(tmp_path):
  without = write_text(tmp_path / "without.py", "CONFIG = 1\n")
  assert_one_line_error(
    run_script("train_seq2seq.py", f"--config={without}", f"--workdir={tmp_path / 'workdir'}"),
    f"--config={without}: cannot load it",
    "no attribute 'get_config'",
  )
  raising = write_text(tmp_path / "raising.py", "def get_config():\n  return {}['seed']\n")
  assert_one_line_error(
    run_script("train_seq2seq.py", f"--config={raising}", f"--workdir={tmp_path / 'workdir'}"),
    f"--config={raising}: cannot load it (KeyError: 'seed')",
  )
