"""Reversible character-, word-, whitespace- and subword-level tokenizers.

All tokenizers first normalise text (Unicode NFC, whitespace runs collapsed to one space,
optional lowercasing); `detokenize(tokenize(s)) == normalize(s)` holds exactly for all four.

The word tokenizer splits punctuation from words. To stay reversible without language-specific
detokenisation rules (English "Go." but French "Va !"), a token written directly after the
previous one, with no space between, carries the JOINER prefix: "Go." -> ["Go", "￭."] while
"Va !" -> ["Va", "!"]. This is the joiner convention of OpenNMT's tokenizer.
"""

import dataclasses
import hashlib
import io
import os
import re
import threading
import unicodedata
from typing import Any, Iterable, Sequence

import sentencepiece

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


# SentencePiece writes a space as this meta symbol, so the symbol itself cannot survive a round
# trip: the subword tokenizer normalises it to a space first, as SentencePiece's own rules do.
SPACE_SYMBOL = "\u2581"
SENTENCEPIECE_TYPES = ("unigram", "bpe")
SUBWORD_VOCABULARIES = ("joint", "separate")  # One model for every column, or one per column.
# The trained subword model, in a workdir beside the vocabulary files built from it (a joint
# model's file; with one model per column, "<column>_sentencepiece.model").
SENTENCEPIECE_FILE = "sentencepiece.model"


@dataclasses.dataclass(frozen=True)
class SentencePieceTokenizer:
  """Subwords from a trained SentencePiece model (Kudo and Richardson 2018), byte fallback on:
  a character the model lacks becomes its UTF-8 bytes ("<0xE6>"), so no text is ever unknown.

  SentencePiece's own normalisation is off (rule "identity"): text is normalised here as by
  every tokenizer, so that the same text gives the same pieces whichever tool reads it.
  """

  model: bytes  # The serialized model (what spm_train writes to a .model file).
  lowercase: bool = False
  # Its file in a workdir: SENTENCEPIECE_FILE for a joint model, one per column otherwise.
  file: str = SENTENCEPIECE_FILE
  kind: str = dataclasses.field(default="sentencepiece", init=False)
  _processor: Any = dataclasses.field(default=None, init=False, repr=False, compare=False)

  def __post_init__(self):
    try:
      processor = sentencepiece.SentencePieceProcessor(model_proto=self.model)
    except (RuntimeError, TypeError):
      raise TextgenError("not a SentencePiece model") from None
    object.__setattr__(self, "_processor", processor)

  @property
  def sha256(self) -> str:
    return hashlib.sha256(self.model).hexdigest()

  def pieces(self) -> list[str]:
    """Every piece of the model but its unknown and control pieces (<unk>, <s>, </s>), in
    the model's order: the vocabulary a run builds from it."""
    processor = self._processor
    return [
      processor.id_to_piece(i)
      for i in range(processor.get_piece_size())
      if not (processor.is_unknown(i) or processor.is_control(i))
    ]

  def normalize(self, text: str) -> str:
    return _subword_normalize(text, self.lowercase)

  def tokenize(self, text: str) -> list[str]:
    return self._processor.encode(self.normalize(text), out_type=str)

  def sample(self, texts: Sequence[str], alpha: float, seed: int) -> list[list[str]]:
    """One segmentation of each text drawn from the model: subword regularisation (Kudo 2018:
    from every segmentation, probability ~ P(segmentation)^alpha) for a unigram model,
    BPE-dropout with probability alpha (Provilkov et al. 2020) for a BPE one. The draws are a
    function of `seed` (32 bits) alone, whatever was drawn before.

    SentencePiece draws from a thread-local generator, seeded from its process-wide seed when a
    thread first draws; reseeding never reaches a thread that has drawn. So each call draws in
    a thread of its own, seeded first.
    """
    samples = []

    def draw():
      sentencepiece.set_random_generator_seed(seed)
      samples.extend(
        self._processor.encode(
          self.normalize(text), out_type=str, enable_sampling=True, alpha=alpha, nbest_size=-1
        )
        for text in texts
      )

    thread = threading.Thread(target=draw, name="sentencepiece-sampling")
    thread.start()
    thread.join()
    if len(samples) != len(texts):  # The thread raised (its traceback is printed).
      raise TextgenError("SentencePiece failed to sample segmentations")
    return samples

  def detokenize(self, tokens: list[str]) -> str:
    return self._processor.decode_pieces(list(tokens))

  def to_config(self) -> dict[str, Any]:
    return {
      "kind": self.kind,
      "lowercase": self.lowercase,
      "sha256": self.sha256,
      "file": self.file,
    }


