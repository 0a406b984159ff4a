"""Tests for textgen_jax.data.readers: TSV pairs and one-sentence-per-line files."""

import gzip
import os
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import ATTRIBUTION, BUNDLED_CORPUS, write_text
from textgen_jax.data import readers
from textgen_jax.errors import TextgenError


def test_read_pairs_ignores_extra_columns_and_blank_lines(tmp_path, capsys):
  path = write_text(
    tmp_path / "f.tsv",
    f"Go.\tVa !\t{ATTRIBUTION}\n\nHi.\tSalut !\n  \nRun!\tCours\u202f!\textra\tcolumns\n",
  )
  pairs, report = readers.read_pairs(path)
  assert pairs == [("Go.", "Va !"), ("Hi.", "Salut !"), ("Run!", "Cours\u202f!")]
  assert report.num_kept == 3 and report.num_blank == 2 and report.skipped == []
  assert report.line_numbers == [1, 3, 5]
  assert capsys.readouterr().out.strip() == report.summary()
  assert "read 3 examples" in report.summary()


def test_read_pairs_handles_crlf_and_no_final_newline(tmp_path):
  path = tmp_path / "f.tsv"
  path.write_bytes("Go.\tVa !\r\nHi.\tSalut !".encode("utf-8"))
  pairs, _ = readers.read_pairs(str(path), verbose=False)
  assert pairs == [("Go.", "Va !"), ("Hi.", "Salut !")]


def test_read_pairs_on_bundled_corpus_head(tmp_path):
  with open(BUNDLED_CORPUS, encoding="utf-8") as f:
    head = [next(f) for _ in range(200)]
  path = write_text(tmp_path / "head.tsv", "".join(head))
  pairs, report = readers.read_pairs(path, verbose=False)
  assert len(pairs) == report.num_kept == 200
  assert all(s.strip() and t.strip() and "\t" not in s + t for s, t in pairs)
  assert pairs[0] == tuple(head[0].rstrip("\n").split("\t")[:2])


@pytest.mark.parametrize(
  "bad_line, problem",
  [
    ("Hi. Salut !", "no tab"),
    ("\tSalut !", "empty source"),
    ("   \tSalut !", "empty source"),
    ("Hi.\t", "empty target"),
    ("Hi.\t  \tattribution", "empty target"),
  ],
)
def test_malformed_line_is_an_error_naming_file_and_line(tmp_path, bad_line, problem):
  path = write_text(tmp_path / "f.tsv", f"Go.\tVa !\nRun!\tCours !\n{bad_line}\nWho?\tQui ?\n")
  with pytest.raises(TextgenError, match=problem) as info:
    readers.read_pairs(path)
  assert f"{path}:3:" in str(info.value)
  assert "skip_malformed" in str(info.value)


def test_line_numbers_count_blank_lines(tmp_path):
  path = write_text(tmp_path / "f.tsv", "Go.\tVa !\n\n\nno tab here\n")
  with pytest.raises(TextgenError, match=r"f\.tsv:4:"):
    readers.read_pairs(path)


def test_skip_malformed_skips_counts_and_prints_summary(tmp_path, capsys):
  path = write_text(
    tmp_path / "f.tsv", "Go.\tVa !\nno tab\nHi.\tSalut !\n\tno source\nno target\t\nWho?\tQui ?\n"
  )
  pairs, report = readers.read_pairs(path, skip_malformed=True, verbose=False)
  assert pairs == [("Go.", "Va !"), ("Hi.", "Salut !"), ("Who?", "Qui ?")]
  assert report.num_kept == 3
  assert [n for n, _ in report.skipped] == [2, 4, 5]
  assert [why for _, why in report.skipped] == [
    "no tab between source and target",
    "empty source",
    "empty target",
  ]
  out = capsys.readouterr().out
  assert "skipped 3 malformed lines" in out
  assert "line 2" in out and "read 3 examples" in out


