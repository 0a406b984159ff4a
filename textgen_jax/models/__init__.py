"""Linen layers every model family builds on: LSTMs (lstm.py, recurrence.py, cudnn_lstm.py),
token inputs (tokens.py), attention (attention.py) and dropout whose rates a population member
may trace (dropout.py). Each family's model is in its package: seq2seq/model.py, vae/model.py."""
