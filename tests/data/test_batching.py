"""Tests for textgen_jax.data.batching: encoding, buckets, padding, seeded resumable order."""

import collections

import numpy as np
import pytest

from textgen_jax.data import batching
from textgen_jax.data.tokenizers import CharTokenizer, WordTokenizer
from textgen_jax.data.vocab import EOS_ID, PAD_ID, UNK_ID, Vocabulary
from textgen_jax.errors import TextgenError

BATCH_SIZE = 4
MAX_LEN = 8
LENGTHS = batching.bucket_lengths(MAX_LEN, 3)


def make_examples(num_examples: int = 23, seed: int = 0):
  """Distinct (source, target) id arrays of varied lengths; source i starts with id 4 + i."""
  rng = np.random.default_rng(seed)
  sources, targets = [], []
  for i in range(num_examples):
    source_len, target_len = rng.integers(1, MAX_LEN + 1), rng.integers(1, MAX_LEN + 1)
    sources.append(np.concatenate([[4 + i], rng.integers(4, 40, source_len - 1)]).astype(np.int32))
    targets.append(rng.integers(4, 40, target_len).astype(np.int32))
  return sources, targets


def make_batches(seed: int = 0, shuffle: bool = True, num_examples: int = 23):
  sources, targets = make_examples(num_examples)
  return batching.BucketedBatches(sources, targets, BATCH_SIZE, LENGTHS, seed=seed, shuffle=shuffle)


def unpad(batch):
  """The real (source, target) examples of a batch, targets without their EOS."""
  examples = []
  for inputs, length, targets in zip(batch["inputs"], batch["input_lengths"], batch["targets"]):
    if length == 0:
      continue
    target_len = int(np.argmax(targets == EOS_ID))
    examples.append((tuple(inputs[:length].tolist()), tuple(targets[:target_len].tolist())))
  return examples


def assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])


def epoch_signature(batches):
  return [tuple(unpad(batch)) for batch in batches]


def test_encode_texts_truncates_and_counts():
  tokenizer = CharTokenizer()
  vocab = Vocabulary.build([tokenizer.tokenize("abcdef")])
  ids, num_cut = batching.encode_texts(["abc", "abcdef", "xa", ""], tokenizer, vocab, max_len=4)
  assert num_cut == 1
  assert [x.tolist() for x in ids] == [
    vocab.encode(list("abc")),
    vocab.encode(list("abcd")),
    [UNK_ID, vocab.encode(["a"])[0]],
    [],
  ]
  assert all(x.dtype == np.int32 for x in ids)


def test_encode_texts_too_long_error_names_the_example():
  tokenizer = WordTokenizer()
  vocab = Vocabulary.build([["a"]])
  with pytest.raises(TextgenError, match="source 2: source has 5 tokens.*max_len=3"):
    batching.encode_texts(
      ["a a", "a a a a a"], tokenizer, vocab, 3, too_long="error", what="source"
    )
  with pytest.raises(TextgenError, match="^f.tsv:9: target has 5 tokens.*max_len=3"):
    batching.encode_texts(
      ["a a", "a a a a a"],
      tokenizer,
      vocab,
      3,
      too_long="error",
      what="target",
      locations=["f.tsv:3", "f.tsv:9"],
    )
  ids, num_cut = batching.encode_texts(["a a", "a a a"], tokenizer, vocab, 3, too_long="error")
  assert num_cut == 0 and [len(x) for x in ids] == [2, 3]


def test_encode_texts_rejects_unknown_policy():
  with pytest.raises(TextgenError, match="too_long"):
    batching.encode_texts(["a"], CharTokenizer(), Vocabulary.build([["a"]]), 3, too_long="drop")


@pytest.mark.parametrize(
  "max_len, num_buckets", [(8, 3), (16, 4), (1, 1), (5, 1), (2, 10), (40, 4)]
)
def test_bucket_lengths(max_len, num_buckets):
  lengths = batching.bucket_lengths(max_len, num_buckets)
  assert lengths == sorted(set(lengths))
  assert lengths[-1] == max_len + 1
  assert 1 <= len(lengths) <= min(num_buckets, max_len + 1)
  assert lengths[0] >= 1