def _subword_normalize(text: str, lowercase: bool) -> str:
  return normalize_text(text.replace(SPACE_SYMBOL, " "), lowercase)


def train_sentencepiece(
  texts: Iterable[str],
  vocab_size: int,
  model_type: str = "unigram",
  lowercase: bool = False,
  file: str = SENTENCEPIECE_FILE,
) -> SentencePieceTokenizer:
  """A SentencePiece model trained on `texts` (normalised as the tokenizer reads them), with
  byte fallback. Deterministic: the same texts give the same model.

  vocab_size counts SentencePiece's pieces, the 256 byte pieces and its three special pieces
  included; a vocabulary built from it adds textgen-jax's PAD and BOS.
  """
  if model_type not in SENTENCEPIECE_TYPES:
    raise TextgenError(f"unknown SentencePiece model type {model_type!r}; choose unigram or bpe")
  lines = [line for line in (_subword_normalize(text, lowercase) for text in texts) if line]
  if not lines:
    raise TextgenError("cannot train a SentencePiece model on no text")
  model = io.BytesIO()
  try:
    sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(lines),
      model_writer=model,
      vocab_size=vocab_size,
      model_type=model_type,
      byte_fallback=True,
      # The rarest 0.05% of characters get no piece of their own and are read as bytes.
      character_coverage=0.9995,
      normalization_rule_name="identity",
      split_digits=True,  # A number never seen in training is still its digits.
      input_sentence_size=0,  # Every sentence, not a random sample of them.
      num_threads=1,  # Threads would make the model depend on scheduling.
      minloglevel=2,
    )
  except RuntimeError as e:
    # Chiefly a size too high for the text, or too low for its characters and the 256 bytes;
    # SentencePiece's message follows its source location and check ("...cc(638) [...] ").
    message = str(e).split("] ", 1)[-1]
    raise TextgenError(f"data.vocab_size={vocab_size}: SentencePiece says: {message}") from None
  return SentencePieceTokenizer(model.getvalue(), lowercase, file)


Tokenizer = CharTokenizer | WordTokenizer | WhitespaceTokenizer | SentencePieceTokenizer
_TOKENIZERS = {"char": CharTokenizer, "word": WordTokenizer, "whitespace": WhitespaceTokenizer}


KINDS = (*_TOKENIZERS, "sentencepiece")


def make_tokenizer(kind: str, lowercase: bool = False) -> Tokenizer:
  """Returns the tokenizer named `kind` ("char", "word" or "whitespace"; a "sentencepiece" one
  is trained, see train_sentencepiece)."""
  if kind not in _TOKENIZERS:
    raise TextgenError(f"unknown tokenizer {kind!r}; choose one of {sorted(KINDS)}")
  return _TOKENIZERS[kind](lowercase=lowercase)


def tokenizer_from_config(config: dict[str, Any], directory: str | None = None) -> Tokenizer:
  """The tokenizer a vocabulary file records; a subword one reads its model from `directory`
  (a workdir) and must be the model the vocabulary was built with (its SHA-256)."""
  if config["kind"] != "sentencepiece":
    return make_tokenizer(config["kind"], config.get("lowercase", False))
  file = config.get("file", SENTENCEPIECE_FILE)  # Joint models were all there were before.
  if not isinstance(file, str) or os.path.basename(file) != file or file in ("", ".", ".."):
    raise TextgenError(
      f"{directory}: a vocabulary file names {file!r} as its SentencePiece model, not a file "
      "name in the workdir"
    )
  path = os.path.join(directory or ".", file)
  try:
    with open(path, "rb") as f:
      model = f.read()
  except OSError as e:
    raise TextgenError(f"{path}: cannot read the SentencePiece model ({e.strerror})") from None
  try:
    tokenizer = SentencePieceTokenizer(model, config.get("lowercase", False), file)
  except TextgenError as e:
    raise TextgenError(f"{path}: {e}") from None
  if tokenizer.sha256 != config.get("sha256"):
    raise TextgenError(
      f"{path}: not the SentencePiece model this run's vocabulary was built with (its SHA-256 "
      "differs from the one its vocabulary file records); was it copied from another run?"
    )
  return tokenizer
