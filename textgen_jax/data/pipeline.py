"""A run's data, the same for every family: read the files, hold out a split, make the
tokenizers and vocabularies from the training split alone, encode, and batch in length buckets.

    data = read_data(config, family.reader, family.vocabulary_files)

An example is a tuple of texts, one per column (seq2seq: source and target; the VAE: one
sentence); each column has a vocabulary (and a tokenizer, the same one for a joint subword
vocabulary). The model reads the first column and predicts the last.
"""

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from textgen_jax import config as config_lib
from textgen_jax.data import batching, readers, tokenizers
from textgen_jax.data.tokenizers import Tokenizer, make_tokenizer
from textgen_jax.data.vocab import Vocabulary
from textgen_jax.errors import TextgenError


@dataclasses.dataclass(frozen=True)
class TextData:
  """A run's data, read, tokenised, encoded and batched."""

  tokenizers: tuple[Tokenizer, ...]  # One per column (the same one for a joint vocabulary).
  vocabularies: dict[str, Vocabulary]  # Vocabulary file -> vocabulary, one per column in order.
  train_batches: batching.BucketedBatches
  valid_batches: list[batching.Batch]
  valid_examples: list[Any]  # As the reader returned them (pairs, sentences), for generation.


def column(examples: Sequence[Any], index: int, num_columns: int) -> list[str]:
  """One column's texts; a one-column reader returns the texts themselves."""
  return list(examples) if num_columns == 1 else [example[index] for example in examples]


def _encode(
  examples: Sequence[Any],
  locations: Sequence[str],
  column_tokenizers: Sequence[Tokenizer],
  vocabularies: dict[str, Vocabulary],
  columns: Sequence[str],
  data_cfg: ml_collections.ConfigDict,
  split: str,
) -> list[list[np.ndarray]]:
  """Token ids per column; sentences over data.max_len are cut (counted) or an error."""
  ids, cut = [], []
  for index, (what, tokenizer, vocab) in enumerate(
    zip(columns, column_tokenizers, vocabularies.values())
  ):
    encoded, num_cut = batching.encode_texts(
      column(examples, index, len(columns)),
      tokenizer,
      vocab,
      data_cfg.max_len,
      data_cfg.too_long,
      what,
      locations,
    )
    ids.append(encoded)
    cut.append(num_cut)
  if any(cut):
    counts = (
      f"{cut[0]} of {len(examples)} {columns[0]}s"
      if len(columns) == 1
      else " and ".join(f"{n} {what}s" for n, what in zip(cut, columns))
      + f" of {len(examples)} examples"
    )
    print(f"{split}: truncated {counts} to data.max_len={data_cfg.max_len} tokens")
  return ids


def read_splits(
  config: ml_collections.ConfigDict, reader: readers.Reader, tokenizer: Tokenizer
) -> readers.Splits:
  """The training and held-out examples exactly as a run with this config draws them (a
  grouped split keys each example by its normalised first column: a pair's source)."""
  first_column = lambda example: example if isinstance(example, str) else example[0]
  return readers.read_splits(
    config.data,
    config_lib.data_seed(config),
    reader,
    group_key=lambda example: tokenizer.normalize(first_column(example)),
  )


def read_data(
  config: ml_collections.ConfigDict, reader: readers.Reader, vocabulary_files: dict[str, str]
) -> TextData:
  """Reads and splits the data, builds one vocabulary per column from the training split, and
  batches both splits. vocabulary_files: file name -> what its column holds ("source")."""
  data_cfg = config.data
  seed = config_lib.data_seed(config)  # Shared by the members of a population.
  columns = list(vocabulary_files.values())
  if data_cfg.tokenizer == "sentencepiece":
    # The split comes first (the model sees training text only); its grouping key needs only
    # normalised text, which the whitespace tokenizer gives as the subword one does.
    splits = read_splits(config, reader, make_tokenizer("whitespace", data_cfg.lowercase))
    texts = [column(splits.train, index, len(columns)) for index in range(len(columns))]
    column_tokenizers = train_subwords(texts, columns, data_cfg)
    vocabularies = {
      filename: Vocabulary.from_tokens(tokenizer.pieces(), data_cfg.vocab_size_multiple)
      for filename, tokenizer in zip(vocabulary_files, column_tokenizers)
    }
  else:
    tokenizer = make_tokenizer(data_cfg.tokenizer, data_cfg.lowercase)
    column_tokenizers = (tokenizer,) * len(columns)
    splits = read_splits(config, reader, tokenizer)
    vocabularies = {
      filename: Vocabulary.build(
        [tokenizer.tokenize(text) for text in column(splits.train, index, len(columns))],
        data_cfg.min_count,
        data_cfg.max_size or None,
        data_cfg.vocab_size_multiple,
      )
      for index, filename in enumerate(vocabulary_files)
    }
  if data_cfg.train_examples:
    splits = training_subset(splits, data_cfg.train_examples, seed)
  sizes = ", ".join(f"{len(vocab)} {what}" for what, vocab in zip(columns, vocabularies.values()))
  print(
    f"{len(splits.train)} training and {len(splits.valid)} validation examples; "
    f"vocabularies: {sizes} ({data_cfg.tokenizer} tokens)"
  )
  lengths = batching.bucket_lengths(data_cfg.max_len, data_cfg.num_buckets)
  train_ids = _encode(
    splits.train,
    splits.train_locations,
    column_tokenizers,
    vocabularies,
    columns,
    data_cfg,
    "train",
  )
  valid_ids = _encode(
    splits.valid,
    splits.valid_locations,
    column_tokenizers,
    vocabularies,
    columns,
    data_cfg,
    "valid",
  )
  batch_size = capped_batch_size(
    data_cfg.batch_size, len(splits.train), config.parallel.num_devices or jax.device_count()
  )
  resegment = None
  if data_cfg.tokenizer == "sentencepiece" and data_cfg.subword_sampling:
    texts = [column(splits.train, index, len(columns)) for index in range(len(columns))]
    resegment = subword_resegmenter(
      texts, train_ids, column_tokenizers, list(vocabularies.values()), data_cfg
    )
  train_batches = batching.BucketedBatches(
    train_ids[0],
    train_ids[-1],
    batch_size,
    lengths,
    seed,
    config_lib.shuffle_seed(config),
    resegment=resegment,
  )
  valid_batches = batching.BucketedBatches(
    valid_ids[0], valid_ids[-1], data_cfg.batch_size, lengths, shuffle=False
  ).epoch(0)
  if config.train.max_eval_batches:
    valid_batches = valid_batches[: config.train.max_eval_batches]
  return TextData(column_tokenizers, vocabularies, train_batches, valid_batches, list(splits.valid))


