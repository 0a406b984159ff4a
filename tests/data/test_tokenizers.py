"""Tests for textgen_jax.data.tokenizers: normalisation, reversibility, punctuation splitting."""

import re
import unicodedata

import pytest

from tests.helpers import bundled_pairs
from textgen_jax.data.tokenizers import (
  JOINER,
  CharTokenizer,
  WordTokenizer,
  make_tokenizer,
  normalize_text,
  tokenizer_from_config,
)
from textgen_jax.errors import TextgenError

ROUND_TRIP_TEXTS = [
  "Go.",
  "Va !",  # French spacing before "!".
  "Cours\u202f!",  # Narrow no-break space, as in the Tatoeba data.
  "Qui ?",
  "I'm here, aren't you?",
  "l'homme d'affaires",
  "Ça va ?  Oui... «Bonjour», dit-il.",
  "  extra   spaces\t\tand\nnewlines  ",
  "naïve café — déjà vu",
  "e\u0301te\u0301",  # Decomposed accents; NFC composes them.
  "q\u0301",  # A combining mark with no precomposed form.
  "日本語のテキスト。",
  "emoji 😀! (yes)",
  "İstanbul ΣΊΣΥΦΟΣ Straße",
  "snake_case and 3.14 and $5",
  "Go .",  # Not the same as "Go.".
  "",
  "   ",
]


@pytest.fixture(
  params=[(kind, lowercase) for kind in ("char", "word") for lowercase in (False, True)],
  ids=lambda p: f"{p[0]}-{'lower' if p[1] else 'cased'}",
)
def tokenizer(request):
  kind, lowercase = request.param
  return make_tokenizer(kind, lowercase)


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_detokenize_inverts_tokenize_up_to_normalization(tokenizer, text):
  assert tokenizer.detokenize(tokenizer.tokenize(text)) == tokenizer.normalize(text)


def test_round_trip_on_bundled_corpus(tokenizer):
  for source, target in bundled_pairs(200):
    for text in (source, target):
      assert tokenizer.detokenize(tokenizer.tokenize(text)) == tokenizer.normalize(text), text


def test_word_tokenizer_round_trips_text_containing_the_joiner_character():
  """normalize drops the joiner before collapsing whitespace: "a \uffed b" becomes "a b"."""
  tokenizer = WordTokenizer()
  for text in ("a \uffed b", " \uffed x", "a\uffedb"):
    normalized = tokenizer.normalize(text)
    assert tokenizer.detokenize(tokenizer.tokenize(text)) == normalized
    assert "  " not in normalized and normalized == normalized.strip()


def test_normalize_text():
  assert normalize_text("  a \t b\n\nc  ", lowercase=False) == "a b c"
  assert normalize_text("e\u0301", lowercase=False) == "\u00e9"
  assert normalize_text("Ça VA", lowercase=True) == "ça va"
  assert normalize_text("Ça VA", lowercase=False) == "Ça VA"
  assert normalize_text("Cours\u202f!", lowercase=False) == "Cours !"


def test_char_tokenizer_is_one_token_per_character():
  assert CharTokenizer().tokenize("Va  !") == ["V", "a", " ", "!"]
  assert CharTokenizer(lowercase=True).tokenize("ÉtÉ") == ["é", "t", "é"]
  assert CharTokenizer().tokenize("e\u0301") == ["\u00e9"]


@pytest.mark.parametrize(
  "text, tokens",
  [
    ("Go.", ["Go", JOINER + "."]),
    ("Va !", ["Va", "!"]),
    ("Hello, world!", ["Hello", JOINER + ",", "world", JOINER + "!"]),
    ("I'm", ["I", JOINER + "'", JOINER + "m"]),
    ("(yes)", ["(", JOINER + "yes", JOINER + ")"]),
    ("Qui ?", ["Qui", "?"]),
    ("...", [".", JOINER + ".", JOINER + "."]),
  ],
)
def test_word_tokenizer_splits_punctuation_from_words(text, tokens):
  assert WordTokenizer().tokenize(text) == tokens


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_word_tokens_are_a_word_or_one_symbol(text):
  for token in WordTokenizer().tokenize(text):
    bare = token[len(JOINER) :] if token.startswith(JOINER) else token
    assert bare and JOINER not in bare
    assert re.fullmatch(r"\w+", bare) or (len(bare) == 1 and not re.match(r"[\w\s]", bare)), token


def test_word_tokenizer_keeps_spacing_distinctions():
  tokenizer = WordTokenizer()
  assert tokenizer.tokenize("Go.") != tokenizer.tokenize("Go .")
  assert tokenizer.detokenize(tokenizer.tokenize("Go .")) == "Go ."
  assert tokenizer.detokenize(tokenizer.tokenize("Go.")) == "Go."


def test_lowercase_applies_before_tokenizing():
  assert WordTokenizer(lowercase=True).tokenize("Go Home.") == ["go", "home", JOINER + "."]
  assert WordTokenizer(lowercase=False).tokenize("Go Home.") == ["Go", "Home", JOINER + "."]


def test_normalized_text_is_nfc():
  for text in ROUND_TRIP_TEXTS:
    for tokenizer in (CharTokenizer(), WordTokenizer()):
      normalized = tokenizer.normalize(text)
      assert unicodedata.is_normalized("NFC", normalized)


@pytest.mark.parametrize(
  "kind, lowercase", [("char", False), ("char", True), ("word", False), ("word", True)]
)
def test_config_round_trip(kind, lowercase):
  tokenizer = make_tokenizer(kind, lowercase)
  assert tokenizer.kind == kind
  restored = tokenizer_from_config(tokenizer.to_config())
  assert restored == tokenizer
  assert type(restored) is type(tokenizer)


def test_unknown_tokenizer_kind_raises():
  with pytest.raises(TextgenError, match="bpe"):
    make_tokenizer("bpe")