def test_skip_malformed_without_any_good_line_raises(tmp_path):
  path = write_text(tmp_path / "f.tsv", "no tab\nstill no tab\n")
  with pytest.raises(TextgenError, match="no usable lines"):
    readers.read_pairs(path, skip_malformed=True)


@pytest.mark.parametrize("content", ["", "\n\n", "  \n\t\n"], ids=["empty", "newlines", "spaces"])
def test_empty_file_raises(tmp_path, content):
  path = write_text(tmp_path / "f.tsv", content)
  with pytest.raises(TextgenError, match="empty") as info:
    readers.read_pairs(path)
  assert path in str(info.value)
  with pytest.raises(TextgenError, match="empty"):
    readers.read_lines(path)


def test_missing_file_and_directory_raise(tmp_path):
  missing = str(tmp_path / "missing.tsv")
  with pytest.raises(TextgenError, match="not found") as info:
    readers.read_pairs(missing)
  assert missing in str(info.value)
  with pytest.raises(TextgenError, match="directory"):
    readers.read_pairs(str(tmp_path))
  with pytest.raises(TextgenError, match="not found"):
    readers.read_lines(missing)


def test_non_utf8_file_raises(tmp_path):
  path = tmp_path / "f.tsv"
  path.write_bytes("Go.\tVa !\n".encode("utf-8") + "Été\tSummer\n".encode("latin-1"))
  with pytest.raises(TextgenError, match="UTF-8") as info:
    readers.read_pairs(str(path))
  assert str(info.value).startswith(f"{path}:2: not UTF-8 text")


def test_read_lines(tmp_path, capsys):
  path = write_text(tmp_path / "ptb.txt", " the cat sat\nit is <unk> \n")
  sentences, report = readers.read_lines(path, verbose=False)
  assert sentences == [" the cat sat", "it is <unk> "]
  assert report.num_kept == 2
  assert capsys.readouterr().out == ""


@pytest.mark.parametrize("empty_line", ["", "   ", "\t"])
def test_read_lines_empty_line_is_an_error(tmp_path, empty_line):
  path = write_text(tmp_path / "ptb.txt", f"one\n{empty_line}\nthree\n")
  with pytest.raises(TextgenError, match="empty line") as info:
    readers.read_lines(path)
  assert f"{path}:2:" in str(info.value)


def test_read_lines_skip_malformed(tmp_path, capsys):
  path = write_text(tmp_path / "ptb.txt", "one\n\ntwo\n\n\nthree\n")
  sentences, report = readers.read_lines(path, skip_malformed=True, verbose=False)
  assert sentences == ["one", "two", "three"]
  assert [n for n, _ in report.skipped] == [2, 4, 5]
  assert "skipped 3 malformed lines" in capsys.readouterr().out


def test_summary_mentions_only_the_first_three_skips(tmp_path):
  report = readers.ReadReport(
    "f.tsv", num_kept=1, num_blank=2, skipped=[(n, "no tab") for n in (3, 5, 7, 9)]
  )
  summary = report.summary()
  assert "skipped 4 malformed lines" in summary
  assert "line 7" in summary and "line 9" not in summary
  assert "ignored 2 blank lines" in summary
  assert summary.startswith("f.tsv: read 1 examples, skipped 4")


