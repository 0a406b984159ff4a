"""Test-wide settings (set before jax is imported), fixtures, and the order tests start in.

The helpers the tests share are in tests/helpers.py."""

import atexit
import os
import shutil
import tempfile

# XLA compile time dominates this suite on CPU and the programs are tiny, so compile them with
# cheap backend optimisations (about a third less compile time). This must precede `import jax`;
# subprocesses started by the tests inherit it.
os.environ["XLA_FLAGS"] = " ".join(
  filter(
    None,
    [  # Before importing jax.
      os.environ.get("XLA_FLAGS"),
      "--xla_backend_optimization_level=0",
      "--xla_llvm_disable_expensive_passes=true",
    ],
  )
)

# Broadcasting that silently adds dimensions hides shape bugs: under test it is an error (here
# and in the scripts the tests start), so every broadcast in the library is written out.
os.environ["JAX_NUMPY_RANK_PROMOTION"] = "raise"
# The scripts' re-execution with huge pages (cli.reexec_with_huge_pages) would import jax twice
# in every subprocess test; tests/test_cli.py runs it on purpose.
os.environ.setdefault("TEXTGEN_JAX_HUGE_PAGES", "0")

import jax
import pytest

from tests.helpers import make_pairs, make_setup, write_tsv

# The suite compiles the same tiny programs many times over (every run builds its steps
# afresh): XLA's persistent cache compiles each once per test process (about a quarter less
# time). One directory per process, set here rather than in the environment, so that no two
# processes (a test's subprocesses, the other xdist worker) write one directory at once.
_CACHE_DIR = tempfile.mkdtemp(prefix="textgen_jax_test_cache_")
atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", _CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(scope="module")
def setup():
  """A tiny seq2seq model with dropout, a fixed batch, its compiled train and eval steps."""
  return make_setup()


@pytest.fixture
def pairs_tsv(tmp_path) -> str:
  return write_tsv(tmp_path / "pairs.tsv", make_pairs(40))


# Files whose tests run whole training jobs in subprocesses (up to minutes each).
_LONGEST_FIRST = ("test_multi_device.py", "test_kill_and_resume.py")


def pytest_collection_modifyitems(items):
  """Starts the longest tests first: with pytest-xdist (-n 2) each goes to a worker at the start
  instead of running alone at the end of the suite."""
  items.sort(key=lambda item: not item.nodeid.split("::")[0].endswith(_LONGEST_FIRST))
