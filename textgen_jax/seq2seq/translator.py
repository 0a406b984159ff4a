"""Text in, text out with a trained seq2seq model: `Translator`.

  from textgen_jax import seq2seq
  translator = seq2seq.fit("pairs.tsv", workdir="runs/fr", num_steps=2000)
  translator.translate(["Go.", "Hello!"])          # -> ["va !", "salut !"]
  translator = seq2seq.Translator.load("runs/fr")

A workdir holds config.json, source_vocab.json, target_vocab.json, checkpoints/, metrics.jsonl
and loss_curve.png.
"""

import dataclasses
import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from textgen_jax import decoding, device_memory, families
from textgen_jax import workdir as workdir_lib
from textgen_jax.data import batching
from textgen_jax.data.tokenizers import Tokenizer
from textgen_jax.data.vocab import EOS, EOS_ID, Vocabulary
from textgen_jax.errors import TextgenError
from textgen_jax.seq2seq import metrics
from textgen_jax.seq2seq import config as seq2seq_config
from textgen_jax.seq2seq.model import Seq2Seq, uses_decoding_table

# Vocabulary file -> the column of each example it encodes.
VOCABULARY_FILES = {"source_vocab.json": "source", "target_vocab.json": "target"}
TRAIN_SCRIPT = "experiments/train_seq2seq.py"


def _start_decoding(
  params: Any,
  inputs_BxS: jax.Array,
  input_lengths_B: jax.Array,
  input_gates_VxG: jax.Array | None,
  model: Seq2Seq,
) -> tuple[Any, decoding.StepFn]:
  """The decoder's initial state (from the encoder) and its one-token step function."""
  carries = model.apply(params, inputs_BxS, input_lengths_B, method=Seq2Seq.encode)
  step_fn = lambda carries, tokens_B: model.apply(
    params, carries, tokens_B, input_gates_VxG, method=Seq2Seq.decode_step
  )
  return carries, step_fn


def translate_batch(
  params: Any,
  input_gates_VxG: jax.Array | None,
  inputs_BxS: jax.Array,
  input_lengths_B: jax.Array,
  rng: jax.Array | None,
  *,
  model: Seq2Seq,
  max_len: int,
  settings: decoding.DecodeSettings,
) -> jax.Array:
  """Encode, then decode up to max_len tokens by `settings`; one compiled program per shape.

  input_gates_VxG: the decoder's input table (Seq2Seq.decoder_input_gates) or None.
  """
  carries, step_fn = _start_decoding(params, inputs_BxS, input_lengths_B, input_gates_VxG, model)
  return decoding.decode(step_fn, carries, inputs_BxS.shape[0], max_len, settings, rng)


def beam_batch(
  params: Any,
  input_gates_VxG: jax.Array | None,
  inputs_BxS: jax.Array,
  input_lengths_B: jax.Array,
  *,
  model: Seq2Seq,
  max_len: int,
  settings: decoding.DecodeSettings,
) -> decoding.Beams:
  """Every input's beam_size best hypotheses (the n-best list), best first."""
  carries, step_fn = _start_decoding(params, inputs_BxS, input_lengths_B, input_gates_VxG, model)
  return decoding.beam_search(
    step_fn,
    carries,
    inputs_BxS.shape[0],
    max_len,
    settings.beam_size,
    settings.length_alpha,
    settings.length_norm,
  )


@dataclasses.dataclass(frozen=True)
class Alignment:
  """Where each output token's decoding step attended in the source."""

  source_tokens: list[str]  # As the model read them (unknown ones as <unk>).
  output_tokens: list[str]  # As decoded, EOS included when reached.
  weights: np.ndarray  # [len(output_tokens), len(source_tokens)]; each row sums to 1.


