"""Small files written whole or not at all: a crash or a full disk leaves the old file or the new
one, never half of one (a temporary file beside it, then one rename)."""

import os


def write_atomically(path: str, text: str) -> None:
  tmp_path = path + ".tmp"
  with open(tmp_path, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp_path, path)
