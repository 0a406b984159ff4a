"""README.md and docs/ name only config fields and script flags that exist, so the documentation
cannot drift from the code."""

import functools
import glob
import os
import re

import ml_collections
import pytest

from tests.helpers import REPO_ROOT
from textgen_jax import seq2seq, vae

DOCS = [os.path.join(REPO_ROOT, "README.md")] + sorted(
  glob.glob(os.path.join(REPO_ROOT, "docs", "*.md"))
)
# Flags of other tools that the pages name (pytest's, pip's, the shell's).
OTHER_TOOLS = {
  "durations",
  "no-index",
  "no-deps",
  "target",
  "only-binary",
  "python-version",
  "rootdir",
  "query-gpu",
  "format",
  "headless",
  "disable-gpu",
}
# Quoted in an error message the pages show (the misspelling is the example).
MISSPELT_ON_PURPOSE = {"model.hiden_size"}


def _text(path: str) -> str:
  with open(path, encoding="utf-8") as f:
    return f.read()


@functools.cache
def script_flags(path: str) -> frozenset[str]:
  """The flags an experiments/ script or module defines (absl DEFINE_*, the config file, the
  shared decoding flags, the benchmarks' common ones) and absl's own."""
  source = _text(path)
  names = set(re.findall(r"DEFINE_\w+\(\s*\"(\w+)\"", source)) | {"help", "helpfull"}
  if "define_config_file" in source:
    names.add("config")
  if "define_decode_flags" in source:
    names |= set(
      re.findall(
        r"DEFINE_\w+\(\s*\"(\w+)\"", _text(os.path.join(REPO_ROOT, "textgen_jax", "cli.py"))
      )
    )
  common = os.path.join(REPO_ROOT, "experiments", "bench", "common.py")
  if path != common and "from experiments.bench import" in source:
    names |= script_flags(common)
  return frozenset(names)


def commands(text: str) -> list[tuple[str, str]]:
  """(script path, its command line) of each experiments/ command in the text, continuation
  lines joined."""
  joined = re.sub(r"\\\n\s*", " ", text)
  found = []
  for line in joined.splitlines():
    for match in re.finditer(r"experiments/(\w+)\.py|-m experiments\.(\w+(?:\.\w+)*)", line):
      module = match.group(1) or match.group(2).replace(".", "/")
      rest = line[match.end() :].split("&&")[0].split("|")[0].split(";")[0]
      found.append((os.path.join(REPO_ROOT, "experiments", module + ".py"), rest))
  return found


def _has_field(name: str) -> bool:
  for config in (seq2seq.get_config(), vae.get_config()):
    value = config
    try:
      for part in name.split("."):
        value = value[part]
      return True
    except (KeyError, AttributeError, TypeError):
      continue
  return False


@pytest.mark.parametrize("path", DOCS, ids=[os.path.relpath(p, REPO_ROOT) for p in DOCS])
def test_every_config_field_named_exists(path):
  names = set(re.findall(r"--config\.([a-z_]+(?:\.[a-z_0-9]+)*)", _text(path)))
  missing = sorted(name for name in names - MISSPELT_ON_PURPOSE if not _has_field(name))
  assert not missing, f"{os.path.relpath(path, REPO_ROOT)} names config fields that do not exist"


@pytest.mark.parametrize("path", DOCS, ids=[os.path.relpath(p, REPO_ROOT) for p in DOCS])
def test_every_script_flag_named_exists(path):
  text = _text(path)
  wrong = []
  for script, line in commands(text):
    if os.path.isdir(script[: -len(".py")]):  # A package named as such (experiments.bench.<x>).
      continue
    assert os.path.exists(script), f"{script} is named but does not exist"
    for flag in re.findall(r"(?<![\w-])--([a-z_][\w-]*)", line):
      if flag not in script_flags(script) and flag not in OTHER_TOOLS:
        wrong.append((os.path.basename(script), flag))
  # A flag named in prose (`--beam_size`) must be some script's.
  every_flag = set().union(
    *(
      script_flags(p)
      for p in glob.glob(os.path.join(REPO_ROOT, "experiments", "**", "*.py"), recursive=True)
    )
  )
  prose = set(re.findall(r"`--([a-z_]\w*)[=`]", text)) - {"config"}
  wrong += [("(prose)", flag) for flag in sorted(prose - every_flag - OTHER_TOOLS)]
  assert not wrong, f"{os.path.relpath(path, REPO_ROOT)}: {wrong}"


def test_the_check_finds_a_flag_that_does_not_exist():
  assert commands("python experiments/translate.py --workdir=w --beam_sise=3 \\\n  --top_p=1")
  script, line = commands("python experiments/translate.py --workdir=w --beam_sise=3")[0]
  assert "beam_sise" not in script_flags(script) and "beam_size" in script_flags(script)
  assert not _has_field("model.hiden_size") and _has_field("vae.free_bits")
  assert isinstance(seq2seq.get_config(), ml_collections.ConfigDict)