def test_the_seq2seq_default_holds_out_by_source(tmp_path):
  """Tatoeba's repeated sources (several translations each) never straddle the split."""
  # pylint: disable=import-outside-toplevel
  from textgen_jax.data import pipeline
  from textgen_jax.seq2seq import config as seq2seq_config
  from textgen_jax.seq2seq.translator import VOCABULARY_FILES

  lines = [f"Source {i % 40}.\tcible {i} .\t{ATTRIBUTION}" for i in range(400)]
  config = seq2seq_config.get_config()
  config.data.train_path = write_text(tmp_path / "pairs.tsv", "\n".join(lines) + "\n")
  config.data.valid_fraction = 0.2
  assert config.data.valid_split == "grouped"
  data = pipeline.read_data(config, readers.read_pairs, VOCABULARY_FILES)
  valid_sources = {source.lower() for source, _ in data.valid_examples}
  assert len(data.valid_examples) == 10 * len(valid_sources) >= 80  # All 10 of each source.
  splits = readers.read_splits(
    config.data, 0, readers.read_pairs, group_key=lambda pair: pair[0].lower()
  )
  assert not {s.lower() for s, _ in splits.train} & {s.lower() for s, _ in splits.valid}
  config.data.valid_split = "random"  # Examples, as before: sources land on both sides.
  splits = readers.read_splits(config.data, 0, readers.read_pairs)
  assert {s for s, _ in splits.train} & {s for s, _ in splits.valid}


def test_parallel_files_read_as_pairs_gzipped_or_not(tmp_path):
  write_text(tmp_path / "train.de", "ein hund .\nzwei katzen .\n\nein baum .\n")
  with gzip.open(tmp_path / "train.en.gz", "wt", encoding="utf-8") as f:
    f.write("a dog .\ntwo cats .\n\na tree .\n")
  pairs, report = readers.read_pairs(
    f"{tmp_path / 'train.de'},{tmp_path / 'train.en.gz'}", verbose=False
  )
  assert pairs == [
    ("ein hund .", "a dog ."),
    ("zwei katzen .", "two cats ."),
    ("ein baum .", "a tree ."),
  ]
  assert report.line_numbers == [1, 2, 4] and report.num_blank == 1


def test_parallel_files_must_align(tmp_path):
  source = write_text(tmp_path / "a.de", "eins\nzwei\n")
  with pytest.raises(TextgenError, match=r"a\.de has 2 lines but .*b\.en has 3"):
    readers.read_pairs(source + "," + write_text(tmp_path / "b.en", "one\ntwo\nthree\n"))
  with pytest.raises(TextgenError, match=r"c\.en:2: empty line where the other file"):
    readers.read_pairs(source + "," + write_text(tmp_path / "c.en", "one\n\n"))
  pairs, report = readers.read_pairs(
    f"{source},{tmp_path / 'c.en'}", skip_malformed=True, verbose=False
  )
  assert pairs == [("eins", "one")] and len(report.skipped) == 1
  with pytest.raises(TextgenError, match="missing.en: file not found"):
    readers.read_pairs(f"{source},{tmp_path / 'missing.en'}")
  write_text(tmp_path / "bad.gz", "not gzip")
  with pytest.raises(TextgenError, match="bad.gz: not a readable gzip file"):
    readers.read_pairs(f"{source},{tmp_path / 'bad.gz'}")


# ---- Lines are what "\n" ends; BOM, NUL, corrupt gzip and piped bytes (issue 22) -------------

# Characters str.splitlines() also breaks lines at, and a carriage return inside a line.
LINE_BREAKS_THAT_ARE_NOT_NEWLINES = "\u2028\u2029\x85\x0b\x0c\x1c\x1d\x1e\r"
# Chunks of either, so that most examples hold several of those characters (drawn as single
# characters among all of Unicode they would be rare). Only what UTF-8 encodes: a lone surrogate
# can be in a Python string but never in a file.
_INSIDE_A_LINE = st.lists(
  st.one_of(
    st.sampled_from(LINE_BREAKS_THAT_ARE_NOT_NEWLINES),
    st.text(st.characters(codec="utf-8", exclude_characters="\n\r\x00\ufeff"), max_size=3),
  ),
  max_size=6,
).map("".join)


