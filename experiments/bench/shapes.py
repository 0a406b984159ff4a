"""The issue's two workloads, which both benchmarks measure, and what a step of each costs.

"seq2seq" (S) is the seq2seq tutorial's shape: source vocabulary 80, target 100, embedding 256,
hidden 256, source 16 / target 60 tokens, batch 64. "vae" (V) is the PTB sentence VAE:
vocabulary 10,000, embedding 256, hidden 512, latent 32, 40 tokens, batch 32. Decoding uses
their target side (one decoder layer, `length` tokens per sequence).
"""

WORKLOADS = {
  "seq2seq": dict(
    source_vocab_size=80,
    vocab_size=100,
    embed_dim=256,
    hidden_size=256,
    latent_size=0,
    source_length=16,
    length=60,
    batch_size=64,
  ),
  "vae": dict(
    source_vocab_size=10_000,
    vocab_size=10_000,
    embed_dim=256,
    hidden_size=512,
    latent_size=32,
    source_length=40,
    length=40,
    batch_size=32,
  ),
}


def decode_sizes(name: str) -> dict[str, int]:
  """The sizes of a workload's decoder, as decode.py reports them."""
  workload = WORKLOADS[name]
  return dict(
    vocab_size=workload["vocab_size"],
    embed_dim=workload["embed_dim"],
    hidden_size=workload["hidden_size"],
    num_layers=1,
    latent_size=workload["latent_size"],
    max_len=workload["length"],
  )


DECODE_SHAPES = {name: decode_sizes(name) for name in WORKLOADS}
# The seq2seq decoder with Luong's general attention and input feeding over a source of the
# workload's length (its memory is the encoder's output for random source tokens).
DECODE_SHAPES["seq2seq_attention"] = dict(
  DECODE_SHAPES["seq2seq"], source_length=WORKLOADS["seq2seq"]["source_length"]
)


def forward_macs_per_token(shape: dict[str, int], gates: int = 4) -> float:
  """Matmul multiply-adds of the forward pass per target token: the encoder's share (source
  tokens per target token), decoder input and recurrent projections (`gates` per hidden unit:
  4 for the LSTM, 3 for the GRU), vocabulary projection."""
  e, h, v, z = shape["embed_dim"], shape["hidden_size"], shape["vocab_size"], shape["latent_size"]
  g = gates * h
  encoder = (e * g + h * g) * shape["source_length"] / shape["length"]
  decoder = (e + z) * g + h * g + h * v
  return encoder + decoder


def decoding_step_costs(
  in_dim: int, hidden: int, layers: int, vocab: int, itemsize: int, input_table: bool
) -> tuple[float, float]:
  """(FLOPs per row, weight bytes) of one LSTM decoding step: input and recurrent projections
  of every layer, and the vocabulary projection. A table lookup replaces layer 0's input matmul."""
  gates = 4 * hidden
  macs = (0 if input_table else in_dim * gates) + (layers - 1) * hidden * gates
  macs += layers * hidden * gates + hidden * vocab
  return 2.0 * macs, float(macs * itemsize)


def attention_step_costs(hidden: int, source_length: int, itemsize: int) -> tuple[float, float]:
  """(FLOPs per row, weight bytes) that Luong's general attention with input feeding adds to a
  decoding step: the fed h~'s input gates, the scores and context over the source, and
  h~ = tanh(W_c [context; h]). (The memory is read too, source_length x hidden per row.)"""
  macs = hidden * 4 * hidden + 2 * source_length * hidden + 2 * hidden * hidden
  weights = hidden * 4 * hidden + 2 * hidden * hidden
  return 2.0 * macs, float(weights * itemsize)
