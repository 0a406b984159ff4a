"""User-facing errors: bad input, bad flags, missing or mismatched checkpoints."""

import functools
import sys
from typing import Callable


class TextgenError(Exception):
  """An error caused by the user's input; its message is the whole story."""


def exit_on_user_error(main: Callable) -> Callable:
  """Wraps a CLI entry point so a TextgenError prints one line, not a traceback."""

  @functools.wraps(main)
  def wrapped(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except TextgenError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)

  return wrapped
