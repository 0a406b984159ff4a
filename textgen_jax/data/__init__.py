"""Text in, batches out, the same for every family.

tokenizers.py  word, character, whitespace and SentencePiece tokenizers and their normalisation
vocab.py       vocabularies built from the training split (PAD, BOS, EOS, UNK first)
readers.py     pairs (TSV, parallel files) and lines, with one-line errors naming file and line;
               the train/held-out split
batching.py    encoding, length buckets, the seeded batch order any step can be drawn from
pipeline.py    a run's data from its config: read, split, tokenizers and vocabularies, batches
corpora/       the bundled English-French corpus (Tatoeba via manythings.org, CC-BY)
"""
