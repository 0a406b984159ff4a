"""Settings that are either Python numbers or, for a population member, traced values."""

from typing import Any


def is_static_zero(value: Any) -> bool:
  """Whether a setting is a Python zero (a switched-off feature whose code can be skipped). A
  population member's traced value never is: its code path is the general one, which at zero
  computes the same."""
  return isinstance(value, (int, float)) and value == 0
