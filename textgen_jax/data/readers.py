"""Corpus readers: tab-separated sentence pairs and one-sentence-per-line text, and the
train/validation split of a config's data section.

A malformed line is an error naming the file and line, or, with `skip_malformed=True`, skipped
and counted in a printed summary. Nothing is dropped silently.

Lines are what a newline ends (a carriage return before it dropped), in files and on stdin
alike: U+2028, U+0085, form feeds and the like stay inside their line, as `wc -l` and the other
side of a parallel corpus count them.
"""

import dataclasses
import gzip
import os
import sys
import zlib
from typing import Any, Callable

import ml_collections

from textgen_jax.data.batching import grouped_split_indices, split_indices
from textgen_jax.errors import TextgenError


@dataclasses.dataclass
class ReadReport:
  """What a reader kept and what it skipped, line numbers included."""

  path: str
  num_kept: int = 0
  num_blank: int = 0
  line_numbers: list[int] = dataclasses.field(default_factory=list)  # Of each kept example.
  skipped: list[tuple[int, str]] = dataclasses.field(default_factory=list)

  def summary(self) -> str:
    text = f"{self.path}: read {self.num_kept} examples"
    if self.skipped:
      first = ", ".join(f"line {n} ({why})" for n, why in self.skipped[:3])
      text += f", skipped {len(self.skipped)} malformed lines (first: {first})"
    if self.num_blank:
      text += f", ignored {self.num_blank} blank lines"
    return text


_BOM = "\ufeff"  # A UTF-8 byte order mark, which Windows editors put at the start of a file.
# NUL is no text: a tokenizer would make it a word. It means a binary or UTF-16 file, or a
# corrupt one.
_NUL, _NUL_PROBLEM = "\x00", "contains a NUL byte"


def split_lines(text: str) -> list[str]:
  r"""The lines `\n` ends (a last line without one included), each without one trailing `\r`.

  Not str.splitlines: it also splits on U+2028, U+2029, U+0085, \x0b, \x0c and \x1c-\x1e,
  which misaligns parallel files and turns one input line into several output lines.
  """
  lines = text.split("\n")
  if lines[-1] == "":
    lines.pop()
  return [line[:-1] if line.endswith("\r") else line for line in lines]


def _read_bytes(path: str) -> bytes:
  if not path.endswith(".gz"):
    with open(path, "rb") as f:
      return f.read()
  try:
    with gzip.open(path, "rb") as f:
      return f.read()
  # A corrupt body raises zlib.error or a CRC BadGzipFile, a truncated one EOFError.
  except (gzip.BadGzipFile, EOFError, zlib.error) as e:
    raise TextgenError(f"{path}: not a readable gzip file ({e})") from None


def _read_text_lines(path: str) -> list[str]:
  if not os.path.exists(path):
    raise TextgenError(f"{path}: file not found")
  if os.path.isdir(path):
    raise TextgenError(f"{path}: is a directory, expected a text file")
  data = _read_bytes(path)
  try:
    lines = split_lines(data.decode("utf-8").removeprefix(_BOM))
  except UnicodeDecodeError as e:
    line_number = data.count(b"\n", 0, e.start) + 1
    raise TextgenError(
      f"{path}:{line_number}: not UTF-8 text ({e.reason} at byte {e.start})"
    ) from None
  if not any(line.strip() for line in lines):
    raise TextgenError(f"{path}: file is empty")
  return lines