def training_subset(splits: readers.Splits, num_examples: int, seed: int) -> readers.Splits:
  """The splits with a seeded random `num_examples` of the training examples (in file order):
  a prefix of one permutation, so a smaller subset lies inside a larger one."""
  if num_examples > len(splits.train):
    raise TextgenError(
      f"--config.data.train_examples={num_examples}: the training split has only "
      f"{len(splits.train)} examples"
    )
  # (seed, 7): a stream of its own, apart from the split's and the batch order's (seed alone).
  chosen = np.sort(np.random.default_rng((seed, 7)).permutation(len(splits.train))[:num_examples])
  return dataclasses.replace(
    splits,
    train=[splits.train[i] for i in chosen],
    train_locations=[splits.train_locations[i] for i in chosen],
  )


def subword_resegmenter(
  texts: Sequence[Sequence[str]],
  ids: Sequence[Sequence[np.ndarray]],
  column_tokenizers: Sequence[tokenizers.SentencePieceTokenizer],
  vocabularies: Sequence[Vocabulary],
  data_cfg: ml_collections.ConfigDict,
) -> batching.Resegment:
  """Subword regularisation: training examples segmented anew at each step, column by column
  (texts, ids: each column's training texts and their stored ids). A draw longer than
  data.max_len keeps the example's stored segmentation (cut to fit already) for that column; a
  one-column example (the VAE's) is one draw, its input and target alike."""
  alpha, max_len = data_cfg.subword_sampling, data_cfg.max_len

  def resegment(indices: np.ndarray, step: int, seed: int):
    columns = []
    for index, (tokenizer, vocab) in enumerate(zip(column_tokenizers, vocabularies)):
      draw_seed = int(np.random.SeedSequence((seed, step, index)).generate_state(1)[0])
      pieces = tokenizer.sample([texts[index][i] for i in indices], alpha, draw_seed)
      drawn = [np.asarray(vocab.encode(p), np.int32) for p in pieces]
      columns.append([d if len(d) <= max_len else ids[index][i] for d, i in zip(drawn, indices)])
    return columns[0], columns[-1]

  return resegment


def train_subwords(
  texts: Sequence[Sequence[str]], columns: Sequence[str], data_cfg: ml_collections.ConfigDict
) -> tuple[tokenizers.SentencePieceTokenizer, ...]:
  """One SentencePiece model per column (texts: each column's training texts), the same one
  for every column with a joint vocabulary (and for a single column)."""
  train = functools.partial(
    tokenizers.train_sentencepiece,
    vocab_size=data_cfg.vocab_size,
    model_type=data_cfg.subword_model,
    lowercase=data_cfg.lowercase,
  )
  if data_cfg.subword_vocabularies == "joint" or len(columns) == 1:
    return (train([text for column_texts in texts for text in column_texts]),) * len(columns)
  return tuple(
    train(column_texts, file=f"{what}_{tokenizers.SENTENCEPIECE_FILE}")
    for what, column_texts in zip(columns, texts)
  )


def capped_batch_size(batch_size: int, num_examples: int, num_devices: int) -> int:
  """data.batch_size, or fewer rows (said) when the training data has fewer examples: a batch
  larger than the data is padded with empty rows that cost as much as real ones (5x slower
  steps were seen). Rounded up to a multiple of the devices, which split every batch."""
  capped = -(-num_examples // num_devices) * num_devices
  if capped >= batch_size:
    return batch_size
  print(
    f"data.batch_size={batch_size} is more than the {num_examples} training examples: "
    f"batches hold {capped} rows (the whole set) instead"
  )
  return capped