@settings(max_examples=60, deadline=None)
@given(
  middles=st.lists(_INSIDE_A_LINE, min_size=1, max_size=6), newline=st.sampled_from(["\n", "\r\n"])
)
def test_any_characters_inside_lines_keep_one_line_per_line_and_parallel_files_aligned(
  middles, newline
):
  # Words around each middle: a "\r" that ends a line is no text (the "\r\n" rule).
  sources = [f"s{i} {middle} s" for i, middle in enumerate(middles)]
  targets = [f"t{i} {middle} t" for i, middle in enumerate(middles)]
  assert readers.split_lines(newline.join(sources) + newline) == sources
  assert readers.split_lines(newline.join(sources)) == sources  # No final newline.
  assert readers.read_input_lines(newline.join(sources).encode("utf-8")) == sources
  with tempfile.TemporaryDirectory() as directory:
    source_path = write_text(os.path.join(directory, "train.src"), newline.join(sources))
    target_path = os.path.join(directory, "train.tgt.gz")
    with gzip.open(target_path, "wb") as f:
      f.write((newline.join(targets) + newline).encode("utf-8"))
    pairs, report = readers.read_pairs(f"{source_path},{target_path}", verbose=False)
    assert pairs == list(zip(sources, targets))
    assert report.line_numbers == list(range(1, len(sources) + 1))
    assert readers.read_lines(source_path, verbose=False)[0] == sources


def test_a_tsv_line_with_a_line_separator_is_one_line(tmp_path):
  path = write_text(tmp_path / "f.tsv", "Go.\u2028now\tVa\x85 !\nHi.\x0c\tSalut !\nno tab\n")
  with pytest.raises(TextgenError, match=r"f\.tsv:3: no tab"):
    readers.read_pairs(path)
  pairs, _ = readers.read_pairs(path, skip_malformed=True, verbose=False)
  assert pairs == [("Go.\u2028now", "Va\x85 !"), ("Hi.\x0c", "Salut !")]


def test_a_bom_at_the_start_of_a_file_is_dropped(tmp_path):
  bom = "\ufeff"
  tsv = write_text(tmp_path / "f.tsv", f"{bom}Go.\tVa !\nHi.\tSalut !\n")
  assert readers.read_pairs(tsv, verbose=False)[0][0] == ("Go.", "Va !")
  assert readers.read_lines(write_text(tmp_path / "f.txt", f"{bom}the cat\n"), verbose=False)[
    0
  ] == ["the cat"]
  source = write_text(tmp_path / "a.de", f"{bom}ein hund .\n")
  with gzip.open(tmp_path / "a.en.gz", "wb") as f:
    f.write(f"{bom}a dog .\n".encode("utf-8"))
  pairs, _ = readers.read_pairs(f"{source},{tmp_path / 'a.en.gz'}", verbose=False)
  assert pairs == [("ein hund .", "a dog .")]
  # Only at the start: elsewhere it is a character of the text (a zero-width no-break space).
  assert readers.read_input_lines(f"{bom}café\nred{bom}\n".encode("utf-8")) == ["café", f"red{bom}"]


def _parallel_with_nul_in_target(tmp_path) -> str:
  source = write_text(tmp_path / "a.de", "eins\nzwei\ndrei\n")
  return source + "," + write_text(tmp_path / "b.en", "one\ntw\x00o\nthree\n")


@pytest.mark.parametrize(
  "reader, make_path, bad_file",
  [
    (
      readers.read_pairs,
      lambda d: write_text(d / "f.tsv", "Go.\tVa !\nHi.\tSa\x00lut\nA.\tB.\n"),
      "f.tsv",
    ),
    (readers.read_pairs, _parallel_with_nul_in_target, "b.en"),
    (readers.read_lines, lambda d: write_text(d / "f.txt", "one\nt\x00wo\nthree\n"), "f.txt"),
  ],
  ids=["tsv", "parallel", "lines"],
)
def test_a_nul_byte_is_a_malformed_line(tmp_path, capsys, reader, make_path, bad_file):
  path = make_path(tmp_path)
  with pytest.raises(TextgenError, match=rf"{bad_file}:2: contains a NUL byte \(set data\."):
    reader(path)
  examples, report = reader(path, skip_malformed=True, verbose=False)
  assert len(examples) == 2 and not any("\x00" in str(example) for example in examples)
  assert [n for n, _ in report.skipped] == [2] and "NUL" in report.skipped[0][1]
  assert "skipped 1 malformed lines" in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["overwritten", "cut_short"])
