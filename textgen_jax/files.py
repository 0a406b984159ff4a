"""Small files written whole or not at all: a crash or a full disk leaves the old file or the new
one, never half of one (a temporary file beside it, then one rename); and read back as text, a
file that is not UTF-8 text or cannot be read being a one-line error naming it."""

import contextlib
import os
import tempfile

from textgen_jax.errors import TextgenError


def write_atomically(path: str, text: str | bytes) -> None:
  """Replaces `path` by a file holding `text` (UTF-8; bytes as they are), with the permissions a
  new file gets.

  The temporary is created exclusively under an unpredictable name (mkstemp): a fixed name such
  as <path>.tmp, planted as a symlink by another user of a shared workdir, made the write
  overwrite the symlink's target. It is removed if the write fails.
  """
  directory, name = os.path.split(path)
  fd, tmp_path = tempfile.mkstemp(dir=directory or ".", prefix=f"{name}.", suffix=".tmp")
  try:
    binary = isinstance(text, bytes)
    with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
      os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp's 0600 would hide it from the group.
      f.write(text)
    os.replace(tmp_path, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp_path)
    raise


def _umask() -> int:
  """This process's umask, read without changing it (os.umask sets it, racing other threads)."""
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except (OSError, ValueError):
    pass
  return 0o022  # The usual default, where /proc does not say (not Linux, Linux < 4.7).


def read_text(path: str) -> str:
  """The text of a small UTF-8 file. One that is not UTF-8 or cannot be read (a directory, no
  permission) is a one-line TextgenError naming it; FileNotFoundError is left to the caller,
  which knows what a missing file means."""
  try:
    with open(path, encoding="utf-8") as f:
      return f.read()
  except FileNotFoundError:
    raise
  except UnicodeDecodeError as e:
    raise TextgenError(
      f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset "
      f"{e.start}); was it saved in another encoding?"
    ) from None
  except OSError as e:
    raise TextgenError(f"{path}: cannot read it ({e.strerror})") from None
