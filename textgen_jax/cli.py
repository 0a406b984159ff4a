"""Experiment scripts' shared parts: main with one-line errors for bad input, decoding flags."""

import os
import sys
from typing import Callable

from absl import app, flags, logging

from textgen_jax import decoding
from textgen_jax.decoding import DecodeSettings
from textgen_jax.errors import TextgenError, TrainingStopped


# glibc's tunable that backs malloc's large blocks with transparent huge pages (glibc >= 2.35).
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"


def run(main: Callable[[list[str]], None], huge_pages: bool = False) -> None:
  """absl's app.run, with orbax's INFO logs hidden, TextgenError as one line on stderr, and a
  training run stopped by a signal leaving with its resume message and 128 + the signal.

  huge_pages: first re-execute the script once with HUGE_PAGES_TUNABLE (see
  `reexec_with_huge_pages`); for the scripts that train, evaluate and benchmark.
  """
  if huge_pages:
    reexec_with_huge_pages()

  def quiet_main(argv):
    logging.set_verbosity(logging.WARNING)
    try:
      main(argv)
    except TextgenError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    except TrainingStopped as e:
      print(str(e), file=sys.stderr)
      sys.exit(e.exit_code)

  app.run(quiet_main)


def define_decode_flags(default_strategy: str | None = "greedy") -> Callable[[], DecodeSettings]:
  """Defines --strategy, --temperature, --top_k, --top_p, --beam_size, --length_alpha and
  --length_norm.

  Returns a function that reads them into a checked DecodeSettings once flags are parsed;
  with default_strategy=None the script picks the default, passed to that function.
  """
  strategy = flags.DEFINE_enum("strategy", default_strategy, list(decoding.STRATEGIES),
                               "Decoding strategy.")
  temperature = flags.DEFINE_float("temperature", 1.0, "sample: softmax temperature (> 0).")
  top_k = flags.DEFINE_integer("top_k", 0, "sample: among the k most likely tokens (0: all).")
  top_p = flags.DEFINE_float("top_p", 1.0, "sample: within the nucleus of this mass, (0, 1].")
  beam_size = flags.DEFINE_integer("beam_size", 4, "beam: hypotheses kept per input.")
  length_alpha = flags.DEFINE_float("length_alpha", 0.6,
                                    "beam: GNMT length normalisation exponent (0: none).")
  length_norm = flags.DEFINE_enum("length_norm", "gnmt", list(decoding.LENGTH_NORMS),
                                  "beam: divide log p by GNMT's ((5 + length) / 6) ** alpha, or "
                                  "by the length (average).")

  def settings(default: str = "greedy") -> DecodeSettings:
    result = DecodeSettings(strategy.value or default, temperature.value, top_k.value,
                            top_p.value, beam_size.value, length_alpha.value, length_norm.value)
    try:
      result.check(max_len=1)
    except TextgenError as e:
      raise TextgenError(f"--{e}") from None  # The message starts with the setting's name.
    return result

  return settings


def reexec_with_huge_pages() -> None:
  """Restarts this process (same PID, arguments and streams) with glibc's huge-page tunable.

  XLA:CPU allocates a step's temporary buffers afresh at every call, and on 4 KiB pages the
  kernel faults each page in again: 93 MB (23k faults) per seq2seq train step, about a third of
  its time on a 2-core VM (experiments/results/speed.md); huge pages remove nearly all of it.
  The tunable is read when a process starts, hence the restart. Skipped where it cannot apply
  (not Linux, glibc < 2.35, huge pages off), when already set, or with
  TEXTGEN_JAX_HUGE_PAGES=0.
  """
  tunables = os.environ.get("GLIBC_TUNABLES", "")
  if os.environ.get("TEXTGEN_JAX_HUGE_PAGES") == "0" or "glibc.malloc.hugetlb" in tunables:
    return
  if not sys.platform.startswith("linux") or _glibc_version() < (2, 35):
    return
  try:
    with open("/sys/kernel/mm/transparent_hugepage/enabled", encoding="utf-8") as f:
      if "[never]" in f.read():
        return
  except OSError:
    return
  env = dict(os.environ, GLIBC_TUNABLES=":".join(filter(None, [tunables, HUGE_PAGES_TUNABLE])))
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)


def _glibc_version() -> tuple[int, ...]:
  try:
    name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # e.g. "glibc 2.36"
    return tuple(int(part) for part in version.split(".")[:2]) if name == "glibc" else (0,)
  except (ValueError, OSError, AttributeError):
    return (0,)
