"""Loading a trained model from a workdir (its latest, best or averaged checkpoints, or one
population member) and saving an inference-only copy."""

import dataclasses
import functools
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from textgen_jax import population as population_lib
from textgen_jax.checkpointing import (
  Checkpointer,
  CorruptCheckpoint,
  ParamsMismatch,
  check_writable_path,
)
from textgen_jax.data.tokenizers import Tokenizer, tokenizer_from_config
from textgen_jax.data.vocab import Vocabulary, load_vocabulary
from textgen_jax.errors import TextgenError
from textgen_jax.families import Family
from textgen_jax.workdir.assets import (
  CONFIG_FILE,
  best_dir,
  check_vocabulary_files,
  checkpoint_dir,
  family_of,
  has_checkpoints,
  read_model_config,
  write_assets,
)
from textgen_jax.workdir.resume import check_saved_config


@dataclasses.dataclass(frozen=True)
class Loaded:
  """A trained model read from a workdir: what a family's inference class is built from."""

  config: ml_collections.ConfigDict
  model: nn.Module
  params: Any
  tokenizers: list[Tokenizer]  # One per vocabulary, each the one its file records.
  vocabularies: list[Vocabulary]  # In the order of the family's vocabulary files.
  step: int


def load(
  workdir: str,
  family: Family,
  step: int | None = None,
  member: int | None = None,
  average_last: int = 0,
) -> Loaded:
  """The `family` model in a workdir (or a `save`d directory) at its latest checkpoint, or at
  `step`; with average_last = K > 1, the mean of the parameters of the last K kept checkpoints
  (those up to `step`), the checkpoint averaging of the NMT literature (Vaswani et al. 2017;
  Junczys-Dowmunt et al. 2016): a small, free gain at the end of training.

  Of a population's workdir, `member` (default: the best, see best_member) as an ordinary run:
  its config is population.member_config's, so `save` exports it as an ordinary workdir.
  """
  train_script, vocabulary_files = family.train_script, list(family.vocabulary_files)
  if not has_checkpoints(workdir):
    raise TextgenError(
      f"{workdir}: no checkpoint found; train one with {train_script} --workdir={workdir}"
    )
  config = read_model_config(workdir)
  found = family_of(config)
  if found != family.name:
    raise TextgenError(
      f"{workdir} holds a {found} model, not a {family.name} model; train one with "
      f"{train_script} --workdir=<new directory>"
    )
  check_saved_config(workdir, config, family.get_config())
  vocabularies, tokenizer_configs = [], []
  for filename in vocabulary_files:
    vocab, tokenizer_cfg = load_vocabulary(os.path.join(workdir, filename))
    vocabularies.append(vocab)
    tokenizer_configs.append(tokenizer_cfg)
  check_vocabulary_files(workdir, vocabulary_files)
  try:
    model = family.build_model(config.model, *vocabularies)
  except (TypeError, ValueError) as e:  # A value the model rejects (config.json edited).
    raise TextgenError(
      f"{os.path.join(workdir, CONFIG_FILE)}: its model section does not "
      f"describe a {family.name} model ({e})"
    ) from None
  members = population_lib.parse(config, per_member=None)
  if members is None and member is not None:
    raise TextgenError(f"--member={member}: {workdir} holds one run, not a population")
  init = functools.partial(family.init_params, model)
  params_shape = jax.eval_shape(
    init if members is None else jax.vmap(init),
    jax.random.key(0) if members is None else jax.random.split(jax.random.key(0), members.size),
  )
  # An early-stopped run's model is its best evaluation's, not its last step's.
  best = best_dir(workdir)
  use_best = (
    step is None
    and average_last <= 1
    and os.path.isdir(best)
    and any(name.isdigit() for name in os.listdir(best))
  )
  directory = best if use_best else checkpoint_dir(workdir)
  try:
    step, params = _restore_params(workdir, params_shape, step, average_last, directory)
    if use_best:
      print(
        f"note: loading {workdir}'s best held-out checkpoint (step {step}, in {best}); "
        "--step=N loads another",
        file=sys.stderr,
      )
  except ParamsMismatch as e:
    described_by = ", ".join(
      os.path.join(workdir, name) for name in (CONFIG_FILE, *vocabulary_files)
    )
    raise TextgenError(
      f"{e}; the model is described by {described_by}: was one of them edited "
      "or copied from another run?"
    ) from None
  if members is not None:
    member = best_member(workdir, step, config, members) if member is None else member
    config = population_lib.member_config(config, member, members)
    params = population_lib.member(params, member)
  column_tokenizers = []
  for cfg in tokenizer_configs:  # A joint subword model is read once, for all its columns.
    same = next((t for c, t in zip(tokenizer_configs, column_tokenizers) if c == cfg), None)
    column_tokenizers.append(same if same is not None else tokenizer_from_config(cfg, workdir))
  return Loaded(config, model, params, column_tokenizers, vocabularies, step)


