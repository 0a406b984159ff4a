"""Text in, batches out, the same for every family.

tokenizers.py  word, character and whitespace tokenizers and their normalisation
vocab.py       vocabularies built from the training split (PAD, BOS, EOS, UNK first)
readers.py     pairs (TSV, parallel files) and lines, with one-line errors naming file and line;
               the train/held-out split
batching.py    encoding, length buckets, the seeded batch order any step can be drawn from
corpora/       the bundled English-French corpus (Tatoeba via manythings.org, CC-BY)
"""
