"""Sequence-to-sequence translation end to end: data, training, and a text-in/text-out Translator.

The short path for notebooks and scripts:

  from textgen_jax import translation
  translator = translation.fit("pairs.tsv", workdir="runs/fr", num_steps=2000)
  translator.translate(["Go.", "Hello!"])          # -> ["va !", "salut !"]
  translator = translation.Translator.load("runs/fr")

A workdir holds config.json, source_vocab.json, target_vocab.json, checkpoints/, metrics.jsonl
and loss_curve.png.
"""

import functools
import os
import sys
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from textgen_jax import decoding, device_memory, parallel, train_loop
from textgen_jax import workdir as workdir_lib
from textgen_jax.checkpointing import Checkpointer
from textgen_jax.config import check_positive, seq2seq_config
from textgen_jax.data import batching, readers
from textgen_jax.data.tokenizers import Tokenizer, make_tokenizer, tokenizer_from_config
from textgen_jax.data.vocab import Vocabulary, load_vocabulary
from textgen_jax.errors import TextgenError
from textgen_jax.models import cudnn_lstm
from textgen_jax.losses import sequence_metric_sums, token_cross_entropy
from textgen_jax.models.seq2seq import Seq2Seq, Seq2SeqConfig, uses_decoding_table
from textgen_jax.training import make_optimizer

SOURCE_VOCAB_FILE, TARGET_VOCAB_FILE = "source_vocab.json", "target_vocab.json"


def build_model(model_cfg: ml_collections.ConfigDict, source_vocab: Vocabulary,
                target_vocab: Vocabulary) -> Seq2Seq:
  return Seq2Seq(Seq2SeqConfig(source_vocab_size=len(source_vocab),
                               target_vocab_size=len(target_vocab), **model_cfg.to_dict()))


