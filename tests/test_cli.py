"""Tests for textgen_jax.cli: the re-execution with huge pages keeps the script's arguments."""

import os
import subprocess
import sys

import pytest

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
  result = subprocess.run([sys.executable, str(script), "--name=x y", "extra"], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
  return result.stdout.strip().split("|")


def test_scripts_restart_once_with_huge_pages_and_the_same_arguments(tmp_path):
  if not cli._glibc_version() >= (2, 35) or not os.path.exists(
      "/sys/kernel/mm/transparent_hugepage/enabled"):
    pytest.skip("no glibc huge-page tunable on this machine")
  tunables, name, rest = run(tmp_path, {"TEXTGEN_JAX_HUGE_PAGES": "1"})
  assert tunables == cli.HUGE_PAGES_TUNABLE
  assert name == "x y" and rest == "['extra']"


def test_huge_pages_can_be_turned_off(tmp_path):
  tunables, name, _ = run(tmp_path, {"TEXTGEN_JAX_HUGE_PAGES": "0"})
  assert tunables == "" and name == "x y"
