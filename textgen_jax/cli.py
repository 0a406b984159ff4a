"""Experiment scripts' shared parts: main with one-line errors for bad input, decoding flags."""

import sys
from typing import Callable

from absl import app, flags, logging

from textgen_jax import decoding
from textgen_jax.decoding import DecodeSettings
from textgen_jax.errors import TextgenError, TrainingStopped


def run(main: Callable[[list[str]], None]) -> None:
  """absl's app.run, with orbax's INFO logs hidden, TextgenError as one line on stderr, and a
  training run stopped by a signal leaving with its resume message and 128 + the signal."""

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
  """Defines --strategy, --temperature, --top_k, --top_p, --beam_size and --length_alpha.

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
                                    "beam: length normalisation exponent (0: none).")

  def settings(default: str = "greedy") -> DecodeSettings:
    result = DecodeSettings(strategy.value or default, temperature.value, top_k.value,
                            top_p.value, beam_size.value, length_alpha.value)
    try:
      result.check(max_len=1)
    except TextgenError as e:
      raise TextgenError(f"--{e}") from None  # The message starts with the setting's name.
    return result

  return settings
