"""Experiment scripts' shared parts: main with one-line errors for bad input and Ctrl-C,
decoding flags.

Light to import (absl, no JAX), so a script can take over Ctrl-C before its heavy imports:

    from textgen_jax import cli  # First: Ctrl-C during the imports below is one line too.
    cli.exit_on_ctrl_c()
"""

import json
import os
import re
import signal
import sys
from typing import TYPE_CHECKING, Any, Callable

from absl import app, flags, logging

from textgen_jax.errors import TextgenError, TrainingStopped

if TYPE_CHECKING:
  from textgen_jax.decoding import DecodeSettings


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

  app.run(quiet_main, flags_parser=_parse_flags)


def exit_on_ctrl_c(note: str = "") -> None:
  """From now on Ctrl-C (SIGINT) ends the process at once: one line on stderr, exit 130.

  Python's default raises KeyboardInterrupt wherever the main thread is: inside JAX's imports,
  XLA's compiler callbacks or garbage-collection hooks it printed 15-167-line tracebacks, was
  swallowed ("Exception ignored in _xla_gc_callback") or crashed the process. The training loop
  replaces this handler while it steps (a step and a checkpoint complete, then it stops and
  saves); outside it nothing is half-written by an exit (files are written whole, checkpoints
  committed by a rename), so exiting at once loses nothing. `note` ends the line.
  """
  message = f"error: interrupted (Ctrl-C){'; ' + note if note else ''}\n".encode()

  def exit_now(signum, frame):
    del signum, frame
    for stream in (sys.stdout, sys.stderr):
      try:
        stream.flush()
      except (OSError, ValueError):
        pass
    os.write(2, message)
    os._exit(128 + signal.SIGINT)  # The shell's code for a process ended by SIGINT.

  signal.signal(signal.SIGINT, exit_now)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, a bad flag (a --config field of the wrong type, a --config file that
  cannot be read or has no get_config) reported in one line as every other bad input is."""
  try:
    remaining = flags.FLAGS(argv)
    if "config" in flags.FLAGS:  # ml_collections defers a load error to the config's first use.
      flags.FLAGS.config.keys  # noqa: B018 (the attribute read is the point)
    return remaining
  except flags.Error as e:
    _exit_with_error(_one_line(str(e)))
  except Exception as e:  # pylint: disable=broad-except
    _exit_with_error(f"{_config_argument(argv)}: cannot load it ({_last_line(e)})")


def define_config_file(default: str, help_text: str) -> Any:
  """config_flags.DEFINE_config_file("config", default, help_text), with what it raises for a
  bad --config.<field> (it reads the command line while being defined: a field that does not
  exist, with ml_collections' suggestion) stopped in one line."""
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel

  try:
    return config_flags.DEFINE_config_file("config", default, help_text)
  except (AttributeError, KeyError) as e:
    message = str(e)
    mistake = re.search(r'Did you mean "(\w+)" instead of "(\w+)"', message)
    field = mistake.group(2) if mistake else next(iter(re.findall(r"(\w+)", message)), "")
    override = next(
      (
        arg.split("=")[0]
        for arg in sys.argv[1:]
        if arg.startswith("--config.") and f".{field}" in arg.split("=")[0]
      ),
      "--config",
    )
    _exit_with_error(
      f"{override}: no config field {field!r}"
      + (f"; did you mean {mistake.group(1)!r}?" if mistake else "")
    )
  except Exception as e:  # pylint: disable=broad-except
    _exit_with_error(f"{_config_argument(sys.argv)}: cannot load it ({_last_line(e)})")


def _config_argument(argv: list[str]) -> str:
  return next((arg for arg in argv[1:] if arg.startswith("--config=")), "--config")


def _last_line(error: Exception) -> str:
  """The last line of a many-line library message: where it says what went wrong."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return f"{type(error).__name__}: {lines[-1] if lines else ''}"


def _one_line(message: str) -> str:
  return " ".join(message.split())


def _exit_with_error(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def print_record(record: dict[str, Any], output: str | None = None) -> None:
  """One JSON line on stdout, also appended to the file `output` when given."""
  line = json.dumps(record)
  print(line)
  if output:
    try:
      with open(output, "a", encoding="utf-8") as f:
        f.write(line + "\n")
    except OSError as e:  # Checked before the work (check_output_file), but it may have changed.
      raise TextgenError(
        f"{output}: cannot append the result to it ({e.strerror}); it is the "
        "JSON line printed above"
      ) from None


def define_decode_flags(default_strategy: str | None = "greedy") -> Callable[[], "DecodeSettings"]:
  """Defines --strategy, --temperature, --top_k, --top_p, --beam_size, --length_alpha and
  --length_norm.

  Returns a function that reads them into a checked DecodeSettings once flags are parsed;
  with default_strategy=None the script picks the default, passed to that function.
  """
  from textgen_jax import decoding  # pylint: disable=import-outside-toplevel  # Keeps cli light.

  strategy = flags.DEFINE_enum(
    "strategy", default_strategy, list(decoding.STRATEGIES), "Decoding strategy."
  )
  temperature = flags.DEFINE_float("temperature", 1.0, "sample: softmax temperature (> 0).")
  top_k = flags.DEFINE_integer("top_k", 0, "sample: among the k most likely tokens (0: all).")
  top_p = flags.DEFINE_float("top_p", 1.0, "sample: within the nucleus of this mass, (0, 1].")
  beam_size = flags.DEFINE_integer("beam_size", 4, "beam: hypotheses kept per input.")
  length_alpha = flags.DEFINE_float(
    "length_alpha", 0.6, "beam: GNMT length normalisation exponent (0: none)."
  )
  length_norm = flags.DEFINE_enum(
    "length_norm",
    "gnmt",
    list(decoding.LENGTH_NORMS),
    "beam: divide log p by GNMT's ((5 + length) / 6) ** alpha, or by the length (average).",
  )

  def settings(default: str = "greedy") -> "DecodeSettings":
    result = decoding.DecodeSettings(
      strategy.value or default,
      temperature.value,
      top_k.value,
      top_p.value,
      beam_size.value,
      length_alpha.value,
      length_norm.value,
    )
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


def check_output_file(flag: str, path: str | None) -> None:
  """A one-line error naming `flag` (e.g. "--output") when the file `path` cannot be written:
  checked before the work whose result goes there (an evaluation can take an hour), not after
  it. Creates and truncates nothing (results are appended to it); None or "" passes."""
  if not path:
    return
  directory = os.path.dirname(os.path.abspath(path))
  if os.path.isdir(path):
    raise TextgenError(f"{flag}={path}: a directory, not a file")
  if not os.path.isdir(directory):
    raise TextgenError(
      f"{flag}={path}: "
      + (
        f"{directory} is not a directory"
        if os.path.lexists(directory)
        else f"no directory {directory}; create it first"
      )
    )
  writable = (
    os.access(path, os.W_OK) if os.path.exists(path) else os.access(directory, os.W_OK | os.X_OK)
  )
  if not writable:
    raise TextgenError(f"{flag}={path}: cannot write it (permission denied)")


def check_output_directory(flag: str, path: str) -> None:
  """A one-line error naming `flag` (e.g. "--out") when `path` cannot be, or be made, a directory
  to write files in: it is a file, a parent is a file, or where it is (or would be made) is not
  writable. Checked before the work; creates nothing."""
  path_abs = os.path.abspath(path)
  existing = path_abs  # The directory itself, or its nearest ancestor that exists.
  while not os.path.lexists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise TextgenError(
      f"{flag}={path}: "
      + (
        "exists and is not a directory"
        if existing == path_abs
        else f"{existing} is not a directory"
      )
    )
  if not os.access(existing, os.W_OK | os.X_OK):
    raise TextgenError(f"{flag}={path}: cannot write in {existing} (permission denied)")
