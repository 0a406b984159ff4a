r"""Held-out English-French pairs whose English source has 10+ words, from the full Tatoeba/Anki
file: sources absent from the bundled 40k corpus (whose sentences are shorter), at most 16 word
tokens on each side (the default model's data.max_len), 1,000 sources in a seeded sample, every
translation of each kept. The file stays outside the repository (CC-BY; see the corpus's
ATTRIBUTION.md for the terms).

  python experiments/make_long_tatoeba_test.py ../shared/data/tatoeba_anki/fra-eng/fra.txt       runs/long_test.tsv
  python experiments/evaluate_translation.py --workdir=runs/fr_en --test=runs/long_test.tsv
"""

import random
import sys

from textgen_jax.data.tokenizers import WordTokenizer
from textgen_jax.seq2seq.config import DEFAULT_CORPUS

tok = WordTokenizer(lowercase=True)
bundled = {tok.normalize(line.split("\t")[0]) for line in open(DEFAULT_CORPUS, encoding="utf-8")}
pairs = {}
for line in open(sys.argv[1], encoding="utf-8"):
  source, target = line.rstrip("\n").split("\t")[:2]
  key = tok.normalize(source)
  if (
    len(source.split()) >= 10
    and key not in bundled
    and len(tok.tokenize(source)) <= 16
    and len(tok.tokenize(target)) <= 16
  ):
    pairs.setdefault(source, []).append(target)
sources = sorted(pairs)
random.Random(0).shuffle(sources)
with open(sys.argv[2], "w", encoding="utf-8") as f:
  for source in sources[:1000]:
    for target in pairs[source]:
      f.write(f"{source}\t{target}\n")
print(len(pairs), "eligible sources;", sum(len(pairs[s]) for s in sources[:1000]), "pairs written")
