"""The experiment scripts (run as files: `python experiments/train_seq2seq.py ...`) and, in
experiments/bench/, the benchmarks (run as modules: `python -m experiments.bench.decode ...`)."""
