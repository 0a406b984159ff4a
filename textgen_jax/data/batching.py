"""Encoding, length buckets, padding and seeded, resumable batch order.

Every batch has a fixed shape (batch_size, bucket_length) from a small set of buckets, so jit
compiles one program per bucket. Rows past the end of the data are all PAD (length 0), which
every loss and metric masks out. The order of batches is a pure function of (seed, step), so a
resumed run sees exactly the batches an uninterrupted run would have.

Batch keys:
  inputs:        int32 [B, L] source ids, PAD after each source's length.
  input_lengths: int32 [B]    number of real source tokens (0 for filler rows).
  targets:       int32 [B, L] target ids followed by EOS, then PAD.
"""

import dataclasses
from typing import Callable, Iterator, Sequence

import numpy as np

from textgen_jax.data.tokenizers import Tokenizer
from textgen_jax.data.vocab import EOS_ID, PAD_ID, Vocabulary
from textgen_jax.errors import TextgenError

Batch = dict[str, np.ndarray]


def encode_texts(
  texts: Sequence[str],
  tokenizer: Tokenizer,
  vocab: Vocabulary,
  max_len: int,
  too_long: str = "truncate",
  what: str = "sentence",
  locations: Sequence[str] | None = None,
) -> tuple[list[np.ndarray], int]:
  """Token ids per text (no BOS/EOS), cut to max_len tokens; returns (ids, number cut).

  Args:
    too_long: "truncate" keeps the first max_len tokens; "error" raises naming the example.
    locations: where each text came from ("file:line"), for that error.
  """
  if too_long not in ("truncate", "error"):
    raise TextgenError(f"data.too_long must be 'truncate' or 'error', got {too_long!r}")
  encoded, num_truncated = [], 0
  for index, text in enumerate(texts):
    ids = vocab.encode(tokenizer.tokenize(text))
    if len(ids) > max_len:
      if too_long == "error":
        where = locations[index] if locations else f"{what} {index + 1}"
        raise TextgenError(
          f"{where}: {what} has {len(ids)} tokens, more than "
          f"data.max_len={max_len}: {text[:60]!r} (set data.too_long='truncate' "
          "to cut such sentences)"
        )
      ids, num_truncated = ids[:max_len], num_truncated + 1
    encoded.append(np.asarray(ids, np.int32))
  return encoded, num_truncated


def bucket_lengths(max_len: int, num_buckets: int) -> list[int]:
  """Padded lengths, evenly spaced up to max_len + 1 (the +1 holds the target's EOS)."""
  top = max_len + 1
  num_buckets = max(1, min(num_buckets, top))
  return sorted({int(np.ceil(top * (i + 1) / num_buckets)) for i in range(num_buckets)})


def one_hot(ids: np.ndarray, vocab_size: int) -> np.ndarray:
  """The seed representation: [..., vocab_size] float32 one-hot rows (all-zero for PAD)."""
  rows = np.eye(vocab_size, dtype=np.float32)[ids]
  rows[..., PAD_ID] = 0.0
  return rows


def pad_batch(
  sources: Sequence[np.ndarray], targets: Sequence[np.ndarray], batch_size: int, length: int
) -> Batch:
  """Pads examples to [batch_size, length]; targets get EOS appended; filler rows are PAD."""
  inputs = np.full((batch_size, length), PAD_ID, np.int32)
  input_lengths = np.zeros((batch_size,), np.int32)
  padded_targets = np.full((batch_size, length), PAD_ID, np.int32)
  for row, (source, target) in enumerate(zip(sources, targets)):
    inputs[row, : len(source)] = source
    input_lengths[row] = len(source)
    padded_targets[row, : len(target)] = target
    padded_targets[row, len(target)] = EOS_ID
  return {"inputs": inputs, "input_lengths": input_lengths, "targets": padded_targets}


def padded_rows(num_rows: int, batch_size: int) -> int:
  """Rows to pad a partial inference batch to: the next power of two, at most batch_size, so
  any request compiles one of few shapes."""
  return min(batch_size, 1 << (num_rows - 1).bit_length())


