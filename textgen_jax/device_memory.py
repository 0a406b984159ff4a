"""Batches too large for the device: a clear error suggesting a smaller batch, not an XLA crash.

Before a compiled program first runs, XLA's memory analysis says how many bytes it needs
(arguments, outputs and temporaries); that is compared with the device's free memory (host
memory for the CPU backend). An allocation failure while running is caught and explained too.
"""

import contextlib
from typing import Any, Callable, Iterator

import jax

from textgen_jax.errors import TextgenError


def free_bytes(device: jax.Device) -> int | None:
  """Free memory on the device, or None if the backend does not say."""
  stats = device.memory_stats()
  if stats and "bytes_limit" in stats:
    return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
  if device.platform == "cpu":
    try:
      with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
          if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    except OSError:
      return None
  return None


def program_bytes(compiled: Any) -> int | None:
  """Arguments + outputs + temporaries of a compiled program, from XLA's memory analysis."""
  try:
    analysis = compiled.memory_analysis()
  except (NotImplementedError, jax.errors.JaxRuntimeError):
    return None
  if analysis is None:
    return None
  return int(
    analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes
  )


def _size(num_bytes: int) -> str:
  return f"{num_bytes / 2**30:.2f} GiB" if num_bytes >= 2**30 else f"{num_bytes / 2**20:.1f} MiB"


def _too_large(what: str, batch_size: int, flag: str, detail: str) -> TextgenError:
  return TextgenError(
    f"{what} a batch of {batch_size} does not fit in device memory ({detail}); use a smaller {flag}"
  )


def check_fits(
  compiled: Any, batch_size: int, what: str, flag: str, device: jax.Device | None = None
) -> None:
  """Raises TextgenError if the compiled program needs more memory than the device has free."""
  needed, free = program_bytes(compiled), free_bytes(device or jax.devices()[0])
  if needed is None or free is None or needed <= free:
    return
  suggestion = max(1, int(batch_size * free / needed))
  raise _too_large(
    what,
    batch_size,
    flag,
    f"it needs {_size(needed)} and {_size(free)} is free; about {suggestion} would fit",
  )


@contextlib.contextmanager
def out_of_memory_as_error(what: str, batch_size: int, flag: str) -> Iterator[None]:
  """Turns XLA's allocation failure into a TextgenError suggesting a smaller batch."""
  try:
    yield
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" not in str(e) and "Out of memory" not in str(e):
      raise
    raise _too_large(what, batch_size, flag, str(e).splitlines()[0][:200]) from None


class CheckedJit:
  """A jitted function compiled once per argument shapes, each executable checked against the
  device's free memory before it first runs.

    translate = CheckedJit(jax.jit(fn, static_argnames="settings"), "translating", "--batch_size")
    tokens = translate(params, inputs, num_rows=len(inputs), settings=settings)
  """

  def __init__(self, jitted: Callable[..., Any], what: str, flag: str):
    self.jitted, self.what, self.flag = jitted, what, flag
    self._compiled = {}

  def __call__(self, *args: Any, num_rows: int, **static: Any) -> Any:
    """Runs the program for these args; `num_rows` (the batch size) is for error messages."""
    leaves, treedef = jax.tree.flatten(args)
    key = (
      treedef,
      tuple((getattr(x, "shape", None), str(getattr(x, "dtype", type(x)))) for x in leaves),
      tuple(sorted(static.items())),
    )
    if key not in self._compiled:
      compiled = self.jitted.lower(*args, **static).compile()
      check_fits(compiled, num_rows, self.what, self.flag)
      self._compiled[key] = compiled
    with out_of_memory_as_error(self.what, num_rows, self.flag):
      return self._compiled[key](*args)
