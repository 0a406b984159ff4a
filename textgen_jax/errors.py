"""User-facing errors: bad input, bad flags, missing or mismatched checkpoints."""


class TextgenError(Exception):
  """An error caused by the user's input; its message is the whole story."""


class TrainingStopped(Exception):
  """Training stopped on SIGTERM or SIGINT after saving a checkpoint; the message says how to
  resume. `exit_code` is the shell's convention for that signal (128 + its number)."""

  def __init__(self, message: str, exit_code: int):
    super().__init__(message)
    self.exit_code = exit_code
