r"""Scores a trained seq2seq workdir as translation papers do: corpus BLEU and chrF (sacreBLEU, with
its signature) and exact match, against every reference of each source.

  # The run's own held-out split (re-derived from its config), greedy and beam 5:
  python experiments/evaluate_translation.py --workdir=runs/fr_en
  python experiments/evaluate_translation.py --workdir=runs/fr_en --strategy=beam --beam_size=5
  # A TSV test file (pairs grouped by source: each source's lines are its references):
  python experiments/evaluate_translation.py --workdir=runs/fr_en --test=test.tsv
  # Parallel files, line by line: SOURCE,REFERENCE[,REFERENCE...] (.gz read as is):
  python experiments/evaluate_translation.py --workdir=runs/m30k \
      --test=../shared/data/multi30k/raw/test_2016_flickr.de.gz,../shared/data/multi30k/raw/test_2016_flickr.en.gz

Prints BLEU, chrF, exact match and the signature on stderr and one JSON line on stdout
(--output appends it to a file). --average_last=K scores the mean of the last K checkpoints.
"""

from textgen_jax import cli  # First: Ctrl-C during the imports below is one line too.

cli.exit_on_ctrl_c()

import sys
import time

from absl import flags

from textgen_jax import seq2seq
from textgen_jax.data import pipeline
from textgen_jax import workdir as workdir_lib
from textgen_jax.data import readers
from textgen_jax.errors import TextgenError

_WORKDIR = flags.DEFINE_string("workdir", None, "A seq2seq workdir.", required=True)
_TEST = flags.DEFINE_string(
  "test",
  None,
  "A TSV of pairs, or SOURCE,REFERENCE[,REFERENCE...] "
  "parallel files (default: the run's held-out split).",
)
_MIN_SOURCE_WORDS = flags.DEFINE_integer(
  "min_source_words", 0, "Score only sources of at least this many whitespace-separated words."
)
_TOKENIZE = flags.DEFINE_enum(
  "tokenize",
  "13a",
  ["13a", "none", "intl", "char"],
  "sacreBLEU's BLEU tokenizer: 13a for detokenised text, none for "
  "tokenised BLEU of pre-tokenised text.",
)
_DETOKENIZE = flags.DEFINE_string(
  "detokenize",
  None,
  "Moses-detokenise outputs of a model trained "
  "on tokenised text before scoring, for this language (e.g. "
  "en; needs `pip install sacremoses`), to score them against "
  "raw references with sacreBLEU's own tokenizer.",
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Sentences decoded together.")
_STEP = flags.DEFINE_integer("step", None, "The checkpoint (default: the latest).")
_AVERAGE_LAST = flags.DEFINE_integer(
  "average_last",
  0,
  "Average the parameters of the last K kept checkpoints (0 or 1: one checkpoint).",
)
_MEMBER = flags.DEFINE_integer("member", None, "Of a population, which member (default: best).")
_OUTPUT = flags.DEFINE_string("output", None, "Also append the JSON line to this file.")
_decode_settings = cli.define_decode_flags()


def test_set(translator: seq2seq.Translator) -> tuple[str, list[str], list[list[str]]]:
  """(what it is, sources, references of each)."""
  spec = _TEST.value
  if spec is None:  # The held-out split exactly as training drew it.
    config = translator.config
    check_held_out_source(config.data)
    if config.data.valid_path:
      spec = config.data.valid_path
    else:
      quiet_reader = lambda path, skip_malformed: readers.read_pairs(
        path, skip_malformed, verbose=False
      )
      splits = pipeline.read_splits(config, quiet_reader, translator.source_tokenizer)
      return ("held-out split", *translator.group_by_source(splits.valid))
  paths = spec.split(",")
  if len(paths) <= 2:  # One TSV, or one source and one reference file: pairs.
    pairs, _ = readers.read_pairs(spec, verbose=False)
    if len(paths) == 1:  # A TSV: a source's lines are its references.
      return (spec, *translator.group_by_source(pairs))
    return spec, [s for s, _ in pairs], [[t] for _, t in pairs]
  per_reference = [readers.read_pairs(f"{paths[0]},{ref}", verbose=False)[0] for ref in paths[1:]]
  if len({len(pairs) for pairs in per_reference}) != 1:
    raise TextgenError(f"--test={spec}: the reference files keep different numbers of lines")
  sources = [s for s, _ in per_reference[0]]
  return spec, sources, [[pairs[i][1] for pairs in per_reference] for i in range(len(sources))]


def check_held_out_source(data_cfg) -> None:
  """The held-out data is re-read from the file the run named (data.valid_path, or the split of
  data.train_path): it must still be the file the run trained on, or sentences trained on are
  scored as held out."""
  field = "valid_path" if data_cfg.valid_path else "train_path"
  changed = workdir_lib.changed_data_files(_WORKDIR.value, data_cfg, [field])
  if changed is None:
    print(
      f"warning: {_WORKDIR.value} does not record its data files' checksums (written "
      f"before they were recorded); the held-out set is drawn from {data_cfg[field]} "
      "unchecked",
      file=sys.stderr,
    )
  elif changed:
    raise TextgenError(
      f"{data_cfg[field]} is not the file this run trained on (its SHA-256 "
      f"differs from {_WORKDIR.value}/{workdir_lib.DATA_CHECKSUMS}): the "
      "held-out set drawn from it would not be the one held out; pass --test"
    )


def moses_detokenizer(language: str | None):
  """str -> str joining a tokenised output as Moses would write it (None: outputs as they are)."""
  if language is None:
    return None
  try:
    from sacremoses import MosesDetokenizer  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise TextgenError("--detokenize needs sacremoses: pip install sacremoses") from None
  detokenizer = MosesDetokenizer(language)
  return lambda text: detokenizer.detokenize(text.split())


def main(argv):
  del argv
  cli.check_output_file("--output", _OUTPUT.value)  # Now, not after an hour of decoding.
  settings = _decode_settings()
  translator = seq2seq.Translator.load(
    _WORKDIR.value, _STEP.value, _MEMBER.value, _AVERAGE_LAST.value
  )
  name, sources, references = test_set(translator)
  if _MIN_SOURCE_WORDS.value:
    kept = [i for i, s in enumerate(sources) if len(s.split()) >= _MIN_SOURCE_WORDS.value]
    sources, references = [sources[i] for i in kept], [references[i] for i in kept]
  if not sources:
    raise TextgenError(f"--test={name}: no sources to score")
  start = time.perf_counter()
  scores, signature, _ = translator.score(
    sources,
    references,
    settings,
    _BATCH_SIZE.value,
    _TOKENIZE.value,
    moses_detokenizer(_DETOKENIZE.value),
  )
  record = {
    "workdir": _WORKDIR.value,
    "step": _STEP.value,
    "average_last": _AVERAGE_LAST.value,
    "test": name,
    "min_source_words": _MIN_SOURCE_WORDS.value,
    "sources": len(sources),
    "references": sum(map(len, references)),
    "strategy": settings.strategy,
    "beam_size": settings.beam_size if settings.strategy == "beam" else None,
    "detokenize": _DETOKENIZE.value,
    **scores,
    "signature": signature,
    "seconds": round(time.perf_counter() - start, 1),
  }
  cli.print_record(record, _OUTPUT.value)
  print(
    f"{name}: {len(sources)} sources, {settings.strategy}: BLEU {scores['bleu']:.2f}, chrF "
    f"{scores['chrf']:.2f}, exact match {scores['exact_match']:.3f}\n{signature}",
    file=sys.stderr,
  )


if __name__ == "__main__":
  cli.run(main)
