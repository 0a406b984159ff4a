"""Linen layers every model family builds on: LSTMs (lstm.py, recurrence.py, cudnn_lstm.py) and
token inputs (tokens.py). Each family's model is in its package: seq2seq/model.py, vae/model.py."""
