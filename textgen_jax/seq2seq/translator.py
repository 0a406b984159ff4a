"""Text in, text out with a trained seq2seq model: `Translator`.

  from textgen_jax import seq2seq
  translator = seq2seq.fit("pairs.tsv", workdir="runs/fr", num_steps=2000)
  translator.translate(["Go.", "Hello!"])          # -> ["va !", "salut !"]
  translator = seq2seq.Translator.load("runs/fr")

A workdir holds config.json, source_vocab.json, target_vocab.json, checkpoints/, metrics.jsonl
and loss_curve.png.
"""

import functools
import sys
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from textgen_jax import decoding, device_memory
from textgen_jax import workdir as workdir_lib
from textgen_jax.data import batching
from textgen_jax.data.tokenizers import Tokenizer
from textgen_jax.data.vocab import Vocabulary
from textgen_jax.errors import TextgenError
from textgen_jax.seq2seq.config import FAMILY
from textgen_jax.seq2seq.model import Seq2Seq, build_model, init_params, uses_decoding_table

# Vocabulary file -> the column of each example it encodes.
VOCABULARY_FILES = {"source_vocab.json": "source", "target_vocab.json": "target"}
TRAIN_SCRIPT = "experiments/train_seq2seq.py"


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
    self._buckets = batching.bucket_lengths(self.max_len, config.data.num_buckets)
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
    settings.check_rng(rng)
    if batch_size < 1:
      raise TextgenError(f"batch_size must be at least 1, got {batch_size}")
    ids, num_cut = batching.encode_texts(texts, self.tokenizer, self.source_vocab, self.max_len)
    if num_cut:
      print(f"note: cut {num_cut} of {len(texts)} inputs to data.max_len={self.max_len} tokens",
            file=sys.stderr)
    outputs = [""] * len(texts)
    for index, (indices, batch) in enumerate(batching.sorted_batches(ids, batch_size,
                                                                    self._buckets)):
      batch_rng = None if rng is None else jax.random.fold_in(rng, index)
      tokens_BxL = self._translate(self.params, self._input_gates, batch["inputs"],
                                   batch["input_lengths"], batch_rng,
                                   num_rows=batch["inputs"].shape[0], settings=settings)
      for row, tokens in zip(indices, np.asarray(tokens_BxL)):
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

  def vocabularies(self) -> dict[str, Vocabulary]:
    """Vocabulary file -> vocabulary, as the workdir stores them."""
    return dict(zip(VOCABULARY_FILES, (self.source_vocab, self.target_vocab)))

  def save(self, directory: str, step: int = 0) -> None:
    """Writes an inference-only copy (config, vocabularies, parameters) loadable by `load`."""
    workdir_lib.save(directory, self.config, self.tokenizer, self.vocabularies(), self.params,
                     step)

  @classmethod
  def load(cls, workdir: str, step: int | None = None,
           member: int | None = None) -> "Translator":
    """The translator in a workdir (or a `save`d directory), at its latest checkpoint or `step`;
    of a population, its `member` (default: the best)."""
    loaded = workdir_lib.load(workdir, FAMILY, list(VOCABULARY_FILES), TRAIN_SCRIPT, build_model,
                              init_params, step, member)
    return cls(loaded.config, loaded.model, loaded.params, loaded.tokenizer, *loaded.vocabularies)
