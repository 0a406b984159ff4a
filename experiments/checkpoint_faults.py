r"""Damages checkpoints the ways disks and copies do, then checks that training and inference find
the damage and carry on from the newest intact checkpoint: the figures of docs/reliability.md.

  python -m experiments.checkpoint_faults --trials=240 --resume_trials=24

One tiny run (experiments/configs/seq2seq_tiny.py: 300 steps, checkpoints at 100, 200 and 300)
is trained once. Each trial copies it and damages one file of one kind (`file_kind`: data,
manifest, metadata, marker) in the newest checkpoint or in every checkpoint, by truncation (to
a random length), by flipping one bit (at a random position) or by deleting it (a partial
copy). Then, on the damaged copy:
- inference (Translator.load, which skips damaged checkpoints and moves nothing) must load the
  parameters of the newest intact checkpoint exactly as they were saved, or fail in one line
  when every checkpoint is damaged;
- training's restore (Checkpointer.set_aside_corrupt, then restore: what loop.train runs)
  must move aside exactly the damaged checkpoints newer than the newest intact one and restore
  that one's state (parameters, optimizer state, step) exactly;
- in the first --resume_trials trials, the damaged copy is also trained on to step 300 with
  train_and_evaluate: its final parameters and train metric records must equal the undamaged
  run's (resumption is exact, so where it resumed from does not change where it ends).
A trial passing all of these is "recovered"; "steps_lost" is 300 minus the step training resumed
from. One JSON line per trial, then one per (target, kind, fault) and a total.
"""

import contextlib
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import flags

from textgen_jax import cli, seq2seq, training
from textgen_jax import metrics as metrics_lib
from textgen_jax.checkpointing import CHECKSUMS_FILE, UNCHECKED_FILES, Checkpointer, list_files
from textgen_jax.errors import TextgenError
from textgen_jax.workdir import checkpoint_dir

KINDS = ("data", "manifest", "metadata", "marker")
FAULTS = ("truncate", "flip", "delete")
TARGETS = ("newest", "every")


def file_kind(name: str) -> str:
  """data: TensorStore's array chunks (under d/); manifest: OCDBT's manifests and our checksums;
  marker: orbax's commit_success.txt; metadata: the rest (_METADATA, _sharding,
  array_metadatas/, _CHECKPOINT_METADATA)."""
  base = name.rsplit("/", 1)[-1]
  if "/d/" in f"/{name}":
    return "data"
  if base in ("manifest.ocdbt", CHECKSUMS_FILE):
    return "manifest"
  if base == "commit_success.txt":
    return "marker"
  return "metadata"


def damage(path: str, fault: str, rng: np.random.Generator) -> dict[str, int]:
  """Truncates `path` to a random shorter length, flips one random bit of it, or deletes it (a
  partial copy)."""
  size = os.path.getsize(path)
  if fault == "delete":
    os.remove(path)
    return {"bytes": size}
  if fault == "truncate":
    kept = int(rng.integers(0, size))
    os.truncate(path, kept)
    return {"bytes": size, "kept": kept}
  position, bit = int(rng.integers(0, size)), int(rng.integers(0, 8))
  with open(path, "r+b") as f:
    f.seek(position)
    byte = f.read(1)[0]
    f.seek(position)
    f.write(bytes([byte ^ (1 << bit)]))
  return {"bytes": size, "position": position, "bit": bit}


@dataclasses.dataclass
class Run:
  """The undamaged run: its workdir, config and the state saved at each checkpoint."""

  workdir: str
  config: ml_collections.ConfigDict
  saved: dict[int, Any]  # step -> TrainState restored from the undamaged checkpoint.
  train_records: list[dict[str, Any]]

  @property
  def steps(self) -> list[int]:
    return sorted(self.saved)


