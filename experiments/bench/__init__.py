"""Decoding and training speed benchmarks, run from the repository root as modules:

  python -m experiments.bench.decode --output=runs/bench/decode.jsonl --plot=runs/decode.png
  python -m experiments.bench.train --output=runs/bench/train.jsonl
  python -m experiments.bench.report --decode=runs/bench/decode.jsonl \
      --train=runs/bench/train.jsonl

  common.py           timing, the measured roofline, JSON-line output, the optional torch
                      import, interleaved rounds, the decode plot
  shapes.py           the issue's two workloads (S: seq2seq, V: the PTB VAE) and their costs
  decode.py           decoding speed: the compiled engine against a naive loop and PyTorch
  decoders.py         the decoders decode.py times and the implementations it times them with
  train.py            training speed: textgen-jax's step against plain Flax and PyTorch
  programs.py         the train steps train.py times
  flax_reference.py   the plainest Flax linen version of both training workloads
  torch_reference.py  the PyTorch decoder and training step (the `bench` extra)
  population.py       populations: N members in one vmapped step against N runs one by one
  projection_ab.py    the vocabulary projection's gradient: autodiff against the custom VJP
  report.py           Markdown tables (and the plot) from the JSON lines

Each benchmark reads its flags once, in main, into a frozen `Settings` that its functions take.
"""
