"""Token vocabularies with PAD, BOS, EOS and UNK, built from data and saved as JSON."""

import collections
import json
from typing import Any, Iterable, Sequence

from textgen_jax.errors import TextgenError
from textgen_jax.files import write_atomically

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)


class Vocabulary:
  """A bijection between tokens and ids; ids 0-3 are PAD, BOS, EOS, UNK."""

  def __init__(self, tokens: Sequence[str]):
    if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
      raise TextgenError(f"a vocabulary must start with {SPECIAL_TOKENS}")
    if len(set(tokens)) != len(tokens):
      raise TextgenError("a vocabulary must not repeat a token")
    self.tokens = list(tokens)
    self._ids = {token: i for i, token in enumerate(self.tokens)}

  @classmethod
  def build(
    cls,
    token_lists: Iterable[Sequence[str]],
    min_count: int = 1,
    max_size: int | None = None,
    size_multiple: int = 1,
  ) -> "Vocabulary":
    """Most frequent tokens first (ties alphabetical); max_size counts the specials.

    size_multiple > 1 appends never-seen "<unused_i>" tokens up to a multiple of it, so that the
    vocabulary matrices split evenly over devices (see parallel.py).
    """
    counts = collections.Counter(t for tokens in token_lists for t in tokens)
    ranked = sorted(
      (t for t, c in counts.items() if c >= min_count and t not in SPECIAL_TOKENS),
      key=lambda t: (-counts[t], t),
    )
    if max_size is not None:
      if max_size < len(SPECIAL_TOKENS) + 1:
        raise TextgenError(f"max_size must be at least {len(SPECIAL_TOKENS) + 1}, got {max_size}")
      ranked = ranked[: max_size - len(SPECIAL_TOKENS)]
    return cls.from_tokens(ranked, size_multiple)

  @classmethod
  def from_tokens(cls, tokens: Sequence[str], size_multiple: int = 1) -> "Vocabulary":
    """The specials, then `tokens` in their order (a subword model's pieces, say), padded with
    never-seen "<unused_i>" tokens to a multiple of size_multiple."""
    if size_multiple < 1:
      raise TextgenError(f"data.vocab_size_multiple must be at least 1, got {size_multiple}")
    clashing = sorted(set(tokens) & set(SPECIAL_TOKENS))
    if clashing:
      raise TextgenError(f"a vocabulary's tokens include the special token(s) {clashing}")
    tokens = list(SPECIAL_TOKENS) + list(tokens)
    tokens += [f"<unused_{i}>" for i in range(-len(tokens) % size_multiple)]
    return cls(tokens)

  def __len__(self) -> int:
    return len(self.tokens)

  def __eq__(self, other: Any) -> bool:
    return isinstance(other, Vocabulary) and self.tokens == other.tokens

  def encode(self, tokens: Sequence[str]) -> list[int]:
    """Token ids, UNK_ID for tokens outside the vocabulary; adds no BOS or EOS."""
    return [self._ids.get(t, UNK_ID) for t in tokens]

  def decode(self, ids: Iterable[int]) -> list[str]:
    """Tokens up to the first EOS, skipping PAD and BOS; UNK shows as '<unk>'."""
    tokens = []
    for i in ids:
      i = int(i)
      if i == EOS_ID:
        break
      if i not in (PAD_ID, BOS_ID):
        tokens.append(self.tokens[i])
    return tokens

  def count_unknown(self, tokens: Sequence[str]) -> int:
    return sum(t not in self._ids for t in tokens)

  def save(self, path: str, tokenizer_config: dict[str, Any]) -> None:
    """Writes the vocabulary and the tokenizer that made it, atomically."""
    write_atomically(
      path, json.dumps({"tokenizer": tokenizer_config, "tokens": self.tokens}, ensure_ascii=False)
    )


def load_vocabulary(path: str) -> tuple[Vocabulary, dict[str, Any]]:
  """Returns (vocabulary, tokenizer config) saved by `Vocabulary.save`."""
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
    return Vocabulary(data["tokens"]), data["tokenizer"]
  except FileNotFoundError:
    raise TextgenError(f"{path}: vocabulary file not found") from None
  except OSError as e:
    raise TextgenError(f"{path}: cannot read the vocabulary file ({e.strerror})") from None
  except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
    raise TextgenError(f"{path}: not a textgen-jax vocabulary file ({e})") from None
