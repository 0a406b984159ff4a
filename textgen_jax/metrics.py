"""Metric summaries, the workdir's metrics.jsonl (and its TensorBoard events), and the
loss-curve plot."""

import json
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from textgen_jax.errors import TextgenError
from textgen_jax.files import write_atomically
from textgen_jax.tensorboard_events import EventWriter


# Train-record fields that time the run (loop.Clock): they differ from one run of the same
# steps to the next, so comparisons of records for exactness leave them out (without_timing).
TIMING_KEYS = ("train_steps_per_second", "train_tokens_per_second", "wall_seconds")


def without_timing(record: dict[str, Any]) -> dict[str, Any]:
  """A record without its TIMING_KEYS."""
  return {key: value for key, value in record.items() if key not in TIMING_KEYS}


def summarize(
  sums: dict[str, float], derived: Callable[[dict[str, float]], dict[str, float]] | None = None
) -> dict[str, float]:
  """Accumulated sums to loss (nats/token), token accuracy, exact match and perplexity, plus
  what the family derives from its own sums (`derived`: families.Family.summary)."""
  tokens, sequences = max(sums["tokens"], 1.0), max(sums["sequences"], 1.0)
  loss = sums["nll_sum"] / tokens
  summary = {
    "loss": loss,
    "token_accuracy": sums["correct_tokens"] / tokens,
    "exact_match": sums["exact_sequences"] / sequences,
    "perplexity": math.exp(min(loss, 50.0)),
  }
  if derived is not None:
    summary.update(derived(sums))
  return summary


class MetricWriter:
  """Appends one JSON object per line to <workdir>/metrics.jsonl, and its numbers as
  TensorBoard scalars to the workdir's event file (when enabled: of several hosts, process 0
  alone writes)."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.enabled = enabled
    self.events = EventWriter(workdir, enabled)

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    if not self.enabled:
      return
    record = {"step": step, **{k: _to_python(v) for k, v in metrics.items()}}
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps(record) + "\n")
    self.events.scalars(step, scalar_tags(record))

  def write_text(self, step: int, tag: str, lines: list[str], member: int | None = None) -> None:
    """Lines printed at an evaluation (sample translations, sentences), for TensorBoard's text
    tab (metrics.jsonl keeps numbers only)."""
    if lines:
      prefix = "" if member is None else f"member_{member}/"
      # Indented: Markdown shows the lines as written, one per line.
      self.events.text(step, prefix + tag, "\n".join("    " + line for line in lines))

  def truncate_after(self, step: int) -> None:
    """Drops records past `step`: a resumed run rewrites them, so the log has no duplicates.
    A torn last line (a crash or a full disk while appending) goes too, with a note."""
    if not self.enabled:
      return
    records, torn = self._read()
    kept = [r for r in records if r["step"] <= step]
    if torn:
      print(f"note: {self.path}: dropped its last line, cut short by an interrupted write")
    if len(kept) != len(records) or torn:
      write_atomically(self.path, "".join(json.dumps(r) + "\n" for r in kept))
    self.events.truncate_after(step)

  def read(self) -> list[dict[str, Any]]:
    """The records; a torn last line (see truncate_after) is left out."""
    return self._read()[0]

  def _read(self) -> tuple[list[dict[str, Any]], bool]:
    """(records, whether the last line was torn). A bad line elsewhere is a one-line error
    naming it: records are appended whole, so only the last can be cut short."""
    if not os.path.exists(self.path):
      return [], False
    with open(self.path, encoding="utf-8", errors="replace") as f:
      lines = [(number, line) for number, line in enumerate(f, start=1) if line.strip()]
    records = []
    for index, (number, line) in enumerate(lines):
      try:
        record = json.loads(line)
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
          raise ValueError("not a record with a step")
      except ValueError as e:
        if index == len(lines) - 1:
          return records, True
        raise TextgenError(
          f"{self.path}:{number}: not a metrics record ({e}); the file was "
          "edited or damaged: repair or remove that line"
        ) from None
      records.append(record)
    return records, False


def scalar_tags(record: dict[str, Any]) -> dict[str, float]:
  """A record's numbers under TensorBoard tags: "train_loss" -> "train/loss" (so the train and
  held-out metrics form groups), under "member_<i>/" for a population's member."""
  prefix = "" if record.get("member") is None else f"member_{record['member']}/"
  tags = {}
  for key, value in record.items():
    if key in ("step", "member") or isinstance(value, bool) or not isinstance(value, (int, float)):
      continue
    if key.startswith(("train_", "valid_")):
      key = key.replace("_", "/", 1)
    tags[prefix + key] = float(value)
  return tags


def _to_python(value: Any) -> Any:
  if isinstance(value, (np.ndarray, np.generic)):
    return value.item()
  return value


def plot_loss_curves(records: list[dict[str, Any]], png_path: str) -> None:
  """Train and validation loss (and validation accuracy) against step, as a PNG."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  train = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
  valid = [r for r in records if "valid_loss" in r]
  fig, loss_axis = plt.subplots(figsize=(7, 4))
  if train:
    loss_axis.plot(*zip(*train), label="train loss")
  if valid:
    loss_axis.plot(
      [r["step"] for r in valid], [r["valid_loss"] for r in valid], "o-", label="valid loss"
    )
    accuracy_axis = loss_axis.twinx()
    accuracy_axis.plot(
      [r["step"] for r in valid],
      [r["valid_token_accuracy"] for r in valid],
      "s--",
      color="tab:green",
      label="valid token accuracy",
    )
    accuracy_axis.set_ylabel("accuracy")
    accuracy_axis.set_ylim(0, 1)
    accuracy_axis.legend(loc="center right")
  loss_axis.set_xlabel("step")
  loss_axis.set_ylabel("nats per token")
  loss_axis.legend(loc="upper right")
  fig.tight_layout()
  fig.savefig(png_path, dpi=100)
  plt.close(fig)
