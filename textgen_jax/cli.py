"""Runs an experiment script's main: quiet library logs, one-line errors for bad input."""

import sys
from typing import Callable

from absl import app, logging

from textgen_jax.errors import TextgenError


def run(main: Callable[[list[str]], None]) -> None:
  """absl's app.run, with orbax's INFO logs hidden and TextgenError as one line on stderr."""

  def quiet_main(argv):
    logging.set_verbosity(logging.WARNING)
    try:
      main(argv)
    except TextgenError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)

  app.run(quiet_main)
