r"""Runs a tutorial page's Python blocks in order, in one namespace, as a reader pasting them would.

  python experiments/run_tutorial.py docs/tutorial_seq2seq.md                  # full size
  python experiments/run_tutorial.py docs/tutorial_seq2seq.md --write_outputs  # and record them
  TEXTGEN_TUTORIAL=toy python experiments/run_tutorial.py docs/tutorial_seq2seq.md  # seconds

The pages read `TEXTGEN_TUTORIAL` (their first block says how): `toy` shrinks data and steps so
that CI runs every block (tests/test_tutorials.py) and the pages cannot drift from the code.
With --write_outputs each block's printed output replaces the ```text block that follows it (one
is added where none is): the outputs a page shows are the ones its last full run printed.
"""

import contextlib
import io
import re
import sys
import time

from absl import app, flags

_WRITE = flags.DEFINE_bool(
  "write_outputs", False, "Write each block's printed output into the page after it."
)

# A fenced block: its language and its text (fences of three backticks at a line's start).
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```\n", re.MULTILINE | re.DOTALL)


class _Tee(io.TextIOBase):
  """Prints as it goes and keeps a copy (a long block's progress is seen while it runs)."""

  def __init__(self, stream):
    self.stream, self.kept = stream, io.StringIO()

  def write(self, text: str) -> int:
    self.stream.write(text)
    self.kept.write(text)
    return len(text)

  def flush(self) -> None:
    self.stream.flush()


def python_blocks(page: str) -> list[re.Match]:
  return [block for block in _BLOCK.finditer(page) if block.group(1) == "python"]


def run(page: str, path: str = "<page>") -> list[str]:
  """Executes the page's Python blocks in one namespace; each block's printed output."""
  namespace: dict = {"__name__": "__tutorial__"}
  outputs = []
  for number, block in enumerate(python_blocks(page), start=1):
    line = page.count("\n", 0, block.start(2)) + 1
    tee = _Tee(sys.stdout)
    start = time.perf_counter()
    with contextlib.redirect_stdout(tee):
      exec(compile(block.group(2), f"{path}:{line}", "exec"), namespace)  # pylint: disable=exec-used
    print(
      f"[{path}: block {number} (line {line}) ran in {time.perf_counter() - start:.1f} s]",
      file=sys.stderr,
    )
    outputs.append(tee.kept.getvalue())
  return outputs


def with_outputs(page: str, outputs: list[str]) -> str:
  """The page with each Python block followed by a ```text block of its output (none for a
  block that printed nothing)."""
  pieces, position = [], 0
  blocks = list(_BLOCK.finditer(page))
  python = [i for i, block in enumerate(blocks) if block.group(1) == "python"]
  for index, output in zip(python, outputs):
    block = blocks[index]
    pieces.append(page[position : block.end()])
    position = block.end()
    following = blocks[index + 1] if index + 1 < len(blocks) else None
    if following is not None and following.group(1) == "text":
      if page[block.end() : following.start()].strip() == "":  # Directly after: its output.
        position = following.end()
    if output.strip():
      pieces.append("```text\n" + output.rstrip() + "\n```\n")
  pieces.append(page[position:])
  return "".join(pieces)


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("give one tutorial page, e.g. docs/tutorial_seq2seq.md")
  path = argv[1]
  with open(path, encoding="utf-8") as f:
    page = f.read()
  outputs = run(page, path)
  if _WRITE.value:
    with open(path, "w", encoding="utf-8") as f:
      f.write(with_outputs(page, outputs))


if __name__ == "__main__":
  app.run(main)