def best_member(
  workdir: str, step: int, config: ml_collections.ConfigDict, population: population_lib.Population
) -> int:
  """The best member of a population's workdir at the checkpoint of `step`: as the run ranked
  them at its end (saved with its last checkpoint), else by their held-out results at that step
  (an unfinished run; config.population.select_metric), else as members.json says (checkpoints
  older than the run state)."""
  checkpointer = Checkpointer(checkpoint_dir(workdir))
  try:
    saved = (checkpointer.restore_run_state(step) or {}).get("members")
  finally:
    checkpointer.close()
  if saved is None:
    return population_lib.read_summary(workdir)["best"]
  held_out, dropped, best = population_lib.ranking_from_json(saved)
  if best is not None:
    return best
  table = population_lib.summary(held_out, population, dropped, config.population.select_metric)
  return table["best"]


def _restore_params(
  workdir: str,
  params_shape: Any,
  step: int | None,
  average_last: int = 0,
  directory: str | None = None,
) -> tuple[int, Any]:
  """The parameters at `step` (default: the newest intact checkpoint), or the mean of the last
  `average_last` intact checkpoints up to it. A damaged checkpoint is skipped with a warning and
  left where it is (the training run that owns the workdir moves it aside); one named by `step`
  is an error. A training may remove old checkpoints while this reads: a step that vanishes
  mid-read sends it back to list the steps again. `directory`: the checkpoints' (default
  <workdir>/checkpoints; <workdir>/best for an early-stopped run's best)."""
  if average_last < 0:
    raise TextgenError(f"--average_last must be >= 0, got {average_last}")
  directory = directory or checkpoint_dir(workdir)
  for _ in range(_READ_ATTEMPTS):
    try:
      checkpointer = Checkpointer(directory)
    except FileNotFoundError:  # A step removed while orbax listed the steps: list again.
      continue
    listed = checkpointer.all_steps()
    try:
      return _restore_listed(checkpointer, workdir, listed, params_shape, step, average_last)
    except (OSError, TextgenError):
      if all(os.path.isdir(checkpointer.step_dir(s)) for s in listed):
        raise  # Nothing vanished: the error is the reader's to see.
    finally:
      checkpointer.close()
  raise TextgenError(
    f"{directory}: checkpoints were removed while they were read, "
    f"{_READ_ATTEMPTS} times in a row (a training rotating them?); try again"
  )


# Reads of a workdir whose steps vanish under them (a training rotating its checkpoints) before
# giving up: each retry follows a removal, so more than a few means something else is wrong.
_READ_ATTEMPTS = 5


def _restore_listed(
  checkpointer: Checkpointer,
  workdir: str,
  available: list[int],
  params_shape: Any,
  step: int | None,
  average_last: int,
) -> tuple[int, Any]:
  """_restore_params over the steps `available` as listed once."""
  if step is not None and step not in available:
    raise TextgenError(f"{workdir}: no checkpoint at step {step}; it has steps {available}")
  candidates = [s for s in available if step is None or s <= step]
  steps = []
  for candidate in reversed(candidates):
    try:
      checkpointer.verify(candidate)
    except CorruptCheckpoint as e:
      if candidate == step:  # Named by --step: no other checkpoint stands in for it.
        raise CorruptCheckpoint(
          f"{e}; choose another --step (the workdir has steps {available})"
        ) from None
      print(f"warning: {e}; skipped", file=sys.stderr)
      continue
    steps.append(candidate)
    if len(steps) == max(average_last, 1):
      break
  if not steps:
    raise TextgenError(
      f"{checkpointer.directory}: no intact checkpoint (steps {available} "
      "are all damaged, see the warnings above)"
    )
  if len(steps) < average_last:
    damaged = len(candidates) - len(steps)  # The loop read them all: fewer than asked.
    raise TextgenError(
      f"--average_last={average_last}: {workdir} keeps {len(steps)} "
      f"checkpoints up to step {steps[0]} ({steps[::-1]}"
      f"{f', and {damaged} damaged' if damaged else ''}); "
      "train.keep_checkpoints sets how many are kept"
    )
  return steps[0], average_params(
    [checkpointer.restore_params(params_shape, s) for s in reversed(steps)]
  )


def average_params(params_list: Sequence[Any]) -> Any:
  """The elementwise mean of parameter trees of one structure, returned in each leaf's dtype.

  Summed in float64, where float32 sums of a few trees are exact: the mean of identical trees is
  each of them, bit for bit. One tree is returned as it is.
  """
  if len(params_list) == 1:
    return params_list[0]
  return jax.tree.map(
    lambda *leaves: (sum(np.asarray(x, np.float64) for x in leaves) / len(leaves)).astype(
      leaves[0].dtype
    ),
    *params_list,
  )


def save(
  directory: str,
  config: ml_collections.ConfigDict,
  tokenizers: Sequence[Tokenizer],
  vocabularies: Mapping[str, Vocabulary],
  params: Any,
  step: int = 0,
) -> None:
  """Writes an inference-only copy (config, vocabularies, parameters) that `load` reads."""
  if os.path.exists(checkpoint_dir(directory)):
    raise TextgenError(
      f"{directory} already holds a saved model or a training run; save to a new directory"
    )
  check_writable_path(directory, directory)
  os.makedirs(directory, exist_ok=True)
  write_assets(directory, config, tokenizers, vocabularies)
  checkpointer = Checkpointer(checkpoint_dir(directory))
  checkpointer.save_params(params, step)
  checkpointer.close()