def test_a_corrupt_gzip_file_is_a_one_line_error_naming_it(tmp_path, damage):
  text = "".join(f"sentence {i} with words {i * 7919 % 1000}\n" for i in range(2000))
  data = gzip.compress(text.encode("utf-8"))
  # Zeros in the middle of the deflate stream make zlib fail; a cut one ends too early.
  data = data[:200] + bytes(100) + data[300:] if damage == "overwritten" else data[: len(data) // 2]
  path = tmp_path / "corpus.txt.gz"
  path.write_bytes(data)
  for reader in (readers.read_pairs, readers.read_lines):
    with pytest.raises(TextgenError, match="not a readable gzip file") as info:
      reader(str(path))
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_input_lines_with_a_nul_byte_are_an_error_naming_the_line():
  with pytest.raises(TextgenError, match=r"^<stdin>:3: contains a NUL byte$"):
    readers.read_input_lines(b"one\n\ntw\x00o\n")


def test_input_lines_not_utf8_read_as_replacement_with_one_warning(capsys):
  lines = [b"one", b"two", b"caf\xe9", b"four", b"", b"\xef\xbb\xbfsix", b"se\xffv\xc3n", b"8"]
  texts = readers.read_input_lines(b"\n".join(lines) + b"\n")
  assert texts == ["one", "two", "caf\ufffd", "four", "", "\ufeffsix", "se\ufffdv\ufffdn", "8"]
  err = capsys.readouterr().err
  assert err == ("warning: <stdin> lines 3, 7: not UTF-8; undecodable bytes read as U+FFFD\n")
  assert readers.read_input_lines(b"caf\xc3\xa9\r\n") == ["café"]
  assert capsys.readouterr().err == ""
  assert readers.read_input_lines(b"") == [] and readers.read_input_lines(b"\n\n") == ["", ""]


@pytest.mark.parametrize("tokenizer", ["word", "sentencepiece"])
def test_train_examples_is_a_nested_subset_with_the_full_splits_vocabulary(tokenizer, tmp_path):
  # pylint: disable=import-outside-toplevel
  from tests.helpers import bundled_pairs, write_tsv
  from textgen_jax.data import pipeline
  from textgen_jax.seq2seq import config as seq2seq_config
  from textgen_jax.seq2seq.translator import VOCABULARY_FILES

  config = seq2seq_config.get_config()
  config.data.train_path = write_tsv(tmp_path / "pairs.tsv", bundled_pairs(600))
  config.data.tokenizer, config.data.vocab_size = tokenizer, 400

  def read(train_examples=0, max_examples=0):
    config.data.train_examples, config.data.max_examples = train_examples, max_examples
    return pipeline.read_data(config, readers.read_pairs, VOCABULARY_FILES)

  def sources(data):  # The training sources' ids, from every batch of an epoch.
    batches = [data.train_batches.batch_at(step) for step in range(data.train_batches.num_batches)]
    return [
      tuple(row[:n].tolist())
      for batch in batches
      for row, n in zip(batch["inputs"], batch["input_lengths"])
      if n
    ]

  full, half, quarter = read(), read(280), read(140)
  assert half.vocabularies == full.vocabularies == quarter.vocabularies
  assert half.valid_examples == full.valid_examples
  assert len(sources(half)) == 280 and len(sources(quarter)) == 140
  assert set(sources(quarter)) <= set(sources(half)) < set(sources(full))
  # Drawn across the file (sorted by length), not its first pairs: longer sentences too.
  first = read(max_examples=300)
  assert max(map(len, sources(half))) > max(map(len, sources(first)))
  with pytest.raises(TextgenError, match=r"^--config.data.train_examples=10000: the training"):
    read(10_000)
