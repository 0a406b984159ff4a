"""What the tests share: tiny configs and corpora, tree comparisons, running the scripts.

Configs and corpora are made here (seconds-long runs); `run_script` runs an experiments/ script
the way a user does and `assert_one_line_error` checks the promise every script makes about bad
input; `read_metrics` reads a workdir's metrics.jsonl.
"""

import json
import os
import random
import shutil
import subprocess
import sys
import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from textgen_jax import checkpointing, metrics, seq2seq, training, vae
from textgen_jax.data import batching
from textgen_jax.seq2seq.model import Seq2Seq, Seq2SeqConfig

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED_CORPUS = os.path.join(REPO_ROOT, "textgen_jax", "data", "corpora", "fra_eng_40k.tsv")

# A toy English->French word lexicon; pairs built from it are trivially learnable.
_LEXICON = {
  "go": "va",
  "run": "cours",
  "hi": "salut",
  "stop": "arrête",
  "wait": "attends",
  "eat": "mange",
  "sit": "assis",
  "help": "aide",
}
ATTRIBUTION = "CC-BY 2.0 (France) Attribution: tatoeba.org #1 (someone) & #2 (someone else)"


def make_pairs(num_pairs: int, seed: int = 0) -> list[tuple[str, str]]:
  """Deterministic two-word sentence pairs such as ("Go eat.", "Va mange !")."""
  rng = random.Random(seed)
  english = sorted(_LEXICON)
  pairs = []
  for _ in range(num_pairs):
    first, second = rng.choice(english), rng.choice(english)
    pairs.append(
      (f"{first.capitalize()} {second}.", f"{_LEXICON[first].capitalize()} {_LEXICON[second]} !")
    )
  return pairs


def write_tsv(path: Any, pairs: Iterable[tuple[str, str]], attribution: bool = True) -> str:
  """Writes `source<TAB>target[<TAB>attribution]` lines (the Tatoeba/Anki layout)."""
  with open(path, "w", encoding="utf-8") as f:
    for source, target in pairs:
      f.write(f"{source}\t{target}" + (f"\t{ATTRIBUTION}" if attribution else "") + "\n")
  return str(path)


def write_text(path: Any, text: str) -> str:
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)
  return str(path)


def bundled_pairs(num_lines: int = 200) -> list[tuple[str, str]]:
  """The first `num_lines` pairs of the bundled corpus (read directly, not via the reader)."""
  pairs = []
  with open(BUNDLED_CORPUS, encoding="utf-8") as f:
    for line, _ in zip(f, range(num_lines)):
      source, target = line.rstrip("\n").split("\t")[:2]
      pairs.append((source, target))
  return pairs


def tiny_config(train_path: Any, **overrides: Any) -> ml_collections.ConfigDict:
  """A seconds-long word-level run: one bucket, H=16, constant learning rate.

  Args:
    train_path: the TSV to train on.
    **overrides: dotted field names with `__` for the dot, e.g. `model__hidden_size=32`.
  """
  config = seq2seq.get_config()
  config.seed = 0
  config.data.train_path = str(train_path)
  config.data.valid_fraction = 0.2
  config.data.tokenizer = "word"
  config.data.lowercase = True
  config.data.max_len = 6
  config.data.min_count = 1
  config.data.num_buckets = 1  # One bucket: one compiled train step per run.
  config.data.batch_size = 8
  config.model.embed_dim = 8
  config.model.hidden_size = 16
  config.model.dropout_rate = 0.1
  config.opt.learning_rate = 1e-2
  config.opt.warmup_steps = 2
  # A constant rate does not depend on train.num_steps, so a short run followed by a longer
  # resumed one sees the same learning rates as one uninterrupted run.
  config.opt.schedule = "constant"
  config.train.num_steps = 6
  config.train.log_every = 1
  config.train.eval_every = 1000
  config.train.checkpoint_every = 1000
  config.train.keep_checkpoints = 2
  config.train.num_examples_to_print = 0
  return _override(config, overrides)


def _override(
  config: ml_collections.ConfigDict, overrides: dict[str, Any]
) -> ml_collections.ConfigDict:
  for name, value in overrides.items():
    section, field = name.split("__") if "__" in name else (None, name)
    target = config if section is None else config[section]
    if field not in target:
      raise KeyError(f"no config field {name}")
    target[field] = value
  return config


# A toy corpus for the sentence VAE and LM: short, repetitive, trivially memorised.
SENTENCES = [
  "the cat sat on the mat",
  "a dog ran in the park",
  "the bird sang a song",
  "my friend likes green tea",
  "the sun rose over the hills",
  "we ate bread and cheese",
  "the train left at noon",
  "she reads a long book",
]


def tiny_vae_config(train_path: Any, **overrides: Any) -> ml_collections.ConfigDict:
  """A seconds-long sentence VAE run: one bucket, H=32, Z=4, no dropout, constant rate.

  Overrides as in `tiny_config`, e.g. `model__kind="lm"` or `vae__free_bits=0.5`.
  """
  config = vae.get_config()
  config.data.train_path = str(train_path)
  config.data.valid_path = str(train_path)
  config.data.max_len = 8
  config.data.num_buckets = 1
  config.data.batch_size = 8
  config.model.embed_dim = 16
  config.model.hidden_size = 32
  config.model.latent_size = 4
  config.model.embedding_dropout = 0.0
  config.model.output_dropout = 0.0
  config.vae.anneal_steps = 10
  config.opt.learning_rate = 1e-2
  config.train.num_steps = 6
  config.train.log_every = 2
  config.train.eval_every = 1000
  config.train.checkpoint_every = 1000
  config.train.num_examples_to_print = 0
  config.train.eval_num_samples = 0
  return _override(config, overrides)


