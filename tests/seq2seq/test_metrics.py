"""Tests for textgen_jax.seq2seq.metrics: sacreBLEU's corpus BLEU and chrF with a variable
number of references per source, and exact match against any of them."""

import pytest
import sacrebleu

from textgen_jax.seq2seq import metrics

PAIRS = [
  ("a", "the cat sat on the mat ."),
  ("b", "hello there , world"),
  ("a", "a cat sat on a mat ."),
  ("c", "it rains ."),
  ("a", "the cat is on the mat ."),
  ("c", "it is raining ."),
]
HYPOTHESES = ["the cat sat on a mat .", "hello world", "it is raining ."]


def test_group_references_keeps_first_appearance_order_and_every_reference():
  sources, references = metrics.group_references(PAIRS)
  assert sources == ["a", "b", "c"]
  assert references == [
    ["the cat sat on the mat .", "a cat sat on a mat .", "the cat is on the mat ."],
    ["hello there , world"],
    ["it rains .", "it is raining ."],
  ]
  assert metrics.reference_streams(references) == [
    ["the cat sat on the mat .", "hello there , world", "it rains ."],
    ["a cat sat on a mat .", None, "it is raining ."],
    ["the cat is on the mat .", None, None],
  ]


@pytest.mark.parametrize("lowercase", [False, True])
def test_scores_are_sacrebleus_with_every_reference(lowercase):
  _, references = metrics.group_references(PAIRS)
  hypotheses = [h.upper() if lowercase else h for h in HYPOTHESES]
  scores, signature = metrics.corpus_scores(hypotheses, references, lowercase)
  # sacreBLEU called directly, references as streams padded with None (its documented layout).
  streams = [
    ["the cat sat on the mat .", "hello there , world", "it rains ."],
    ["a cat sat on a mat .", None, "it is raining ."],
    ["the cat is on the mat .", None, None],
  ]
  bleu = sacrebleu.corpus_bleu(hypotheses, streams, lowercase=lowercase)
  chrf = sacrebleu.CHRF(lowercase=lowercase).corpus_score(hypotheses, streams)
  assert scores["bleu"] == pytest.approx(bleu.score) and scores["chrf"] == pytest.approx(chrf.score)
  # More references can only help: the first reference alone scores lower.
  alone = sacrebleu.corpus_bleu(hypotheses, streams[:1], lowercase=lowercase).score
  assert scores["bleu"] > alone
  assert scores["exact_match"] == pytest.approx(0.0 if lowercase else 1 / 3)
  assert "nrefs:var" in signature and ("case:lc" in signature) == lowercase
  assert signature.count("version:") == 2  # BLEU's and chrF's.


def test_exact_match_is_a_hit_against_any_reference():
  scores, _ = metrics.corpus_scores(
    ["one two three four", "five six seven eight"],
    [["nine", "one two three four"], ["five six seven eight"]],
  )
  assert scores["exact_match"] == 1.0 and scores["bleu"] == pytest.approx(100.0)
  assert scores["chrf"] == pytest.approx(100.0)


@pytest.mark.parametrize(
  "hypotheses, references, message",
  [
    (["x"], [["a"], ["b"]], "1 hypotheses for 2 sources"),
    ([], [], "no hypotheses"),
    (["x"], [[]], "at least one reference"),
  ],
)
def test_bad_arguments_raise(hypotheses, references, message):
  with pytest.raises(ValueError, match=message):
    metrics.corpus_scores(hypotheses, references)
