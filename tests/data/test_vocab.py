"""Tests for textgen_jax.data.vocab: specials, frequency cut-offs, UNK, save and load."""

import json

import pytest

from textgen_jax.data.tokenizers import WordTokenizer
from textgen_jax.data.vocab import (
  BOS,
  BOS_ID,
  EOS,
  EOS_ID,
  PAD,
  PAD_ID,
  SPECIAL_TOKENS,
  UNK,
  UNK_ID,
  Vocabulary,
  load_vocabulary,
)
from textgen_jax.errors import TextgenError

# Counts: a x4, b x3, c x2, d x2, e x1.
TOKEN_LISTS = [["a", "b", "c"], ["a", "b", "d"], ["a", "c", "d", "e"], ["a", "b"]]


def test_specials_have_ids_zero_to_three():
  assert (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
  assert SPECIAL_TOKENS == (PAD, BOS, EOS, UNK)
  vocab = Vocabulary.build(TOKEN_LISTS)
  assert vocab.tokens[:4] == [PAD, BOS, EOS, UNK]
  assert vocab.encode([PAD, BOS, EOS, UNK]) == [PAD_ID, BOS_ID, EOS_ID, UNK_ID]


def test_build_orders_by_frequency_then_alphabetically():
  vocab = Vocabulary.build(TOKEN_LISTS)
  assert vocab.tokens[4:] == ["a", "b", "c", "d", "e"]
  assert len(vocab) == 9


def test_build_ignores_special_tokens_in_the_data():
  vocab = Vocabulary.build([["x", UNK, PAD, EOS]])
  assert vocab.tokens == list(SPECIAL_TOKENS) + ["x"]


def test_min_count_maps_rare_tokens_to_unk():
  vocab = Vocabulary.build(TOKEN_LISTS, min_count=2)
  assert vocab.tokens[4:] == ["a", "b", "c", "d"]
  assert vocab.encode(["e", "a"]) == [UNK_ID, 4]
  assert Vocabulary.build(TOKEN_LISTS, min_count=4).tokens[4:] == ["a"]


def test_max_size_counts_the_specials_and_keeps_the_most_frequent():
  vocab = Vocabulary.build(TOKEN_LISTS, max_size=6)
  assert len(vocab) == 6
  assert vocab.tokens[4:] == ["a", "b"]
  assert vocab.encode(["c", "d", "e"]) == [UNK_ID] * 3
  assert len(Vocabulary.build(TOKEN_LISTS, max_size=100)) == 9


def test_max_size_too_small_raises():
  with pytest.raises(TextgenError, match="max_size"):
    Vocabulary.build(TOKEN_LISTS, max_size=4)


def test_encode_maps_unknown_tokens_to_unk():
  vocab = Vocabulary.build(TOKEN_LISTS)
  assert vocab.encode(["a", "zzz", "b", "A"]) == [4, UNK_ID, 5, UNK_ID]
  assert vocab.count_unknown(["a", "zzz", "b", "A"]) == 2
  assert vocab.encode([]) == []


def test_decode_stops_at_eos_and_skips_pad_and_bos():
  vocab = Vocabulary.build(TOKEN_LISTS)
  ids = [BOS_ID, 4, PAD_ID, 5, UNK_ID, EOS_ID, 6, 7]
  assert vocab.decode(ids) == ["a", "b", UNK]
  assert vocab.decode([]) == []
  assert vocab.decode([EOS_ID, 4]) == []


def test_encode_decode_round_trip():
  vocab = Vocabulary.build(TOKEN_LISTS)
  for tokens in TOKEN_LISTS:
    assert vocab.decode(vocab.encode(tokens) + [EOS_ID, PAD_ID]) == tokens


def test_constructor_rejects_missing_specials_and_duplicates():
  with pytest.raises(TextgenError, match="start with"):
    Vocabulary(["a", "b"])
  with pytest.raises(TextgenError, match="start with"):
    Vocabulary([BOS, PAD, EOS, UNK, "a"])
  with pytest.raises(TextgenError, match="repeat"):
    Vocabulary(list(SPECIAL_TOKENS) + ["a", "a"])


def test_save_load_round_trip(tmp_path):
  tokenizer = WordTokenizer(lowercase=True)
  vocab = Vocabulary.build([tokenizer.tokenize(s) for s in ["Ça va ?", "Où est-il ?", "日本"]])
  path = str(tmp_path / "vocab.json")
  vocab.save(path, tokenizer.to_config())
  loaded, tokenizer_config = load_vocabulary(path)
  assert loaded == vocab
  assert loaded.tokens == vocab.tokens
  assert tokenizer_config == tokenizer.to_config()
  assert loaded.encode(["ça", "unseen"]) == [vocab.encode(["ça"])[0], UNK_ID]
  assert not (tmp_path / "vocab.json.tmp").exists()


def test_save_overwrites(tmp_path):
  path = str(tmp_path / "vocab.json")
  Vocabulary.build([["a"]]).save(path, {"kind": "char"})
  Vocabulary.build([["b", "c"]]).save(path, {"kind": "word"})
  loaded, tokenizer_config = load_vocabulary(path)
  assert loaded.tokens[4:] == ["b", "c"]
  assert tokenizer_config == {"kind": "word"}


def test_equality():
  assert Vocabulary.build(TOKEN_LISTS) == Vocabulary.build(TOKEN_LISTS)
  assert Vocabulary.build(TOKEN_LISTS) != Vocabulary.build(TOKEN_LISTS, min_count=2)
  assert Vocabulary.build(TOKEN_LISTS) != list(Vocabulary.build(TOKEN_LISTS).tokens)


def test_load_missing_file_raises(tmp_path):
  path = str(tmp_path / "nope.json")
  with pytest.raises(TextgenError, match="not found") as info:
    load_vocabulary(path)
  assert path in str(info.value)


@pytest.mark.parametrize(
  "content",
  [
    "{not json",
    "",
    json.dumps({"tokens": list(SPECIAL_TOKENS)}),  # No tokenizer.
    json.dumps({"tokenizer": {"kind": "word"}}),  # No tokens.
    json.dumps({"tokenizer": {"kind": "word"}, "tokens": ["a", "b"]}),  # No specials.
    json.dumps({"tokenizer": {"kind": "word"}, "tokens": None}),
    json.dumps(["a", "list"]),
  ],
  ids=["truncated", "empty", "no-tokenizer", "no-tokens", "no-specials", "null-tokens", "list"],
)
def test_load_corrupt_file_raises(tmp_path, content):
  path = tmp_path / "vocab.json"
  path.write_text(content, encoding="utf-8")
  with pytest.raises(TextgenError) as info:
    load_vocabulary(str(path))
  assert str(path) in str(info.value) or "vocabulary" in str(info.value)


def test_load_binary_file_raises_textgen_error(tmp_path):
  """A non-UTF-8 file (truncated, overwritten) is a one-line error, not a UnicodeDecodeError."""
  path = tmp_path / "vocab.json"
  path.write_bytes(b"\xff\xfe\x00\x81 not a vocabulary")
  with pytest.raises(TextgenError, match="vocab.json"):
    load_vocabulary(str(path))


@pytest.mark.parametrize("multiple", [1, 2, 8, 128])
def test_size_multiple_pads_with_unused_tokens(multiple):
  plain = Vocabulary.build(TOKEN_LISTS)
  padded = Vocabulary.build(TOKEN_LISTS, size_multiple=multiple)
  assert len(padded) % multiple == 0 and len(padded) - len(plain) < multiple
  assert padded.tokens[: len(plain)] == plain.tokens  # Ids of real tokens do not move.
  assert all(t.startswith("<unused_") for t in padded.tokens[len(plain) :])


def test_size_multiple_below_one_names_the_flag():
  with pytest.raises(TextgenError, match="data.vocab_size_multiple"):
    Vocabulary.build(TOKEN_LISTS, size_multiple=0)
