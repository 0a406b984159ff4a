"""Linen layers every model family builds on: LSTMs (lstm.py, recurrence.py, cudnn_lstm.py),
token inputs (tokens.py), attention (attention.py), dropout whose rates a population member
may trace (dropout.py), and the test for a switched-off setting that such a member may trace
(static.py). Each family's model is in its package: seq2seq/model.py, vae/model.py."""
