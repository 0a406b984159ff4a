"""Translation metrics the field reports: corpus BLEU and chrF by sacreBLEU (Post 2018) on
detokenised output against every reference of a source, with sacreBLEU's signature, and exact
match against any reference.

A source may have several references (Tatoeba lists many translations of common sentences);
`group_references` collects them, and sacreBLEU takes them as reference streams padded with None
where a source has fewer (its documented way to score a variable number of references).
"""

from collections.abc import Sequence

import sacrebleu


def group_references(pairs: Sequence[tuple[str, str]]) -> tuple[list[str], list[list[str]]]:
  """(sources in order of first appearance, the references of each), from (source, target)
  pairs; a source is a key as given (normalise first to merge spellings)."""
  references: dict[str, list[str]] = {}
  for source, target in pairs:
    references.setdefault(source, []).append(target)
  return list(references), list(references.values())


def reference_streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
  """sacreBLEU's layout: stream i holds every source's i-th reference, None where it has none."""
  most = max((len(refs) for refs in references), default=0)
  return [[refs[i] if i < len(refs) else None for refs in references] for i in range(most)]


def corpus_scores(
  hypotheses: Sequence[str],
  references: Sequence[Sequence[str]],
  lowercase: bool = False,
  tokenize: str = "13a",
) -> tuple[dict[str, float], str]:
  """({"bleu", "chrf", "exact_match"}, sacreBLEU's signatures) for one hypothesis per source.

  lowercase: score case-insensitively (a model trained on lowercased text; the signature says
  so). tokenize: BLEU's tokenizer, sacreBLEU's "13a" for detokenised text, "none" for text
  tokenised already (the tokenised BLEU of tutorials). Exact match compares whole strings (as
  given: normalise both sides first).
  """
  if len(hypotheses) != len(references):
    raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} sources")
  if not hypotheses:
    raise ValueError("no hypotheses to score")
  if any(not refs for refs in references):
    raise ValueError("every source needs at least one reference")
  streams = reference_streams(references)
  bleu = sacrebleu.BLEU(lowercase=lowercase, tokenize=tokenize)
  chrf = sacrebleu.CHRF(lowercase=lowercase)
  bleu_score = bleu.corpus_score(list(hypotheses), streams)
  chrf_score = chrf.corpus_score(list(hypotheses), streams)
  exact = sum(hyp in refs for hyp, refs in zip(hypotheses, references)) / len(hypotheses)
  signature = f"BLEU {bleu.get_signature()} chrF {chrf.get_signature()}"
  return {"bleu": bleu_score.score, "chrf": chrf_score.score, "exact_match": exact}, signature
