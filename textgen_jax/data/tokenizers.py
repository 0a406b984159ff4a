"""Reversible character-, word- and whitespace-level tokenizers.

All tokenizers first normalise text (Unicode NFC, whitespace runs collapsed to one space,
optional lowercasing); `detokenize(tokenize(s)) == normalize(s)` holds exactly for all three.

The word tokenizer splits punctuation from words. To stay reversible without language-specific
detokenisation rules (English "Go." but French "Va !"), a token written directly after the
previous one, with no space between, carries the JOINER prefix: "Go." -> ["Go", "￭."] while
"Va !" -> ["Va", "!"]. This is the joiner convention of OpenNMT's tokenizer.
"""

import dataclasses
import re
import unicodedata
from typing import Any

from textgen_jax.errors import TextgenError

JOINER = "\uffed"  # "￭", a character that does not occur in ordinary text.
_WORD_OR_SYMBOL = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def normalize_text(text: str, lowercase: bool) -> str:
  """NFC, one space between words, no leading/trailing space, optional lowercase."""
  text = " ".join(unicodedata.normalize("NFC", text).split())
  return text.lower() if lowercase else text


@dataclasses.dataclass(frozen=True)
class CharTokenizer:
  """One token per character, spaces included."""

  lowercase: bool = False
  kind: str = dataclasses.field(default="char", init=False)

  def normalize(self, text: str) -> str:
    return normalize_text(text, self.lowercase)

  def tokenize(self, text: str) -> list[str]:
    return list(self.normalize(text))

  def detokenize(self, tokens: list[str]) -> str:
    return "".join(tokens)

  def to_config(self) -> dict[str, Any]:
    return {"kind": self.kind, "lowercase": self.lowercase}


@dataclasses.dataclass(frozen=True)
class WordTokenizer:
  """Words and single punctuation marks; JOINER marks a token glued to the one before."""

  lowercase: bool = False
  kind: str = dataclasses.field(default="word", init=False)

  def normalize(self, text: str) -> str:
    return normalize_text(text.replace(JOINER, ""), self.lowercase)

  def tokenize(self, text: str) -> list[str]:
    text = self.normalize(text)
    tokens = []
    previous_end = None
    for match in _WORD_OR_SYMBOL.finditer(text):
      glued = previous_end is not None and match.start() == previous_end
      tokens.append(JOINER + match.group() if glued else match.group())
      previous_end = match.end()
    return tokens

  def detokenize(self, tokens: list[str]) -> str:
    pieces = []
    for i, token in enumerate(tokens):
      if token.startswith(JOINER):
        pieces.append(token[len(JOINER) :])
      else:
        pieces.append(token if i == 0 else " " + token)
    return "".join(pieces)

  def to_config(self) -> dict[str, Any]:
    return {"kind": self.kind, "lowercase": self.lowercase}


@dataclasses.dataclass(frozen=True)
class WhitespaceTokenizer:
  """Splits on whitespace only: for corpora that come tokenised (Penn Treebank's "mr. <unk>")."""

  lowercase: bool = False
  kind: str = dataclasses.field(default="whitespace", init=False)

  def normalize(self, text: str) -> str:
    return normalize_text(text, self.lowercase)

  def tokenize(self, text: str) -> list[str]:
    return self.normalize(text).split()

  def detokenize(self, tokens: list[str]) -> str:
    return " ".join(tokens)

  def to_config(self) -> dict[str, Any]:
    return {"kind": self.kind, "lowercase": self.lowercase}


Tokenizer = CharTokenizer | WordTokenizer | WhitespaceTokenizer
_TOKENIZERS = {"char": CharTokenizer, "word": WordTokenizer, "whitespace": WhitespaceTokenizer}


def make_tokenizer(kind: str, lowercase: bool = False) -> Tokenizer:
  """Returns the tokenizer named `kind` ("char", "word" or "whitespace")."""
  if kind not in _TOKENIZERS:
    raise TextgenError(f"unknown tokenizer {kind!r}; choose one of {sorted(_TOKENIZERS)}")
  return _TOKENIZERS[kind](lowercase=lowercase)


def tokenizer_from_config(config: dict[str, Any]) -> Tokenizer:
  return make_tokenizer(config["kind"], config.get("lowercase", False))