def assert_trees_equal(a: Any, b: Any) -> None:
  """Bitwise equality of two pytrees of arrays (same structure, shapes, dtypes, values)."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(x, y)


def random_like(shapes: Any, seed: int = 0) -> Any:
  """Arrays of these shapes and dtypes drawn on the host (no init program to compile)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(0.4 * rng.standard_normal(s.shape), s.dtype), shapes)


def trees_differ(a: Any, b: Any) -> bool:
  return any(
    not np.array_equal(np.asarray(x), np.asarray(y))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )


def copy_tree(tree: Any) -> Any:
  """A copy with fresh buffers, safe to pass to a step that donates its input."""
  return jax.tree.map(lambda x: x.copy() if hasattr(x, "copy") else x, tree)


def run_script(
  script: str, *args: str, stdin: str = "", timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
  """Runs experiments/<script> from the repository root, as the README does."""
  return subprocess.run(
    [sys.executable, os.path.join("experiments", script), *args],
    input=stdin,
    capture_output=True,
    text=True,
    cwd=REPO_ROOT,
    timeout=timeout,
    check=False,
    env=env,
  )


def assert_one_line_error(
  result: subprocess.CompletedProcess, *fragments: str, only_output: bool = True
) -> None:
  """Exit code 2, no traceback, exactly one `error:` line holding every fragment; with
  only_output, that line is all the script printed."""
  assert result.returncode == 2, result.stderr
  assert "Traceback" not in result.stderr, result.stderr
  error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(error_lines) == 1, result.stderr
  for fragment in fragments:
    assert fragment in error_lines[0], error_lines[0]
  if only_output:
    assert result.stderr.strip() == error_lines[0] and result.stdout == "", result.stderr


def read_metrics(workdir: str, timing: bool = False) -> list[dict[str, Any]]:
  """The records of a workdir's metrics.jsonl, in order; without the fields that time the run
  (metrics.TIMING_KEYS) unless `timing`: two runs of the same steps differ only there."""
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  return records if timing else [metrics.without_timing(record) for record in records]


def strip_run_state(workdir: str) -> None:
  """Makes a workdir's checkpoints look written before they held the run state (the loop's and
  the recipe's host-side state): its item removed, the checksums written again."""
  directory = os.path.join(workdir, "checkpoints")
  for name in filter(str.isdigit, os.listdir(directory)):
    os.remove(os.path.join(directory, name, checkpointing.RUN_STATE))
    checkpointing.write_checksums(os.path.join(directory, name))


def rename_in_checkpoints(workdir: str, names: dict[str, str]) -> None:
  """Makes a workdir's checkpoints look written when modules had other names (names: today's
  name -> the old one): each item read as saved, renamed, written back; checksums again."""
  directory = os.path.join(workdir, "checkpoints")
  for name in filter(str.isdigit, os.listdir(directory)):
    for item in ("params", "optimizer"):
      path = os.path.join(directory, name, item)
      with ocp.StandardCheckpointer() as checkpointer:
        tree = checkpointer.restore(path)
        shutil.rmtree(path)
        checkpointer.save(path, checkpointing.renamed(tree, names))
    checkpointing.write_checksums(os.path.join(directory, name))


# ---- A tiny seq2seq train step, for the training and checkpointing tests ----

V, E, H, B, L = 11, 8, 16, 4, 7


def opt_config(**changes: Any) -> ml_collections.ConfigDict:
  """The seq2seq optimizer section at a constant 1e-2, no warmup; `changes` on top."""
  opt = seq2seq.get_config().opt
  opt.learning_rate, opt.warmup_steps, opt.schedule = 1e-2, 0, "constant"
  opt.update(changes)
  return opt


@dataclasses.dataclass
class Setup:
  """A tiny model with dropout, a fixed batch, and its compiled train and eval steps."""

  model: Seq2Seq
  params: dict
  optimizer: optax.GradientTransformation
  batch: dict
  train_step: Callable
  eval_step: Callable

  def fresh_state(self, params=None):
    return training.create_train_state(
      None, copy_tree(self.params if params is None else params), self.optimizer
    )

  def train(self, state, num_steps, rng=jax.random.key(0)):
    for _ in range(num_steps):
      state, _ = self.train_step(state, self.batch, rng)
    return state

  def loss(self, params):
    sums = jax.device_get(self.eval_step(params, self.batch))
    return sums["nll_sum"] / sums["tokens"]


def make_setup() -> "Setup":
  model = Seq2Seq(
    Seq2SeqConfig(
      source_vocab_size=V, target_vocab_size=V, embed_dim=E, hidden_size=H, dropout_rate=0.1
    )
  )
  params = jax.jit(functools.partial(seq2seq.model.init_params, model))(jax.random.key(0))
  rng = np.random.default_rng(0)
  sources = [rng.integers(4, V, n).astype(np.int32) for n in (7, 3, 5)]
  targets = [rng.integers(4, V, n).astype(np.int32) for n in (6, 2, 4)]
  loss_fn = functools.partial(seq2seq.loss.loss, model=model)
  return Setup(
    model,
    params,
    training.make_optimizer(opt_config(), 100),
    batching.pad_batch(sources, targets, B, L),
    training.jit_train_step(loss_fn),
    training.jit_eval_step(loss_fn),
  )