def train_run(config: ml_collections.ConfigDict, workdir: str) -> Run:
  """Trains `config` in `workdir` (keeping every checkpoint) and reads back each one."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.train.keep_checkpoints = config.train.num_steps // config.train.checkpoint_every
  with contextlib.redirect_stdout(sys.stderr):  # stdout is for the JSON lines.
    params = seq2seq.train_and_evaluate(config, workdir).params
  template = training.create_train_state(
    None, params, training.make_optimizer(config.opt, config.train.num_steps)
  )
  checkpointer = Checkpointer(checkpoint_dir(workdir))
  saved = {
    step: jax.device_get(checkpointer.restore(template, step)) for step in checkpointer.all_steps()
  }
  checkpointer.close()
  return Run(workdir, config, saved, _train_records(workdir))


def _train_records(workdir: str) -> list[dict[str, Any]]:
  # Without the fields that time the run: they differ between two runs of the same steps.
  return [
    metrics_lib.without_timing(r)
    for r in metrics_lib.MetricWriter(workdir).read()
    if "train_loss" in r
  ]


def _equal(a: Any, b: Any) -> bool:
  leaves_a, leaves_b = jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))
  return len(leaves_a) == len(leaves_b) and all(
    np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(x, y)
    for x, y in zip(leaves_a, leaves_b)
  )


def trial(
  run: Run,
  directory: str,
  target: str,
  kind: str,
  fault: str,
  rng: np.random.Generator,
  resume: bool = False,
) -> dict[str, Any]:
  """Damages a copy of the run in `directory` (one file of `kind` per checkpoint hit) and
  checks inference, training's restore and, with `resume`, training to the end."""
  workdir = os.path.join(directory, "workdir")
  shutil.copytree(run.workdir, workdir)
  checkpoints = checkpoint_dir(workdir)
  hit = run.steps[-1:] if target == "newest" else run.steps
  damaged, checked_damage = {}, set()  # checked_damage: steps damaged where verify looks.
  for step in hit:
    step_dir = os.path.join(checkpoints, str(step))
    names = [
      n
      for n in list_files(step_dir)
      if file_kind(n) == kind and os.path.getsize(os.path.join(step_dir, n)) > 0
    ]
    name = names[int(rng.integers(len(names)))]
    damaged[step] = {"file": name, **damage(os.path.join(step_dir, name), fault, rng)}
    if name not in UNCHECKED_FILES:
      checked_damage.add(step)
  for step in hit:  # Without checksums.json, and no older checkpoint with it: pre-checksums.
    if not any(
      os.path.exists(os.path.join(checkpoints, str(s), CHECKSUMS_FILE))
      for s in run.steps
      if s <= step
    ):
      checked_damage.discard(step)
  record = {"target": target, "kind": kind, "fault": fault, "damaged": damaged}
  problems = []

  # A checkpoint is intact when no file verify checks was damaged (UNCHECKED_FILES are not
  # read to restore: damage there must leave the checkpoint usable as it was saved).
  expected = max([s for s in run.steps if s not in checked_damage], default=None)

  # Inference: damaged checkpoints skipped, nothing moved.
  try:
    params = seq2seq.Translator.load(workdir).params
    if expected is None or not _equal(params, run.saved[expected].params):
      problems.append(f"inference loaded other parameters than those saved at step {expected}")
  except TextgenError as e:
    if expected is not None or "no intact checkpoint" not in str(e):
      problems.append(f"inference failed: {e}")

  # Training's restore: the damaged newest checkpoints set aside, the newest intact restored.
  checkpointer = Checkpointer(checkpoints, for_training=True)
  moved = [step for step, _, _ in checkpointer.set_aside_corrupt()]
  resumed = checkpointer.latest_step()
  if moved != sorted((s for s in checked_damage if expected is None or s > expected), reverse=True):
    problems.append(f"moved aside {moved}")
  if resumed != expected:
    problems.append(f"resumes from {resumed}, expected {expected}")
  elif resumed is not None:
    restored = checkpointer.restore(jax.device_get(run.saved[resumed]))
    if not _equal(restored, run.saved[resumed]):
      problems.append(f"the state restored from step {resumed} differs from the one saved")
  checkpointer.close()
  still_aside = all(os.path.isdir(os.path.join(checkpoints, "corrupt", str(s))) for s in moved)
  if not still_aside:
    problems.append("a checkpoint set aside is missing from corrupt/")
  record.update(
    checked_damage=sorted(checked_damage),
    moved_aside=moved,
    resumed_from=resumed,
    steps_lost=run.steps[-1] - (resumed or 0),
  )

  if resume:  # Training to the end from the damaged copy ends where the undamaged run ended.
    with contextlib.redirect_stdout(sys.stderr):
      final = seq2seq.train_and_evaluate(run.config, workdir)
    if not _equal(final.params, run.saved[run.steps[-1]].params):
      problems.append("training on did not end at the undamaged run's parameters")
    if _train_records(workdir) != run.train_records:
      problems.append("training on did not log the undamaged run's train records")
  record.update(resumed_to_end=resume, recovered=not problems, problems=problems)
  return record


