"""Tests for textgen_jax.device_memory: batches too large for the device are clear errors."""

import sys

import jax
import jax.numpy as jnp
import pytest

from textgen_jax import device_memory
from textgen_jax.errors import TextgenError


def test_free_bytes_is_known_on_this_backend():
  """The backend's own figure (GPU, TPU), or on a Linux CPU what /proc/meminfo has available."""
  device = jax.devices()[0]
  free = device_memory.free_bytes(device)
  if device.platform == "cpu" and sys.platform.startswith("linux"):
    with open("/proc/meminfo", encoding="ascii") as f:
      total = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    assert 0 < free <= total
  else:
    assert free is not None and free > 0


def test_checked_jit_runs_and_compiles_once_per_shape():
  compiles = []

  def double(x):
    compiles.append(x.shape)
    return 2 * x

  checked = device_memory.CheckedJit(jax.jit(double), "doubling", "--batch_size")
  assert float(checked(jnp.ones(3), num_rows=3).sum()) == 6.0
  checked(jnp.zeros(3), num_rows=3)
  checked(jnp.ones(5), num_rows=5)
  assert compiles == [(3,), (5,)]


def test_a_program_larger_than_free_memory_is_a_clear_error_naming_the_flag(monkeypatch):
  checked = device_memory.CheckedJit(jax.jit(lambda x: jnp.outer(x, x)), "decoding", "--batch_size")
  needed = 4 * 1000 * 1000  # The [1000, 1000] float32 output alone.
  monkeypatch.setattr(device_memory, "free_bytes", lambda device: needed // 4)
  with pytest.raises(
    TextgenError,
    match=r"a batch of 1000 does not fit.*needs 3.8 MiB and "
    r"1.0 MiB is free; about 2\d\d would fit\); use a smaller --batch_size",
  ):
    checked(jnp.ones(1000), num_rows=1000)
  monkeypatch.setattr(device_memory, "free_bytes", lambda device: 100 * needed)
  assert checked(jnp.ones(1000), num_rows=1000).shape == (1000, 1000)


def test_allocation_failure_while_running_becomes_a_clear_error():
  with pytest.raises(TextgenError, match="a batch of 64 does not fit.*use a smaller --batch"):
    with device_memory.out_of_memory_as_error("decoding", 64, "--batch_size"):
      raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 1 GiB")
  with pytest.raises(jax.errors.JaxRuntimeError, match="INTERNAL"):
    with device_memory.out_of_memory_as_error("decoding", 64, "--batch_size"):
      raise jax.errors.JaxRuntimeError("INTERNAL: something else")
