"""Property tests (hypothesis): inputs no example list would think of.

Any Unicode string round-trips through every tokenizer to its normalisation, and any bytes read
as a corpus give examples or a one-line error naming the file, never another exception.
"""

import os
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from textgen_jax.data import readers
from textgen_jax.data.tokenizers import make_tokenizer
from textgen_jax.errors import TextgenError


@pytest.mark.parametrize("kind", ["char", "word", "whitespace"])
@pytest.mark.parametrize("lowercase", [False, True])
@settings(max_examples=300, deadline=None)
@given(text=st.text())
def test_any_text_round_trips_through_the_tokenizers_to_its_normalisation(kind, lowercase, text):
  tokenizer = make_tokenizer(kind, lowercase)
  tokens = tokenizer.tokenize(text)
  assert tokenizer.detokenize(tokens) == tokenizer.normalize(text)
  assert all(token and not token.isspace() for token in tokens) or kind == "char"


@pytest.mark.parametrize("reader", [readers.read_pairs, readers.read_lines], ids=["pairs", "lines"])
@settings(max_examples=200, deadline=None)
@given(
  content=st.one_of(
    st.binary(max_size=300), st.text(max_size=200).map(lambda text: text.encode("utf-8"))
  )
)
def test_any_bytes_give_examples_or_a_one_line_error_naming_the_file(reader, content):
  with tempfile.TemporaryDirectory() as directory:
    path = os.path.join(directory, "corpus.txt")
    with open(path, "wb") as f:
      f.write(content)
    try:
      examples, report = reader(path, verbose=False)
    except TextgenError as e:
      assert str(e).startswith(path) and "\n" not in str(e)
      return
    assert len(examples) == report.num_kept > 0
    assert len(report.line_numbers) == len(examples)