def sorted_batches(
  sources: Sequence[np.ndarray], batch_size: int, buckets: Sequence[int]
) -> Iterator[tuple[np.ndarray, Batch]]:
  """Inference batches over `sources` sorted by length: (indices into sources, batch).

  Each batch is padded to its bucket length and to a power-of-two number of rows (at most
  batch_size), so a few thousand inputs take few compiled shapes. Targets are the sources
  themselves (with EOS), as a sentence VAE or LM reads them.
  """
  order = np.argsort([len(x) for x in sources], kind="stable")
  for start in range(0, len(order), batch_size):
    indices = order[start : start + batch_size]
    padded_size = padded_rows(len(indices), batch_size)
    longest = max(len(sources[i]) + 1 for i in indices)  # +1: the target's EOS.
    length = next((n for n in buckets if n >= longest), longest)
    chosen = [sources[i] for i in indices]
    yield indices, pad_batch(chosen, chosen, padded_size, length)


def split_indices(
  num_examples: int, valid_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """A seeded (train, valid) split of example indices."""
  if not 0.0 < valid_fraction < 1.0:
    raise TextgenError(f"data.valid_fraction must be in (0, 1), got {valid_fraction}")
  order = np.random.default_rng(seed).permutation(num_examples)
  num_valid = max(1, int(round(num_examples * valid_fraction)))
  if num_valid >= num_examples:
    raise TextgenError(f"too few examples ({num_examples}) to hold out a validation split")
  return np.sort(order[num_valid:]), np.sort(order[:num_valid])


def grouped_split_indices(
  keys: Sequence[str], valid_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """A seeded (train, valid) split that keeps examples with the same key on one side: whole
  groups (in a seeded order) are held out until they reach valid_fraction of the examples. For
  pairs keyed by their source, no source is both trained on and held out, and every reference of
  a held-out source is held out with it."""
  groups: dict[str, list[int]] = {}
  for index, key in enumerate(keys):
    groups.setdefault(key, []).append(index)
  members = list(groups.values())
  if len(members) < 2:
    raise TextgenError(
      f"too few distinct sources ({len(members)}) to hold out a validation "
      "split by source (data.valid_split='grouped')"
    )
  wanted, _ = split_indices(len(keys), valid_fraction, seed)  # Checks the fraction and count.
  num_valid = len(keys) - len(wanted)
  valid = []
  for group in np.random.default_rng(seed).permutation(len(members)):
    if len(valid) >= num_valid:
      break
    valid.extend(members[group])
  if len(valid) >= len(keys):  # One group holds nearly everything: keep one group for training.
    valid = valid[: -len(members[group])]
  valid_set = set(valid)
  return (
    np.array([i for i in range(len(keys)) if i not in valid_set], np.int64),
    np.sort(np.array(valid, np.int64)),
  )


# (example indices, step, seed) -> those examples' sources and targets segmented anew for this
# step (subword regularisation), each no longer than the stored ones' data.max_len.
Resegment = Callable[[np.ndarray, int, int], tuple[list[np.ndarray], list[np.ndarray]]]


@dataclasses.dataclass
class BucketedBatches:
  """Fixed-shape batches over bucketed examples, in an order fixed by (seed, epoch).

  `seed` shuffles each bucket's examples and then the order of the batches; `shuffle_seed`, if
  set and different, shuffles each bucket's examples instead, so which examples fill each batch
  changes while the sequence of buckets (the batches' lengths) stays `seed`'s.

  With `resegment`, the examples of each training batch are grouped by their stored lengths as
  always, then segmented anew for the step (seeded by the shuffle seed and the step, so a
  resumed run sees the same draws) and padded to the smallest bucket that holds them all: the
  batch may move up a bucket, never past the largest, so the compiled shapes stay the buckets.
  """

  sources: Sequence[np.ndarray]
  targets: Sequence[np.ndarray]
  batch_size: int
  buckets: Sequence[int]  # Padded lengths (bucket_lengths).
  seed: int = 0
  shuffle_seed: int | None = None
  shuffle: bool = True
  resegment: Resegment | None = None  # Training batches only (batch_at).

  def __post_init__(self):
    if len(self.sources) != len(self.targets) or not self.sources:
      raise TextgenError("batching needs the same, non-zero number of sources and targets")
    needed = [max(len(s), len(t) + 1) for s, t in zip(self.sources, self.targets)]
    if max(needed) > self.buckets[-1]:
      raise TextgenError(
        f"an example needs length {max(needed)} > largest bucket {self.buckets[-1]}"
      )
    bucket_of = np.searchsorted(np.asarray(self.buckets), needed)
    self._members = [np.flatnonzero(bucket_of == b) for b in range(len(self.buckets))]
    self._epoch, self._epoch_plan = None, None

  @property
  def num_batches(self) -> int:
    """Batches per epoch; the same every epoch."""
    return sum(-(-len(b) // self.batch_size) for b in self._members)

  def _plan(self, epoch: int) -> list[tuple[int, np.ndarray]]:
    """The epoch's batches as (bucket, example indices), shuffled by (seed, epoch)."""
    rng = np.random.default_rng((self.seed, epoch))
    chunks = self._chunks(rng)
    if self.shuffle:
      order = rng.permutation(len(chunks))  # Drawn after the shuffles, as it always was.
      if self.shuffle_seed is not None and self.shuffle_seed != self.seed:
        chunks = self._chunks(np.random.default_rng((self.shuffle_seed, epoch)))
      chunks = [chunks[i] for i in order]
    return chunks

  def _chunks(self, rng: np.random.Generator) -> list[tuple[int, np.ndarray]]:
    """(bucket, example indices) per batch, bucket by bucket, each bucket shuffled by rng."""
    chunks = []
    for bucket, members in enumerate(self._members):
      if self.shuffle:
        members = rng.permutation(members)
      for start in range(0, len(members), self.batch_size):
        chunks.append((bucket, members[start : start + self.batch_size]))
    return chunks

  def _pad(self, bucket: int, members: np.ndarray, row_slice: slice) -> Batch:
    start, stop, _ = row_slice.indices(self.batch_size)
    chosen = members[start:stop]
    return pad_batch(
      [self.sources[i] for i in chosen],
      [self.targets[i] for i in chosen],
      stop - start,
      self.buckets[bucket],
    )

  def epoch(self, epoch: int) -> list[Batch]:
    return [self._pad(bucket, members, slice(None)) for bucket, members in self._plan(epoch)]

  def batch_at(self, step: int, row_slice: slice = slice(None)) -> Batch:
    """The batch seen at training step `step` (0-based), counting epochs from 0.

    `row_slice` picks a contiguous part of the global batch: one host of several pads only the rows
    its devices hold, and the parts of all hosts make up the one-host batch exactly.
    """
    epoch, index = divmod(step, self.num_batches)
    if epoch != self._epoch:
      self._epoch, self._epoch_plan = epoch, self._plan(epoch)
    if self.resegment is None:
      return self._pad(*self._epoch_plan[index], row_slice)
    _, members = self._epoch_plan[index]
    seed = self.seed if self.shuffle_seed is None else self.shuffle_seed
    sources, targets = self.resegment(members, step, seed)
    # Every row's draw decides the length, on every host alike, though each pads its own rows.
    needed = max(max(len(s), len(t) + 1) for s, t in zip(sources, targets))
    length = next((n for n in self.buckets if n >= needed), None)
    if length is None:
      raise TextgenError(f"a resegmented example needs length {needed} > {self.buckets[-1]}")
    start, stop, _ = row_slice.indices(self.batch_size)
    return pad_batch(sources[start:stop], targets[start:stop], stop - start, length)

  def iterate_from(self, step: int) -> Iterator[Batch]:
    while True:
      yield self.batch_at(step)
      step += 1