def read_input_lines(data: bytes, name: str = "<stdin>") -> list[str]:
  """The lines of piped input (a script's stdin bytes), one per input line whatever it holds.

  A BOM at the start is dropped; a NUL byte is an error naming its line; bytes that are not
  UTF-8 read as U+FFFD, with one warning on stderr naming the lines, so that a line still gives
  its output line.
  """
  # surrogateescape keeps each undecodable byte (as a lone surrogate, which strict UTF-8 never
  # decodes to) so the lines holding them can be found and decoded again with "replace".
  text = data.decode("utf-8", "surrogateescape").removeprefix(_BOM)
  lines, undecodable = [], []
  for line_number, line in enumerate(split_lines(text), start=1):
    if _NUL in line:
      raise TextgenError(f"{name}:{line_number}: {_NUL_PROBLEM}")
    if not line.isascii() and any("\udc80" <= c <= "\udcff" for c in line):
      undecodable.append(line_number)
      line = line.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    lines.append(line)
  if undecodable:
    print(
      f"warning: {name} {_line_list(undecodable)}: not UTF-8; undecodable bytes read as U+FFFD",
      file=sys.stderr,
    )
  return lines


def _line_list(line_numbers: list[int], shown: int = 10) -> str:
  """Says `line 3` or `lines 3, 7`: at most `shown` numbers, then how many there are."""
  text = ", ".join(str(n) for n in line_numbers[:shown])
  if len(line_numbers) > shown:
    text += f", ... ({len(line_numbers)} lines)"
  return ("line " if len(line_numbers) == 1 else "lines ") + text


def _finish(report: ReadReport, skip_malformed: bool, verbose: bool) -> None:
  if report.num_kept == 0:
    raise TextgenError(f"{report.path}: no usable lines ({len(report.skipped)} malformed)")
  if verbose or (skip_malformed and report.skipped):
    print(report.summary())


def parallel_paths(path: str) -> tuple[str, str] | None:
  """(source file, target file) of a "SOURCE_FILE,TARGET_FILE" path; None for one file."""
  if os.path.exists(path) or path.count(",") != 1:
    return None
  source_path, target_path = path.split(",")
  return source_path, target_path


def read_pairs(
  path: str, skip_malformed: bool = False, verbose: bool = True
) -> tuple[list[tuple[str, str]], ReadReport]:
  """Reads `source<TAB>target[<TAB>anything]` lines (Tatoeba/Anki format), or with a path
  "SOURCE_FILE,TARGET_FILE" the same lines of two parallel files (Multi30k's train.de,train.en;
  .gz files are read as they are).

  Blank lines are ignored and counted. Extra columns (Anki's attribution) are ignored.
  """
  if parallel_paths(path):
    return _read_parallel(path, *parallel_paths(path), skip_malformed, verbose)
  report = ReadReport(path)
  pairs = []
  for line_number, line in enumerate(_read_text_lines(path), start=1):
    if not line.strip():
      report.num_blank += 1
      continue
    columns = line.split("\t")
    if _NUL in line:
      problem = _NUL_PROBLEM
    elif len(columns) < 2:
      problem = "no tab between source and target"
    elif not columns[0].strip():
      problem = "empty source"
    elif not columns[1].strip():
      problem = "empty target"
    else:
      pairs.append((columns[0], columns[1]))
      report.line_numbers.append(line_number)
      continue
    if not skip_malformed:
      expected = "" if problem == _NUL_PROBLEM else "; expected 'source<TAB>target'"
      raise TextgenError(
        f"{path}:{line_number}: {problem}{expected} "
        "(set data.skip_malformed=True to skip such lines)"
      )
    report.skipped.append((line_number, problem))
  report.num_kept = len(pairs)
  _finish(report, skip_malformed, verbose)
  return pairs, report


