"""Corpus readers: tab-separated sentence pairs and one-sentence-per-line text.

A malformed line is an error naming the file and line, or, with `skip_malformed=True`, skipped
and counted in a printed summary. Nothing is dropped silently.
"""

import dataclasses
import os

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


def _read_text_lines(path: str) -> list[str]:
  if not os.path.exists(path):
    raise TextgenError(f"{path}: file not found")
  if os.path.isdir(path):
    raise TextgenError(f"{path}: is a directory, expected a text file")
  try:
    with open(path, encoding="utf-8") as f:
      lines = f.read().splitlines()
  except UnicodeDecodeError as e:
    raise TextgenError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
  if not any(line.strip() for line in lines):
    raise TextgenError(f"{path}: file is empty")
  return lines


def _finish(report: ReadReport, skip_malformed: bool, verbose: bool) -> None:
  if report.num_kept == 0:
    raise TextgenError(f"{report.path}: no usable lines ({len(report.skipped)} malformed)")
  if verbose or (skip_malformed and report.skipped):
    print(report.summary())


def read_pairs(path: str, skip_malformed: bool = False,
               verbose: bool = True) -> tuple[list[tuple[str, str]], ReadReport]:
  """Reads `source<TAB>target[<TAB>anything]` lines (Tatoeba/Anki format).

  Blank lines are ignored and counted. Extra columns (Anki's attribution) are ignored.
  """
  report = ReadReport(path)
  pairs = []
  for line_number, line in enumerate(_read_text_lines(path), start=1):
    if not line.strip():
      report.num_blank += 1
      continue
    columns = line.split("\t")
    if len(columns) < 2:
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
      raise TextgenError(f"{path}:{line_number}: {problem}; expected 'source<TAB>target' "
                         "(set data.skip_malformed=True to skip such lines)")
    report.skipped.append((line_number, problem))
  report.num_kept = len(pairs)
  _finish(report, skip_malformed, verbose)
  return pairs, report


def read_lines(path: str, skip_malformed: bool = False,
               verbose: bool = True) -> tuple[list[str], ReadReport]:
  """Reads one sentence per line (Penn Treebank style); an empty line is malformed."""
  report = ReadReport(path)
  sentences = []
  for line_number, line in enumerate(_read_text_lines(path), start=1):
    if line.strip():
      sentences.append(line)
      report.line_numbers.append(line_number)
      continue
    if not skip_malformed:
      raise TextgenError(f"{path}:{line_number}: empty line "
                         "(set data.skip_malformed=True to skip such lines)")
    report.skipped.append((line_number, "empty line"))
  report.num_kept = len(sentences)
  _finish(report, skip_malformed, verbose)
  return sentences, report
