"""TensorBoard event files, written without TensorFlow or PyTorch: `tensorboard --logdir runs`.

An event file is a sequence of TFRecords (length, masked CRC-32C of the length, data, masked
CRC-32C of the data), each holding one serialized `tensorflow.Event` protocol buffer. The few
messages written here (a scalar's `Summary.Value.simple_value`; text as the text plugin's
string tensor) are encoded by hand below, field numbers from tensorflow/core/util/event.proto,
framework/summary.proto and framework/tensor.proto.

metrics.jsonl stays the record of a run; the events repeat its numbers for TensorBoard. Like it,
the file is cut back to the resumed step when a run resumes, so no step appears twice.
"""

import os
import struct
import time
from collections.abc import Iterator, Mapping
from typing import Any

from textgen_jax.errors import TextgenError
from textgen_jax.files import write_atomically

EVENT_FILE = "events.out.tfevents.textgen-jax"  # TensorBoard reads files named *tfevents*.


def _crc32c_table() -> list[int]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)  # Castagnoli's polynomial, reflected.
    table.append(crc)
  return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record(data: bytes) -> bytes:
  """One TFRecord around `data`."""
  length = struct.pack("<Q", len(data))
  return (
    length + struct.pack("<I", _masked_crc(length)) + data + struct.pack("<I", _masked_crc(data))
  )


# ---- Protocol buffer encoding: the wire format's three kinds used here ----------------------


def _varint(value: int) -> bytes:
  value &= (1 << 64) - 1  # int64 fields: negatives as two's complement, ten bytes.
  out = bytearray()
  while True:
    byte, value = value & 0x7F, value >> 7
    out.append(byte | (0x80 if value else 0))
    if not value:
      return bytes(out)


def _bytes_field(number: int, payload: bytes) -> bytes:
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _event(step: int, wall_time: float, what: bytes) -> bytes:
  """Event{wall_time = 1 (double), step = 2 (int64), what}."""
  return _varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _varint(2 << 3) + _varint(step) + what


def file_version_event(wall_time: float) -> bytes:
  return _event(0, wall_time, _bytes_field(3, b"brain.Event:2"))


def scalar_event(step: int, wall_time: float, values: Mapping[str, float]) -> bytes:
  """Summary{value = 1: Value{tag = 1, simple_value = 2 (float)}} per tag."""
  summary = b"".join(
    _bytes_field(1, _bytes_field(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", value))
    for tag, value in values.items()
  )
  return _event(step, wall_time, _bytes_field(5, summary))


def text_event(step: int, wall_time: float, tag: str, text: str) -> bytes:
  """A string tensor (TensorProto{dtype = 1: DT_STRING (7), tensor_shape = 2: scalar,
  string_val = 8}) in a Value whose metadata (9) names the text plugin (plugin_data = 1:
  plugin_name = 1)."""
  tensor = _varint(1 << 3) + _varint(7) + _bytes_field(2, b"") + _bytes_field(8, text.encode())
  metadata = _bytes_field(1, _bytes_field(1, b"text"))
  value = _bytes_field(1, tag.encode()) + _bytes_field(9, metadata) + _bytes_field(8, tensor)
  return _event(step, wall_time, _bytes_field(5, _bytes_field(1, value)))


# ---- Reading back (for cutting a file at a resumed step) ------------------------------------


def read_records(path: str) -> tuple[list[bytes], bool]:
  """(the records' data, whether the file ends in a record cut short: a crash while writing)."""
  with open(path, "rb") as f:
    content = f.read()
  records, offset = [], 0
  while offset < len(content):
    if len(content) - offset < 12:
      return records, True
    (length,) = struct.unpack_from("<Q", content, offset)
    end = offset + 12 + length + 4
    if end > len(content):
      return records, True
    header_crc, data = content[offset + 8 : offset + 12], content[offset + 12 : end - 4]
    if struct.unpack("<I", header_crc)[0] != _masked_crc(content[offset : offset + 8]) or (
      struct.unpack("<I", content[end - 4 : end])[0] != _masked_crc(data)
    ):
      if end == len(content):  # The last record, torn mid-write.
        return records, True
      raise TextgenError(f"{path}: a damaged record at byte {offset}; remove the file")
    records.append(data)
    offset = end
  return records, False


def _fields(message: bytes) -> Iterator[tuple[int, int, Any]]:
  """(field number, wire type, value) of a serialized message's fields."""
  offset = 0

  def varint() -> int:
    nonlocal offset
    value, shift = 0, 0
    while True:
      byte = message[offset]
      offset += 1
      value |= (byte & 0x7F) << shift
      shift += 7
      if not byte & 0x80:
        return value

  while offset < len(message):
    key = varint()
    number, wire = key >> 3, key & 7
    if wire == 0:
      value = varint()
    elif wire == 1:
      value, offset = message[offset : offset + 8], offset + 8
    elif wire == 2:
      length = varint()
      value, offset = message[offset : offset + length], offset + length
    elif wire == 5:
      value, offset = message[offset : offset + 4], offset + 4
    else:
      raise ValueError(f"wire type {wire}")
    yield number, wire, value


def event_step(data: bytes) -> int:
  """An event's step (0 when absent, as protocol buffers default)."""
  for number, wire, value in _fields(data):
    if number == 2 and wire == 0:
      return value - (1 << 64) if value >= 1 << 63 else value
  return 0


class EventWriter:
  """Appends TensorBoard events to <directory>/EVENT_FILE (when enabled: process 0 alone)."""

  def __init__(self, directory: str, enabled: bool = True):
    self.path = os.path.join(directory, EVENT_FILE)
    self.enabled = enabled

  def _append(self, data: bytes) -> None:
    if not self.enabled:
      return
    new = not os.path.exists(self.path)
    with open(self.path, "ab") as f:
      if new:
        f.write(record(file_version_event(time.time())))
      f.write(record(data))

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    if values:
      self._append(scalar_event(step, time.time(), values))

  def text(self, step: int, tag: str, text: str) -> None:
    self._append(text_event(step, time.time(), tag, text))

  def truncate_after(self, step: int) -> None:
    """Drops events past `step` (a resumed run writes them again) and a torn last record."""
    if not self.enabled or not os.path.exists(self.path):
      return
    records, torn = read_records(self.path)
    kept = [data for data in records if event_step(data) <= step]
    if torn or len(kept) != len(records):
      write_atomically(self.path, b"".join(record(data) for data in kept))