def _read_parallel(
  path: str, source_path: str, target_path: str, skip_malformed: bool, verbose: bool
) -> tuple[list[tuple[str, str]], ReadReport]:
  """Line i of the source file with line i of the target file; an empty side is malformed."""
  sources, targets = _read_text_lines(source_path), _read_text_lines(target_path)
  if len(sources) != len(targets):
    raise TextgenError(
      f"{source_path} has {len(sources)} lines but {target_path} has "
      f"{len(targets)}: parallel files must align line by line"
    )
  report = ReadReport(path)
  pairs = []
  for line_number, (source, target) in enumerate(zip(sources, targets), start=1):
    nul_path = source_path if _NUL in source else target_path if _NUL in target else None
    if nul_path:
      if not skip_malformed:
        raise TextgenError(
          f"{nul_path}:{line_number}: {_NUL_PROBLEM} "
          "(set data.skip_malformed=True to skip such lines)"
        )
      report.skipped.append((line_number, f"{_NUL_PROBLEM} in {nul_path}"))
      continue
    if not source.strip() and not target.strip():
      report.num_blank += 1
      continue
    if source.strip() and target.strip():
      pairs.append((source, target))
      report.line_numbers.append(line_number)
      continue
    empty = source_path if not source.strip() else target_path
    if not skip_malformed:
      raise TextgenError(
        f"{empty}:{line_number}: empty line where the other file has a "
        "sentence (set data.skip_malformed=True to skip such lines)"
      )
    report.skipped.append((line_number, f"empty in {empty}"))
  report.num_kept = len(pairs)
  _finish(report, skip_malformed, verbose)
  return pairs, report


def read_lines(
  path: str, skip_malformed: bool = False, verbose: bool = True
) -> tuple[list[str], ReadReport]:
  """Reads one sentence per line (Penn Treebank style); an empty line is malformed."""
  report = ReadReport(path)
  sentences = []
  for line_number, line in enumerate(_read_text_lines(path), start=1):
    if line.strip() and _NUL not in line:
      sentences.append(line)
      report.line_numbers.append(line_number)
      continue
    problem = _NUL_PROBLEM if _NUL in line else "empty line"
    if not skip_malformed:
      raise TextgenError(
        f"{path}:{line_number}: {problem} (set data.skip_malformed=True to skip such lines)"
      )
    report.skipped.append((line_number, problem))
  report.num_kept = len(sentences)
  _finish(report, skip_malformed, verbose)
  return sentences, report


@dataclasses.dataclass
class Splits:
  """Training and held-out examples, with the "file:line" each came from (for error messages)."""

  train: list[Any]
  valid: list[Any]
  train_locations: list[str]
  valid_locations: list[str]


Reader = Callable[[str, bool], tuple[list[Any], ReadReport]]  # (path, skip_malformed)


def _read_located(reader: Reader, path: str, skip_malformed: bool) -> tuple[list, list[str]]:
  examples, report = reader(path, skip_malformed)
  return examples, [f"{path}:{n}" for n in report.line_numbers]


def read_splits(
  data_cfg: ml_collections.ConfigDict,
  seed: int,
  reader: Reader,
  group_key: Callable[[Any], str] | None = None,
) -> Splits:
  """Examples of data.train_path (its first data.max_examples, when set) and of data.valid_path,
  or a seeded data.valid_fraction split of train_path when valid_path is empty: with
  data.valid_split "grouped", examples with the same group_key (a pair's normalised source) fall
  on the same side."""
  if not data_cfg.train_path:
    raise TextgenError("--config.data.train_path is empty; set it to the training data file")
  examples, locations = _read_located(reader, data_cfg.train_path, data_cfg.skip_malformed)
  if data_cfg.max_examples:
    examples, locations = examples[: data_cfg.max_examples], locations[: data_cfg.max_examples]
  if data_cfg.valid_path:
    valid, valid_locations = _read_located(reader, data_cfg.valid_path, data_cfg.skip_malformed)
    return Splits(examples, valid, locations, valid_locations)
  if data_cfg.get("valid_split", "random") == "grouped":
    train_idx, valid_idx = grouped_split_indices(
      [group_key(e) for e in examples], data_cfg.valid_fraction, seed
    )
  else:
    train_idx, valid_idx = split_indices(len(examples), data_cfg.valid_fraction, seed)
  return Splits(
    [examples[i] for i in train_idx],
    [examples[i] for i in valid_idx],
    [locations[i] for i in train_idx],
    [locations[i] for i in valid_idx],
  )
