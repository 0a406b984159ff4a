"""Tests for textgen_jax.data.readers: TSV pairs and one-sentence-per-line files."""

import pytest

from tests.helpers import ATTRIBUTION, BUNDLED_CORPUS, write_text
from textgen_jax.data import readers
from textgen_jax.errors import TextgenError


def test_read_pairs_ignores_extra_columns_and_blank_lines(tmp_path, capsys):
  path = write_text(tmp_path / "f.tsv", f"Go.\tVa !\t{ATTRIBUTION}\n\nHi.\tSalut !\n  \n"
                    "Run!\tCours\u202f!\textra\tcolumns\n")
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


@pytest.mark.parametrize("bad_line, problem", [
    ("Hi. Salut !", "no tab"),
    ("\tSalut !", "empty source"),
    ("   \tSalut !", "empty source"),
    ("Hi.\t", "empty target"),
    ("Hi.\t  \tattribution", "empty target"),
])
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
  path = write_text(tmp_path / "f.tsv",
                    "Go.\tVa !\nno tab\nHi.\tSalut !\n\tno source\nno target\t\nWho?\tQui ?\n")
  pairs, report = readers.read_pairs(path, skip_malformed=True, verbose=False)
  assert pairs == [("Go.", "Va !"), ("Hi.", "Salut !"), ("Who?", "Qui ?")]
  assert report.num_kept == 3
  assert [n for n, _ in report.skipped] == [2, 4, 5]
  assert [why for _, why in report.skipped] == [
      "no tab between source and target", "empty source", "empty target"]
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
  with pytest.raises(TextgenError, match="UTF-8"):
    readers.read_pairs(str(path))


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
  report = readers.ReadReport("f.tsv", num_kept=1, num_blank=2,
                              skipped=[(n, "no tab") for n in (3, 5, 7, 9)])
  summary = report.summary()
  assert "skipped 4 malformed lines" in summary
  assert "line 7" in summary and "line 9" not in summary
  assert "ignored 2 blank lines" in summary
  assert summary.startswith("f.tsv: read 1 examples, skipped 4")


def test_the_seq2seq_default_holds_out_by_source(tmp_path):
  """Tatoeba's repeated sources (several translations each) never straddle the split."""
  # pylint: disable=import-outside-toplevel
  from textgen_jax import recipe
  from textgen_jax.seq2seq import config as seq2seq_config
  from textgen_jax.seq2seq.translator import VOCABULARY_FILES
  lines = [f"Source {i % 40}.\tcible {i} .\t{ATTRIBUTION}" for i in range(400)]
  config = seq2seq_config.get_config()
  config.data.train_path = write_text(tmp_path / "pairs.tsv", "\n".join(lines) + "\n")
  config.data.valid_fraction = 0.2
  assert config.data.valid_split == "grouped"
  data = recipe.read_data(config, readers.read_pairs, VOCABULARY_FILES)
  valid_sources = {source.lower() for source, _ in data.valid_examples}
  assert len(data.valid_examples) == 10 * len(valid_sources) >= 80  # All 10 of each source.
  splits = readers.read_splits(config.data, 0, readers.read_pairs,
                               group_key=lambda pair: pair[0].lower())
  assert not {s.lower() for s, _ in splits.train} & {s.lower() for s, _ in splits.valid}
  config.data.valid_split = "random"  # Examples, as before: sources land on both sides.
  splits = readers.read_splits(config.data, 0, readers.read_pairs)
  assert {s for s, _ in splits.train} & {s for s, _ in splits.valid}


def test_parallel_files_read_as_pairs_gzipped_or_not(tmp_path):
  import gzip  # pylint: disable=import-outside-toplevel
  write_text(tmp_path / "train.de", "ein hund .\nzwei katzen .\n\nein baum .\n")
  with gzip.open(tmp_path / "train.en.gz", "wt", encoding="utf-8") as f:
    f.write("a dog .\ntwo cats .\n\na tree .\n")
  pairs, report = readers.read_pairs(f"{tmp_path / 'train.de'},{tmp_path / 'train.en.gz'}",
                                     verbose=False)
  assert pairs == [("ein hund .", "a dog ."), ("zwei katzen .", "two cats ."),
                   ("ein baum .", "a tree .")]
  assert report.line_numbers == [1, 2, 4] and report.num_blank == 1


def test_parallel_files_must_align(tmp_path):
  source = write_text(tmp_path / "a.de", "eins\nzwei\n")
  with pytest.raises(TextgenError, match=r"a\.de has 2 lines but .*b\.en has 3"):
    readers.read_pairs(source + "," + write_text(tmp_path / "b.en", "one\ntwo\nthree\n"))
  with pytest.raises(TextgenError, match=r"c\.en:2: empty line where the other file"):
    readers.read_pairs(source + "," + write_text(tmp_path / "c.en", "one\n\n"))
  pairs, report = readers.read_pairs(f"{source},{tmp_path / 'c.en'}", skip_malformed=True,
                                     verbose=False)
  assert pairs == [("eins", "one")] and len(report.skipped) == 1
  with pytest.raises(TextgenError, match="missing.en: file not found"):
    readers.read_pairs(f"{source},{tmp_path / 'missing.en'}")
  write_text(tmp_path / "bad.gz", "not gzip")
  with pytest.raises(TextgenError, match="bad.gz: not a readable gzip file"):
    readers.read_pairs(f"{source},{tmp_path / 'bad.gz'}")
