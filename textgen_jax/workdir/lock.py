"""One training per workdir: an OS file lock on <workdir>/train.lock that names its holder."""

import fcntl
import os
import re
import socket
import stat


from textgen_jax.errors import TextgenError


LOCK_FILE = "train.lock"


# What lock_for_training writes in it. Only a file holding this is shown in messages: on a shared
# workdir train.lock may be anything, and its contents are not ours to print.
_HOLDER_RECORD = re.compile(r"host [A-Za-z0-9._-]{1,255} pid [0-9]{1,10}")


_HELD_LOCKS: dict[str, int] = {}  # Workdir (real path) -> the open lock file this process holds.


def lock_for_training(workdir: str) -> None:
  """Makes this process the workdir's one writer until `unlock` (or its exit): an OS file lock
  (flock) on <workdir>/train.lock, which records the holder's host and PID. A second training
  on the workdir fails at once naming the holder; the lock of a process that died went with it,
  so its leftover file is taken over (and said so). Readers (translate, generate, evaluate) never
  lock. On several hosts process 0 alone calls this. Holding it already is a no-op."""
  key = os.path.realpath(workdir)
  if key in _HELD_LOCKS:
    return
  path = os.path.join(workdir, LOCK_FILE)
  try:
    # Not through a symlink: one planted there would have us print and truncate its target
    # (O_NONBLOCK: nor wait on a FIFO planted there; it is refused below).
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
  except OSError as e:
    if os.path.islink(path):
      raise TextgenError(
        f"{path} is a symbolic link, not the workdir's lock file; remove it "
        "(the lock file is made anew) and run again"
      ) from None
    raise TextgenError(f"{path}: cannot open the workdir's lock ({e.strerror})") from None
  if not stat.S_ISREG(os.fstat(fd).st_mode):  # A FIFO or device: not ours to read or truncate.
    os.close(fd)
    raise TextgenError(
      f"{path} is not a regular file, not the workdir's lock file; remove it "
      "(the lock file is made anew) and run again"
    )
  content = os.read(fd, 200).decode("utf-8", "replace").strip()
  previous = content if _HOLDER_RECORD.fullmatch(content) else ""
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    os.close(fd)
    raise TextgenError(
      f"{workdir} is being trained by another process ({previous or 'unknown'}"
      f", holding {path}); wait for it to finish or use another --workdir"
    ) from None
  if previous:
    print(f"note: took over {path}, left by {previous}, which is no longer running")
  elif content:
    print(
      f"note: took over {path}, which held something other than a training's host and PID "
      "(not shown); it now names this one"
    )
  os.ftruncate(fd, 0)
  os.pwrite(fd, f"host {socket.gethostname()} pid {os.getpid()}\n".encode(), 0)
  _HELD_LOCKS[key] = fd


def unlock(workdir: str) -> None:
  """Releases the lock `lock_for_training` took (the file stays, empty: no holder)."""
  fd = _HELD_LOCKS.pop(os.path.realpath(workdir), None)
  if fd is not None:
    os.ftruncate(fd, 0)
    os.close(fd)  # Closing the file releases the flock.