class Translator:
  """Text in, text out with a trained seq2seq model; batched and compiled per bucket shape."""

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    model: Seq2Seq,
    params: Any,
    tokenizers: Sequence[Tokenizer],
    source_vocab: Vocabulary,
    target_vocab: Vocabulary,
  ):
    """tokenizers: the source's and the target's (the same one for a joint vocabulary)."""
    self.config, self.model = config, model
    self.source_tokenizer, self.target_tokenizer = tokenizers
    self.source_vocab, self.target_vocab = source_vocab, target_vocab
    self.max_len = config.data.max_len
    self._buckets = batching.bucket_lengths(self.max_len, config.data.num_buckets)
    decode_len = self.max_len + 1  # Room for EOS after a longest sentence.
    self._input_gates_of = jax.jit(
      functools.partial(model.apply, method=Seq2Seq.decoder_input_gates)
    )
    self.params = params  # After _input_gates_of: setting params computes the input table.
    self._translate = device_memory.CheckedJit(
      jax.jit(
        functools.partial(translate_batch, model=model, max_len=decode_len),
        static_argnames="settings",
      ),
      "translating",
      "batch_size",
    )
    self._beams = device_memory.CheckedJit(
      jax.jit(
        functools.partial(beam_batch, model=model, max_len=decode_len), static_argnames="settings"
      ),
      "beam search",
      "batch_size",
    )
    self._attention_weights = jax.jit(
      functools.partial(model.apply, method=Seq2Seq.attention_weights)
    )

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

  def translate(
    self,
    texts: Sequence[str],
    batch_size: int = 256,
    settings: decoding.DecodeSettings = decoding.DecodeSettings(),
    rng: jax.Array | None = None,
  ) -> list[str]:
    """One output per input, decoded by `settings` (greedy by default; sampling needs `rng`).

    Unknown tokens map to UNK; inputs longer than data.max_len tokens are cut (counted on stderr).
    Inputs are sorted by length and batched so a file of thousands takes few compiled calls.
    """
    settings.check(self.max_len + 1, len(self.target_vocab))
    settings.check_rng(rng)
    outputs = [""] * len(texts)
    for index, (rows, batch) in enumerate(self._batches(texts, batch_size)):
      batch_rng = None if rng is None else jax.random.fold_in(rng, index)
      tokens_BxL = self._translate(
        self.params,
        self._input_gates,
        batch["inputs"],
        batch["input_lengths"],
        batch_rng,
        num_rows=batch["inputs"].shape[0],
        settings=settings,
      )
      for row, tokens in zip(rows, np.asarray(tokens_BxL)):
        outputs[row] = self._text(tokens)
    return outputs

  def n_best(
    self,
    texts: Sequence[str],
    n: int,
    batch_size: int = 256,
    settings: decoding.DecodeSettings = decoding.DecodeSettings("beam", beam_size=5),
  ) -> list[list[tuple[str, float]]]:
    """Each input's n best beam-search hypotheses, best first, as (text, score): the score that
    ranks them, log p over the length normalisation of `settings` (its beam_size >= n)."""
    if settings.strategy != "beam":
      raise TextgenError(f"an n-best list comes from beam search, not {settings.strategy}")
    if not 1 <= n <= settings.beam_size:
      raise TextgenError(f"n_best must be in [1, beam_size={settings.beam_size}], got {n}")
    settings.check(self.max_len + 1, len(self.target_vocab))
    lists: list[list[tuple[str, float]]] = [[("", 0.0)] * n for _ in texts]
    for rows, batch in self._batches(texts, batch_size):
      beams = self._beams(
        self.params,
        self._input_gates,
        batch["inputs"],
        batch["input_lengths"],
        num_rows=batch["inputs"].shape[0],
        settings=settings,
      )
      tokens_BxKxL, scores_BxK = np.asarray(beams.tokens_BxKxL), np.asarray(beams.scores_BxK)
      for batch_row, row in enumerate(rows):
        lists[row] = [
          (self._text(tokens_BxKxL[batch_row, k]), float(scores_BxK[batch_row, k]))
          for k in range(n)
        ]
    return lists

  def attention(
    self,
    texts: Sequence[str],
    batch_size: int = 256,
    settings: decoding.DecodeSettings = decoding.DecodeSettings(),
  ) -> list[Alignment]:
    """Each input's output (decoded by `settings`; sampling is not offered here) and the
    attention weights of every decoding step over the source tokens."""
    if self.model.config.attention == "none":
      raise TextgenError("this model has no attention (model.attention='none')")
    if settings.strategy == "sample":
      raise TextgenError("attention maps are drawn for greedy or beam outputs")
    settings.check(self.max_len + 1, len(self.target_vocab))
    alignments: list[Alignment | None] = [None] * len(texts)
    for rows, batch in self._batches(texts, batch_size, keep_empty=True):
      inputs_BxS, lengths_B = batch["inputs"], batch["input_lengths"]
      tokens_BxL = self._translate(
        self.params,
        self._input_gates,
        inputs_BxS,
        lengths_B,
        None,
        num_rows=inputs_BxS.shape[0],
        settings=settings,
      )
      weights_BxLxS = np.asarray(
        self._attention_weights(self.params, inputs_BxS, lengths_B, tokens_BxL)
      )
      tokens_BxL = np.asarray(tokens_BxL)
      for batch_row, row in enumerate(rows):
        source_ids = inputs_BxS[batch_row, : lengths_B[batch_row]]
        source = [self.source_vocab.tokens[i] for i in source_ids]
        output = self.target_vocab.decode(tokens_BxL[batch_row])
        if EOS_ID in tokens_BxL[batch_row]:  # Its step attended too: show it.
          output = output + [EOS]
        alignments[row] = Alignment(
          source, output, weights_BxLxS[batch_row, : len(output), : len(source)]
        )
    return alignments

  def _batches(
    self, texts: Sequence[str], batch_size: int, keep_empty: bool = False
  ) -> Iterator[tuple[list[int], batching.Batch]]:
    """(indices into texts, batch) over the non-empty inputs (all with keep_empty), cut to
    data.max_len tokens (counted on stderr), sorted by length, few compiled shapes."""
    if batch_size < 1:
      raise TextgenError(f"batch_size must be at least 1, got {batch_size}")
    ids, num_cut = batching.encode_texts(
      texts, self.source_tokenizer, self.source_vocab, self.max_len
    )
    if num_cut:
      print(
        f"note: cut {num_cut} of {len(texts)} inputs to data.max_len={self.max_len} tokens",
        file=sys.stderr,
      )
    # An empty sentence translates to an empty sentence: it is not decoded.
    kept = [i for i, x in enumerate(ids) if len(x) or keep_empty]
    for indices, batch in batching.sorted_batches(
      [ids[i] for i in kept], batch_size, self._buckets
    ):
      yield [kept[i] for i in indices], batch

  def _text(self, tokens_L: np.ndarray) -> str:
    return self.target_tokenizer.detokenize(self.target_vocab.decode(tokens_L))

  def evaluate(
    self,
    pairs: Sequence[tuple[str, str]],
    num_to_print: int = 0,
    settings: decoding.DecodeSettings = decoding.DecodeSettings(),
    batch_size: int = 256,
    max_sources: int = 0,
  ) -> tuple[dict[str, float], list[str]]:
    """Corpus BLEU, chrF (sacreBLEU) and exact match of the outputs decoded by `settings`,
    against every reference of each source; the metrics are named after the strategy
    ("greedy_bleu"). Also lines to print: sacreBLEU's signature and the first examples.

    Pairs are grouped by their normalised source, each source translated once (the first
    max_sources of them, when set); see `score` for the comparison.
    """
    if not pairs:
      return {}, []
    sources, references = self.group_by_source(pairs)
    if max_sources:
      sources, references = sources[:max_sources], references[:max_sources]
    scores, signature, outputs = self.score(sources, references, settings, batch_size)
    prefix = settings.strategy
    lines = [
      f"  {prefix}: BLEU {scores['bleu']:.2f}, chrF {scores['chrf']:.2f} on "
      f"{len(sources)} sources ({sum(map(len, references))} references); {signature}"
    ]
    lines += [
      f"  {source!r} -> {output!r} (reference {' | '.join(map(repr, refs))})"
      for source, output, refs in zip(sources, outputs, references)
    ][:num_to_print]
    return {f"{prefix}_{name}": value for name, value in scores.items()}, lines

  def group_by_source(self, pairs: Sequence[tuple[str, str]]) -> tuple[list[str], list[list[str]]]:
    """(sources normalised as the model reads them, the references of each), from pairs."""
    return metrics.group_references(
      [(self.source_tokenizer.normalize(source), target) for source, target in pairs]
    )

  def score(
    self,
    sources: Sequence[str],
    references: Sequence[Sequence[str]],
    settings: decoding.DecodeSettings = decoding.DecodeSettings(),
    batch_size: int = 256,
    tokenize: str = "13a",
    postprocess: Callable[[str], str] | None = None,
  ) -> tuple[dict[str, float], str, list[str]]:
    """(bleu/chrf/exact_match, sacreBLEU's signatures, outputs): each source translated by
    `settings` and scored against its references (one list per source, any number each).

    Outputs are detokenised text; references are normalised as the model's data was (NFC, one
    space, lowercased if it was: the scoring is then case-insensitive and the signature says
    so). tokenize: sacreBLEU's BLEU tokenizer ("13a"; "none" for pre-tokenised text).
    postprocess: applied to each output before scoring (e.g. a Moses detokenizer for a model
    trained on tokenised text).
    """
    references = [[self.target_tokenizer.normalize(r) for r in refs] for refs in references]
    rng = jax.random.key(0) if settings.strategy == "sample" else None
    outputs = self.translate(sources, batch_size, settings, rng)
    if postprocess is not None:
      outputs = [postprocess(output) for output in outputs]
    scores, signature = metrics.corpus_scores(
      outputs, references, self.target_tokenizer.lowercase, tokenize
    )
    return scores, signature, outputs

  def vocabularies(self) -> dict[str, Vocabulary]:
    """Vocabulary file -> vocabulary, as the workdir stores them."""
    return dict(zip(VOCABULARY_FILES, (self.source_vocab, self.target_vocab)))

  def save(self, directory: str, step: int = 0) -> None:
    """Writes an inference-only copy (config, vocabularies, parameters) loadable by `load`."""
    workdir_lib.save(
      directory,
      self.config,
      (self.source_tokenizer, self.target_tokenizer),
      self.vocabularies(),
      self.params,
      step,
    )

  @classmethod
  def load(
    cls, workdir: str, step: int | None = None, member: int | None = None, average_last: int = 0
  ) -> "Translator":
    """The translator in a workdir (or a `save`d directory), at its latest checkpoint or `step`;
    of a population, its `member` (default: the best); average_last=K averages the parameters
    of the last K kept checkpoints (workdir.load)."""
    loaded = workdir_lib.load(
      workdir, families.get(seq2seq_config.NAME), step, member, average_last
    )
    return cls(loaded.config, loaded.model, loaded.params, loaded.tokenizers, *loaded.vocabularies)
