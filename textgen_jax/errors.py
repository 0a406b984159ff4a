"""User-facing errors: bad input, bad flags, missing or mismatched checkpoints."""


class TextgenError(Exception):
  """An error caused by the user's input; its message is the whole story."""