def seq2seq_loss(params: Any, batch: batching.Batch, rng: jax.Array, deterministic: bool, *,
                 model: Seq2Seq, label_smoothing: float = 0.0,
                 step: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """Mean masked cross-entropy per target token (EOS included, PAD excluded), and metric sums."""
  del step  # No schedule inside this loss.
  logits_BxTxV = model.apply(params, batch["inputs"], batch["input_lengths"], batch["targets"],
                             deterministic=deterministic, rngs={"dropout": rng})
  nll_BxT = token_cross_entropy(logits_BxTxV, batch["targets"])
  sums = sequence_metric_sums(logits_BxTxV, batch["targets"], nll_BxT)
  if label_smoothing:
    objective_BxT = token_cross_entropy(logits_BxTxV, batch["targets"], label_smoothing)
    objective_sum = jnp.sum(objective_BxT * (batch["targets"] != 0))
  else:
    objective_sum = sums["nll_sum"]
  return objective_sum / jnp.maximum(sums["tokens"], 1.0), sums


def _start_decoding(params: Any, inputs_BxS: jax.Array, input_lengths_B: jax.Array,
                    input_gates_VxG: jax.Array | None,
                    model: Seq2Seq) -> tuple[Any, decoding.StepFn]:
  """The decoder's initial state (from the encoder) and its one-token step function."""
  carries = model.apply(params, inputs_BxS, input_lengths_B, method=Seq2Seq.encode)
  step_fn = lambda carries, tokens_B: model.apply(params, carries, tokens_B, input_gates_VxG,
                                                  method=Seq2Seq.decode_step)
  return carries, step_fn


def translate_batch(params: Any, input_gates_VxG: jax.Array | None, inputs_BxS: jax.Array,
                    input_lengths_B: jax.Array, rng: jax.Array | None, *, model: Seq2Seq,
                    max_len: int, settings: decoding.DecodeSettings) -> jax.Array:
  """Encode, then decode up to max_len tokens by `settings`; one compiled program per shape.

  input_gates_VxG: the decoder's input table (Seq2Seq.decoder_input_gates) or None.
  """
  carries, step_fn = _start_decoding(params, inputs_BxS, input_lengths_B, input_gates_VxG, model)
  return decoding.decode(step_fn, carries, inputs_BxS.shape[0], max_len, settings, rng)


class Translator:
  """Text in, text out with a trained seq2seq model; batched and compiled per bucket shape."""

  def __init__(self, config: ml_collections.ConfigDict, model: Seq2Seq, params: Any,
               tokenizer: Tokenizer, source_vocab: Vocabulary, target_vocab: Vocabulary):
    self.config, self.model = config, model
    self.tokenizer, self.source_vocab, self.target_vocab = tokenizer, source_vocab, target_vocab
    self.max_len = config.data.max_len
    self._lengths = batching.bucket_lengths(self.max_len, config.data.num_buckets)
    decode_len = self.max_len + 1  # Room for EOS after a longest sentence.
    self._input_gates_of = jax.jit(functools.partial(model.apply,
                                                     method=Seq2Seq.decoder_input_gates))
    self.params = params  # After _input_gates_of: setting params computes the input table.
    self._translate = device_memory.CheckedJit(
        jax.jit(functools.partial(translate_batch, model=model, max_len=decode_len),
                static_argnames="settings"), "translating", "batch_size")

  @property
  def params(self) -> Any:
    return self._params

  @params.setter
  def params(self, params: Any) -> None:
    """New parameters; the decoder's input table, when used, is computed once for them."""
    self._params = params
    self._input_gates = None
    if params is not None and uses_decoding_table(self.model.config):
      self._input_gates = self._input_gates_of(params)

  def translate(self, texts: Sequence[str], batch_size: int = 256,
                settings: decoding.DecodeSettings = decoding.DecodeSettings(),
                rng: jax.Array | None = None) -> list[str]:
    """One output per input, decoded by `settings` (greedy by default; sampling needs `rng`).

    Unknown tokens map to UNK; inputs longer than data.max_len tokens are cut (counted on stderr).
    Inputs are sorted by length and batched so a file of thousands takes few compiled calls.
    """
    settings.check(self.max_len + 1, len(self.target_vocab))
    if settings.strategy == "sample" and rng is None:
      raise TextgenError("sampling needs an explicit rng key")
    if batch_size < 1:
      raise TextgenError(f"batch_size must be at least 1, got {batch_size}")
    ids, num_cut = batching.encode_texts(texts, self.tokenizer, self.source_vocab, self.max_len)
    if num_cut:
      print(f"note: cut {num_cut} of {len(texts)} inputs to data.max_len={self.max_len} tokens",
            file=sys.stderr)
    outputs = [""] * len(texts)
    for index, (rows, batch) in enumerate(batching.sorted_batches(ids, batch_size, self._lengths)):
      batch_rng = None if rng is None else jax.random.fold_in(rng, index)
      tokens_BxL = self._translate(self.params, self._input_gates, batch["inputs"],
                                   batch["input_lengths"], batch_rng,
                                   rows=batch["inputs"].shape[0],
                                   settings=settings)
      for row, tokens in zip(rows, np.asarray(tokens_BxL)):
        if len(ids[row]):  # An empty sentence translates to an empty sentence.
          outputs[row] = self.tokenizer.detokenize(self.target_vocab.decode(tokens))
    return outputs

  def evaluate(self, pairs: Sequence[tuple[str, str]],
               num_to_print: int = 0) -> tuple[dict[str, float], list[str]]:
    """Greedy exact match against normalised references, and the first pairs as text lines."""
    if not pairs:
      return {}, []
    outputs = self.translate([source for source, _ in pairs])
    references = [self.tokenizer.normalize(target) for _, target in pairs]
    exact = np.mean([out == ref for out, ref in zip(outputs, references)])
    lines = [f"  {source!r} -> {output!r} (reference {reference!r})"
             for (source, _), output, reference in zip(pairs, outputs, references)][:num_to_print]
    return {"greedy_exact_match": float(exact)}, lines

  def save(self, directory: str, step: int = 0) -> None:
    """Writes an inference-only copy (config, vocabularies, parameters) loadable by `load`."""
    if os.path.exists(workdir_lib.checkpoint_dir(directory)):
      raise TextgenError(f"{directory} already holds a saved model or a training run; "
                         "save to a new directory")
    os.makedirs(directory, exist_ok=True)
    workdir_lib.write_assets(directory, self.config, self.tokenizer,
                             _vocabularies(self.source_vocab, self.target_vocab))
    checkpointer = Checkpointer(workdir_lib.checkpoint_dir(directory))
    checkpointer.save_params(self.params, step)
    checkpointer.close()

  @classmethod
  def load(cls, workdir: str) -> "Translator":
    """The translator in a workdir (or a `save`d directory), at its latest checkpoint."""
    if not os.path.isdir(workdir_lib.checkpoint_dir(workdir)):
      raise TextgenError(f"{workdir}: no checkpoint found; train one with "
                         f"experiments/train_seq2seq.py --workdir={workdir}")
    config = workdir_lib.read_model_config(workdir)
    source_vocab, tokenizer_cfg = load_vocabulary(os.path.join(workdir, SOURCE_VOCAB_FILE))
    target_vocab, _ = load_vocabulary(os.path.join(workdir, TARGET_VOCAB_FILE))
    tokenizer = tokenizer_from_config(tokenizer_cfg)
    model = build_model(config.model, source_vocab, target_vocab)
    params_shape = jax.eval_shape(functools.partial(init_params, model), jax.random.key(0))
    checkpointer = Checkpointer(workdir_lib.checkpoint_dir(workdir))
    params = checkpointer.restore_params(params_shape)
    checkpointer.close()
    return cls(config, model, params, tokenizer, source_vocab, target_vocab)


def init_params(model: Seq2Seq, rng: jax.Array) -> Any:
  inputs_BxS = jnp.zeros((1, 2), jnp.int32)
  return model.init(rng, inputs_BxS, jnp.ones((1,), jnp.int32), inputs_BxS)


def _vocabularies(source_vocab: Vocabulary, target_vocab: Vocabulary) -> dict[str, Vocabulary]:
  return {SOURCE_VOCAB_FILE: source_vocab, TARGET_VOCAB_FILE: target_vocab}


def _encode_pairs(pairs: Sequence[tuple[str, str]], locations: Sequence[str],
                  tokenizer: Tokenizer, source_vocab: Vocabulary, target_vocab: Vocabulary,
                  data_cfg: ml_collections.ConfigDict, what: str) -> tuple[list, list]:
  sources, num_cut_sources = batching.encode_texts(
      [s for s, _ in pairs], tokenizer, source_vocab, data_cfg.max_len, data_cfg.too_long,
      "source", locations)
  targets, num_cut_targets = batching.encode_texts(
      [t for _, t in pairs], tokenizer, target_vocab, data_cfg.max_len, data_cfg.too_long,
      "target", locations)
  if num_cut_sources or num_cut_targets:
    print(f"{what}: truncated {num_cut_sources} sources and {num_cut_targets} targets of "
          f"{len(pairs)} pairs to data.max_len={data_cfg.max_len} tokens")
  return sources, targets


def _validate(config: ml_collections.ConfigDict) -> None:
  check_positive(config, ["data.max_len", "data.batch_size", "data.num_buckets", "data.min_count",
                          "model.embed_dim", "model.hidden_size", "model.encoder_layers",
                          "model.decoder_layers", "opt.learning_rate", "train.num_steps",
                          "train.log_every", "train.eval_every", "train.checkpoint_every",
                          "train.keep_checkpoints"])
  if config.model.input_encoding not in ("embedding", "one_hot"):
    raise TextgenError(f"--config.model.input_encoding={config.model.input_encoding!r}: "
                       "choose embedding or one_hot")
  if config.model.dtype not in ("float32", "bfloat16"):
    raise TextgenError(f"--config.model.dtype={config.model.dtype!r}: choose float32 or bfloat16")
  cudnn_lstm.resolve_backend(config.model.lstm_backend, config.model.dtype)  # Raises if unusable.
  make_optimizer(config.opt, config.train.num_steps)  # Raises on an unknown name or schedule.
  if not 0.0 <= config.model.dropout_rate < 1.0:
    raise TextgenError(f"--config.model.dropout_rate must be in [0, 1), "
                       f"got {config.model.dropout_rate}")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Translator:
  """Trains (or resumes) a translator in workdir; prints held-out metrics and examples."""
  parallel.initialize(config.parallel)  # Before any JAX work: may join other hosts.
  _validate(config)
  data_cfg = config.data
  splits = readers.read_splits(data_cfg, config.seed, readers.read_pairs)
  train_pairs, valid_pairs = splits.train, splits.valid
  tokenizer = make_tokenizer(data_cfg.tokenizer, data_cfg.lowercase)
  source_vocab, target_vocab = (
      Vocabulary.build([tokenizer.tokenize(pair[side]) for pair in train_pairs],
                       data_cfg.min_count, data_cfg.max_size or None,
                       data_cfg.vocab_size_multiple) for side in (0, 1))
  print(f"{len(train_pairs)} training and {len(valid_pairs)} validation pairs; vocabularies: "
        f"{len(source_vocab)} source and {len(target_vocab)} target {data_cfg.tokenizer} tokens")

  lengths = batching.bucket_lengths(data_cfg.max_len, data_cfg.num_buckets)
  train_batches = batching.BucketedBatches(
      *_encode_pairs(train_pairs, splits.train_locations, tokenizer, source_vocab, target_vocab,
                     data_cfg, "train"),
      data_cfg.batch_size, lengths, config.seed)
  valid_batches = batching.BucketedBatches(
      *_encode_pairs(valid_pairs, splits.valid_locations, tokenizer, source_vocab, target_vocab,
                     data_cfg, "valid"),
      data_cfg.batch_size, lengths, shuffle=False).epoch(0)
  if config.train.max_eval_batches:
    valid_batches = valid_batches[:config.train.max_eval_batches]

  workdir_lib.make_workdir(workdir)
  vocabularies = _vocabularies(source_vocab, target_vocab)
  if workdir_lib.has_checkpoints(workdir):
    workdir_lib.check_resumable(workdir, config, vocabularies)
  if parallel.is_primary():
    workdir_lib.write_assets(workdir, config, tokenizer, vocabularies)

  model = build_model(config.model, source_vocab, target_vocab)
  translator = Translator(config, model, None, tokenizer, source_vocab, target_vocab)

  def evaluate_generation(params):
    translator.params = params
    return translator.evaluate(valid_pairs[:config.train.max_greedy_eval_pairs or None],
                               config.train.num_examples_to_print)

  task = train_loop.Task(
      init_params=functools.partial(init_params, model),
      loss_fn=functools.partial(seq2seq_loss, model=model,
                                label_smoothing=config.train.label_smoothing),
      train_batches=train_batches, valid_batches=valid_batches,
      evaluate_generation=evaluate_generation)
  state = train_loop.train(config, workdir, task)
  translator.params = parallel.local_copy(state.params)
  return translator


def fit(train_path: str, workdir: str, config: ml_collections.ConfigDict | None = None,
        **train_overrides: Any) -> Translator:
  """Trains on a TSV file of pairs with the default config (or `config`); returns a Translator.

  Keyword arguments override `config.train` fields, e.g. `fit(path, workdir, num_steps=500)`.
  """
  config = seq2seq_config() if config is None else ml_collections.ConfigDict(config.to_dict())
  config.data.train_path = train_path
  for name, value in train_overrides.items():
    if name not in config.train:
      raise TextgenError(f"fit() got an unknown train setting {name!r}; "
                         f"known: {sorted(config.train.keys())}")
    config.train[name] = value
  return train_and_evaluate(config, workdir)