def campaign(
  run: Run,
  directory: str,
  trials: int,
  resume_trials: int,
  seed: int,
  report: Callable[[dict[str, Any]], None],
) -> list[dict[str, Any]]:
  """`trials` trials cycling through every (target, kind, fault), each with its own random
  file and position; the first `resume_trials` also train on to the end."""
  cells = [(t, k, f) for t in TARGETS for k in KINDS for f in FAULTS]
  records = []
  for index in range(trials):
    target, kind, fault = cells[index % len(cells)]
    with tempfile.TemporaryDirectory(dir=directory) as trial_dir:
      record = trial(
        run,
        trial_dir,
        target,
        kind,
        fault,
        np.random.default_rng([seed, index]),
        resume=index < resume_trials,
      )
    records.append({"trial": index, **record})
    report(records[-1])
  return records


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """One line per (target, kind, fault) and a total. Of the damaged checkpoints: how many
  training set aside; how many verify does not check (damage in UNCHECKED_FILES, or
  checksums.json deleted with none older: restored as saved); how many it never had to read
  (older than an intact one). Steps lost: mean and max."""
  groups: dict[tuple, list] = {}
  for r in records:
    groups.setdefault((r["target"], r["kind"], r["fault"]), []).append(r)
  groups[("all", "all", "all")] = records

  def count(rs, which):
    return sum(which(r, int(step)) for r in rs for step in r["damaged"])

  return [
    {
      "target": t,
      "kind": k,
      "fault": f,
      "trials": len(rs),
      "recovered": sum(r["recovered"] for r in rs),
      "resumed_to_end": sum(r["resumed_to_end"] for r in rs),
      "damaged_checkpoints": count(rs, lambda r, step: True),
      "set_aside": count(rs, lambda r, step: step in r["moved_aside"]),
      "not_checked": count(rs, lambda r, step: step not in r["checked_damage"]),
      "not_reached": count(
        rs, lambda r, step: step in r["checked_damage"] and step not in r["moved_aside"]
      ),
      "mean_steps_lost": float(np.mean([r["steps_lost"] for r in rs])),
      "max_steps_lost": max(r["steps_lost"] for r in rs),
    }
    for (t, k, f), rs in groups.items()
  ]


def main(argv: list[str]) -> None:
  del argv
  from experiments.configs import seq2seq_tiny  # pylint: disable=import-outside-toplevel

  with tempfile.TemporaryDirectory() as directory:
    config = seq2seq_tiny.get_config()
    config.train.num_steps = 300
    config.train.num_examples_to_print = 0
    run = train_run(config, os.path.join(directory, "run"))
    records = campaign(
      run,
      directory,
      flags.FLAGS.trials,
      flags.FLAGS.resume_trials,
      flags.FLAGS.seed,
      lambda r: print(json.dumps(r), flush=True),
    )
  for line in summarize(records):
    print(json.dumps({"summary": True, **line}), flush=True)
  if not all(r["recovered"] for r in records):
    sys.exit(1)


if __name__ == "__main__":  # The flags are defined here: tests import this module.
  flags.DEFINE_integer("trials", 240, "How many damaged copies to try.")
  flags.DEFINE_integer("resume_trials", 24, "How many of them also train on to the end.")
  flags.DEFINE_integer("seed", 0, "Chooses the files, positions and bits.")
  cli.run(main)