def test_bucket_lengths_are_evenly_spaced():
  assert batching.bucket_lengths(15, 4) == [4, 8, 12, 16]
  assert batching.bucket_lengths(2, 10) == [1, 2, 3]


def test_pad_batch():
  batch = batching.pad_batch(
    [np.array([5, 6, 7]), np.array([8])], [np.array([9]), np.array([])], batch_size=3, length=4
  )
  np.testing.assert_array_equal(batch["inputs"], [[5, 6, 7, 0], [8, 0, 0, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(batch["input_lengths"], [3, 1, 0])
  np.testing.assert_array_equal(
    batch["targets"], [[9, EOS_ID, 0, 0], [EOS_ID, 0, 0, 0], [0, 0, 0, 0]]
  )
  assert all(x.dtype == np.int32 for x in batch.values())


def test_batches_have_bucket_shapes_and_smallest_fitting_bucket():
  batches = make_batches()
  shapes = set()
  for batch in batches.epoch(0):
    length = batch["inputs"].shape[1]
    assert length in LENGTHS
    assert batch["inputs"].shape == batch["targets"].shape == (BATCH_SIZE, length)
    assert batch["input_lengths"].shape == (BATCH_SIZE,)
    shapes.add(batch["inputs"].shape)
    bucket = LENGTHS.index(length)
    for source, target in unpad(batch):
      needed = max(len(source), len(target) + 1)
      assert needed <= length
      assert bucket == 0 or needed > LENGTHS[bucket - 1]
  assert len(shapes) > 1  # The examples span several buckets.


def test_masks_and_filler_rows():
  num_filler_rows = 0
  for batch in make_batches().epoch(0):
    for inputs, length, targets in zip(batch["inputs"], batch["input_lengths"], batch["targets"]):
      if length == 0:
        num_filler_rows += 1
        assert np.all(inputs == PAD_ID) and np.all(targets == PAD_ID)
        continue
      assert np.all(inputs[:length] != PAD_ID) and np.all(inputs[length:] == PAD_ID)
      eos_positions = np.flatnonzero(targets == EOS_ID)
      assert len(eos_positions) == 1
      end = eos_positions[0]
      assert np.all(targets[:end] != PAD_ID) and np.all(targets[end + 1 :] == PAD_ID)
  assert num_filler_rows > 0  # 23 examples in batches of 4 cannot fill every row.


def test_every_example_appears_exactly_once_per_epoch():
  sources, targets = make_examples()
  batches = make_batches()
  expected = collections.Counter(
    (tuple(s.tolist()), tuple(t.tolist())) for s, t in zip(sources, targets)
  )
  for epoch in range(3):
    seen = collections.Counter(e for batch in batches.epoch(epoch) for e in unpad(batch))
    assert seen == expected
    assert len(batches.epoch(epoch)) == batches.num_batches


def test_same_seed_same_order_and_epochs_differ():
  first, second = make_batches(seed=3), make_batches(seed=3)
  for epoch in range(2):
    for a, b in zip(first.epoch(epoch), second.epoch(epoch), strict=True):
      assert_batches_equal(a, b)
  assert epoch_signature(first.epoch(0)) != epoch_signature(first.epoch(1))
  assert epoch_signature(first.epoch(0)) != epoch_signature(make_batches(seed=4).epoch(0))


def test_no_shuffle_is_the_same_every_epoch():
  batches = make_batches(shuffle=False)
  assert epoch_signature(batches.epoch(0)) == epoch_signature(batches.epoch(5))


def test_batch_at_is_consistent_across_fresh_instances():
  reference = make_batches(seed=1)
  num_steps = 3 * reference.num_batches + 2
  sequential = [reference.batch_at(step) for step in range(num_steps)]
  epochs = [b for epoch in range(4) for b in reference.epoch(epoch)]
  for step in range(num_steps):
    assert_batches_equal(sequential[step], epochs[step])
  # A resumed run builds a new instance and jumps straight to its step, in any order.
  for step in (num_steps - 1, 5, reference.num_batches, 0, 2 * reference.num_batches + 1):
    assert_batches_equal(make_batches(seed=1).batch_at(step), sequential[step])
  resumed = make_batches(seed=1)
  for step in (7, 2, 7, num_steps - 2, 1):
    assert_batches_equal(resumed.batch_at(step), sequential[step])


def test_iterate_from_continues_at_step():
  batches = make_batches(seed=2)
  iterator = batches.iterate_from(4)
  for step in range(4, 4 + batches.num_batches + 3):
    assert_batches_equal(next(iterator), make_batches(seed=2).batch_at(step))


def test_bucketed_batches_rejects_bad_input():
  sources, targets = make_examples(5)
  with pytest.raises(TextgenError, match="largest bucket"):
    batching.BucketedBatches(sources, targets, 2, [3, 4])
  with pytest.raises(TextgenError, match="same"):
    batching.BucketedBatches(sources, targets[:4], 2, LENGTHS)
  with pytest.raises(TextgenError, match="non-zero"):
    batching.BucketedBatches([], [], 2, LENGTHS)


def test_a_target_needs_room_for_its_eos():
  # A target of max_len tokens plus EOS fits the top bucket (max_len + 1) exactly.
  source, target = (
    np.arange(4, 4 + MAX_LEN, dtype=np.int32),
    np.arange(4, 4 + MAX_LEN, dtype=np.int32),
  )
  batch = batching.BucketedBatches([source], [target], 2, LENGTHS).batch_at(0)
  assert batch["targets"].shape[1] == MAX_LEN + 1
  assert batch["targets"][0, -1] == EOS_ID
  with pytest.raises(TextgenError):
    batching.BucketedBatches([source], [np.append(target, 5)], 2, LENGTHS)


def test_one_hot():
  ids = np.array([[0, 1, 4], [3, 0, 0]])
  rows = batching.one_hot(ids, 6)
  assert rows.shape == (2, 3, 6) and rows.dtype == np.float32
  np.testing.assert_array_equal(rows[0, 2], [0, 0, 0, 0, 1, 0])
  np.testing.assert_array_equal(rows[0, 1], [0, 1, 0, 0, 0, 0])
  np.testing.assert_array_equal(rows[ids == PAD_ID], 0.0)
  np.testing.assert_array_equal(rows.sum(-1), (ids != PAD_ID).astype(np.float32))


def test_split_indices():
  train, valid = batching.split_indices(20, 0.25, seed=0)
  assert len(valid) == 5 and len(train) == 15
  assert sorted(np.concatenate([train, valid]).tolist()) == list(range(20))
  again_train, again_valid = batching.split_indices(20, 0.25, seed=0)
  np.testing.assert_array_equal(train, again_train)
  np.testing.assert_array_equal(valid, again_valid)
  _, other_valid = batching.split_indices(20, 0.25, seed=1)
  assert valid.tolist() != other_valid.tolist()
  assert len(batching.split_indices(3, 0.01, seed=0)[1]) == 1  # At least one held out.


@pytest.mark.parametrize("num_examples, fraction", [(10, 0.0), (10, 1.0), (10, -0.1), (1, 0.5)])
def test_split_indices_rejects_bad_splits(num_examples, fraction):
  with pytest.raises(TextgenError):
    batching.split_indices(num_examples, fraction, seed=0)


def test_row_ranges_of_a_batch_make_up_the_whole_batch():
  """Hosts each pad their own rows of a step's global batch; together they are that batch."""
  for step in (0, 5, 13):
    whole = make_batches(seed=3).batch_at(step)
    batches = make_batches(seed=3)
    parts = [batches.batch_at(step, slice(row, row + 1)) for row in range(BATCH_SIZE)]
    for name, value in whole.items():
      np.testing.assert_array_equal(np.concatenate([part[name] for part in parts]), value)


def test_a_shuffle_seed_changes_the_batches_rows_but_not_their_lengths():
  """What a population member with its own data order reads: the sequence of buckets is the
  seed's, the examples filling each batch the shuffle seed's; a shuffle seed equal to the seed
  (or none) is the plain order."""
  sources, targets = make_examples(60)
  make = lambda **seeds: batching.BucketedBatches(sources, targets, BATCH_SIZE, LENGTHS, **seeds)
  plain, own, same = make(seed=3), make(seed=3, shuffle_seed=8), make(seed=3, shuffle_seed=3)
  rows_differ = 0
  for step in range(2 * plain.num_batches):
    a, b = plain.batch_at(step), own.batch_at(step)
    assert a["inputs"].shape == b["inputs"].shape
    rows_differ += unpad(a) != unpad(b)
    assert_batches_equal(a, same.batch_at(step))
  assert rows_differ > plain.num_batches  # Most batches hold other examples.
  expected = collections.Counter(
    (tuple(s.tolist()), tuple(t.tolist())) for s, t in zip(sources, targets)
  )
  assert collections.Counter(e for batch in own.epoch(1) for e in unpad(batch)) == expected


def test_grouped_split_never_puts_one_source_on_both_sides():
  rng = np.random.default_rng(0)
  keys = [f"source {k}" for k in rng.integers(0, 300, 2000)]  # ~300 sources, many repeated.
  train, valid = batching.grouped_split_indices(keys, 0.1, seed=3)
  assert sorted(np.concatenate([train, valid]).tolist()) == list(range(len(keys)))
  train_keys, valid_keys = {keys[i] for i in train}, {keys[i] for i in valid}
  assert not train_keys & valid_keys
  # Every example of a held-out source is held out: all its references travel together.
  assert sum(keys.count(k) for k in valid_keys) == len(valid)
  assert 200 <= len(valid) <= 200 + max(keys.count(k) for k in keys)
  again_train, again_valid = batching.grouped_split_indices(keys, 0.1, seed=3)
  np.testing.assert_array_equal(again_valid, valid)
  assert not np.array_equal(batching.grouped_split_indices(keys, 0.1, seed=4)[1], valid)


def test_grouped_split_keeps_a_group_for_training_and_needs_two_groups():
  train, valid = batching.grouped_split_indices(["a"] * 9 + ["b"], 0.5, seed=0)
  assert len(train) and len(valid)
  with pytest.raises(TextgenError, match="too few distinct sources"):
    batching.grouped_split_indices(["a"] * 5, 0.2, seed=0)


def test_resegmented_batches_move_up_a_bucket_and_are_a_function_of_seed_and_step():
  sources, targets = make_examples()

  def resegment(indices, step, seed):
    # Deterministic stand-in for subword sampling: every (step, seed) lengthens some examples.
    rng = np.random.default_rng((seed, step))
    grow = lambda x: np.concatenate([x, [5] * int(rng.integers(0, 3))])[:MAX_LEN]
    return [grow(sources[i]) for i in indices], [grow(targets[i]) for i in indices]

  make = lambda: batching.BucketedBatches(
    sources, targets, BATCH_SIZE, LENGTHS, seed=1, resegment=resegment
  )
  plain = batching.BucketedBatches(sources, targets, BATCH_SIZE, LENGTHS, seed=1)
  batches, fresh = make(), make()
  moved = 0
  for step in range(2 * plain.num_batches):
    batch, stored = batches.batch_at(step), plain.batch_at(step)
    for key in batch:
      np.testing.assert_array_equal(batch[key], fresh.batch_at(step)[key])  # Resumable.
    assert batch["inputs"].shape[1] in LENGTHS
    assert batch["inputs"].shape[1] >= stored["inputs"].shape[1]
    moved += batch["inputs"].shape[1] > stored["inputs"].shape[1]
    # The same examples in the same rows, each a lengthened copy of its stored ids.
    for (source, target), (old_source, old_target) in zip(unpad(batch), unpad(stored)):
      np.testing.assert_array_equal(source[: len(old_source)], old_source[: len(source)])
      np.testing.assert_array_equal(target[: len(old_target)], old_target[: len(target)])
    # One host's rows are the one-host batch's rows.
    half = batches.batch_at(step, slice(2, 4))
    np.testing.assert_array_equal(half["inputs"], batch["inputs"][2:4])
  assert moved > 0
