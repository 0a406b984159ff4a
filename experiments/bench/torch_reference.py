"""The same LSTM decoder and training step in PyTorch: the reference the benchmarks compare to.

Written the way most researchers would: `nn.LSTM` stepped one token at a time under
`inference_mode` for decoding, and `nn.LSTM` over the whole sequence for teacher-forced
training. Random weights (speed only); the EOS logit is pushed down, as in the JAX benchmark,
so every sequence decodes max_len tokens. Needs the optional `bench` extra (torch).
"""

import os
import time

import torch
from torch import nn

from textgen_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID

torch.set_num_threads(os.cpu_count() or 1)


# The recurrent module of each model.cell (the attribute keeps the name `lstm` for both).
CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


class Decoder(nn.Module):
  """Embedding (+ z on every input, for the VAE shape) -> stacked LSTM -> vocabulary logits."""

  def __init__(
    self,
    vocab_size: int,
    embed_dim: int,
    hidden_size: int,
    num_layers: int = 1,
    latent_size: int = 0,
    cell: str = "lstm",
  ):
    super().__init__()
    self.embedding = nn.Embedding(vocab_size, embed_dim)
    self.lstm = CELLS[cell](embed_dim + latent_size, hidden_size, num_layers, batch_first=True)
    self.output = nn.Linear(hidden_size, vocab_size)
    with torch.no_grad():
      self.output.bias[EOS_ID] = -1e9
    self.latent_size = latent_size

  def inputs(self, tokens: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
    x = self.embedding(tokens)
    if self.latent_size:
      x = torch.cat([x, z[:, None, :].expand(-1, x.shape[1], -1)], -1)
    return x

  def forward(self, tokens_BxT: torch.Tensor, state, z=None):
    out, state = self.lstm(self.inputs(tokens_BxT, z), state)
    return self.output(out), state


class AttentionDecoder(nn.Module):
  """Luong et al. 2015's decoder with general attention and input feeding, as textgen-jax's
  model.attention="general", input_feeding=True: an LSTM reads [embedding; previous h~], its top
  h scores the memory through W_a, h~ = tanh(W_c [context; h]) feeds the logits and the next
  step. The memory is random (speed only), source_length positions per row."""

  def __init__(
    self, vocab_size: int, embed_dim: int, hidden_size: int, num_layers: int, source_length: int
  ):
    super().__init__()
    self.embedding = nn.Embedding(vocab_size, embed_dim)
    self.lstm = nn.LSTM(embed_dim + hidden_size, hidden_size, num_layers, batch_first=True)
    self.key_projection = nn.Linear(hidden_size, hidden_size, bias=False)
    self.combine = nn.Linear(2 * hidden_size, hidden_size, bias=False)
    self.output = nn.Linear(hidden_size, vocab_size)
    with torch.no_grad():
      self.output.bias[EOS_ID] = -1e9
    self.latent_size, self.source_length = 0, source_length

  def step(self, tokens_Bx1, state, feed_BxH, keys_BxSxH, memory_BxSxH):
    x = torch.cat([self.embedding(tokens_Bx1), feed_BxH[:, None, :]], -1)
    out_Bx1xH, state = self.lstm(x, state)
    weights_Bx1xS = torch.softmax(torch.bmm(out_Bx1xH, keys_BxSxH.transpose(1, 2)), -1)
    context_Bx1xH = torch.bmm(weights_Bx1xS, memory_BxSxH)
    feed_BxH = torch.tanh(self.combine(torch.cat([context_Bx1xH, out_Bx1xH], -1)))[:, 0]
    return self.output(feed_BxH)[:, None, :], state, feed_BxH


def make_attention_decoder(
  vocab_size, embed_dim, hidden_size, num_layers, source_length, dtype="float32", device="cpu"
) -> AttentionDecoder:
  torch.manual_seed(0)
  return (
    AttentionDecoder(vocab_size, embed_dim, hidden_size, num_layers, source_length)
    .to(device=device, dtype=_tensor_dtype(dtype))
    .eval()
  )


def _tensor_dtype(dtype: str) -> torch.dtype:
  return {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]


def make_decoder(
  vocab_size,
  embed_dim,
  hidden_size,
  num_layers=1,
  latent_size=0,
  dtype="float32",
  device="cpu",
  cell="lstm",
) -> Decoder:
  torch.manual_seed(0)
  return (
    Decoder(vocab_size, embed_dim, hidden_size, num_layers, latent_size, cell)
    .to(device=device, dtype=_tensor_dtype(dtype))
    .eval()
  )


def device_like(jax_device) -> str:
  """ "cuda" when JAX runs on an NVIDIA GPU and this torch can use it (nn.LSTM then runs
  cuDNN's kernel), else "cpu"."""
  on_gpu = jax_device.platform == "gpu" and torch.cuda.is_available()
  return "cuda" if on_gpu else "cpu"


def device_name(module: nn.Module) -> str:
  device = next(module.parameters()).device
  return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


@torch.inference_mode()
def decode(decoder: Decoder, batch_size: int, max_len: int, sample: bool = False) -> torch.Tensor:
  """Greedy (or sampled) decoding from a random start state, one nn.LSTM call per token."""
  dtype = decoder.output.weight.dtype
  layers, hidden = decoder.lstm.num_layers, decoder.lstm.hidden_size
  c = torch.randn(layers, batch_size, hidden, dtype=dtype)
  state = (torch.tanh(c), c)
  z = torch.randn(batch_size, decoder.latent_size, dtype=dtype) if decoder.latent_size else None
  attention = isinstance(decoder, AttentionDecoder)
  if attention:  # The memory and its keys, once per source, as the JAX decoder keeps them.
    memory = torch.randn(batch_size, decoder.source_length, hidden, dtype=dtype)
    keys, feed = decoder.key_projection(memory), torch.zeros(batch_size, hidden, dtype=dtype)
  previous = torch.full((batch_size, 1), BOS_ID, dtype=torch.long)
  done = torch.zeros(batch_size, dtype=torch.bool)
  outputs = []
  for _ in range(max_len):
    if attention:
      logits, state, feed = decoder.step(previous, state, feed, keys, memory)
    else:
      logits, state = decoder(previous, state, z)
    logits = logits[:, 0].float()
    logits[:, PAD_ID] = logits[:, BOS_ID] = float("-inf")
    if sample:
      token = torch.multinomial(torch.softmax(logits, -1), 1)[:, 0]
    else:
      token = logits.argmax(-1)
    token = torch.where(done, PAD_ID, token)
    outputs.append(token)
    done |= token == EOS_ID
    if bool(done.all()):
      break
    previous = token[:, None]
  return torch.stack(outputs, 1)


def time_decode(
  decoder: Decoder,
  batch_size: int,
  max_len: int,
  sample: bool,
  min_calls: int = 3,
  min_seconds: float = 1.0,
) -> tuple[list[float], int]:
  """Seconds per decode call (after one warm-up) and tokens generated per call."""
  tokens = decode(decoder, batch_size, max_len, sample)
  seconds, started = [], time.perf_counter()
  while len(seconds) < min_calls or time.perf_counter() - started < min_seconds:
    start = time.perf_counter()
    decode(decoder, batch_size, max_len, sample)
    seconds.append(time.perf_counter() - start)
  return seconds, int((tokens != PAD_ID).sum())


def make_train_step(
  decoder: Decoder,
  batch_size: int,
  length: int,
  encoder_layers: int = 0,
  source_length: int = 0,
  source_vocab_size: int = 0,
  autocast: str | None = None,
):
  """A function running one Adam training step of teacher-forced cross-entropy over
  [batch, length] on fixed random tokens (it returns the loss).

  autocast="bfloat16": PyTorch's mixed precision (torch.autocast; on a CPU its matmuls and
  nn.LSTM run oneDNN's bfloat16 kernels), the modules, gradients and Adam state in float32.

  With encoder_layers > 0 an nn.LSTM encoder reads a source first (source_length tokens of
  source_vocab_size; by default the target's) and its final state starts the decoder (the
  seq2seq shape); otherwise the decoder starts from zeros and reads z beside every input when
  it has a latent (the VAE shape, whose encoder reads the target sentence).
  """
  vocab_size = decoder.output.out_features
  source_vocab_size = source_vocab_size or vocab_size
  encoder = _Encoder(decoder, encoder_layers, source_vocab_size)
  modules = nn.ModuleList([decoder] + (encoder.modules() if encoder.lstm else []))
  modules = modules.to(
    device=decoder.output.weight.device, dtype=decoder.output.weight.dtype
  ).train()
  optimizer = torch.optim.Adam(modules.parameters(), lr=1e-3)
  sources, targets, inputs = _random_tokens(
    decoder, batch_size, length, source_length or length, source_vocab_size
  )

  device_type = decoder.output.weight.device.type
  mixed = lambda: torch.autocast(
    device_type, dtype=_tensor_dtype(autocast or "bfloat16"), enabled=autocast is not None
  )

  def step():
    with mixed():
      state, z, kl = encoder(sources, length)
      logits, _ = decoder(inputs, state, z)
      loss = nn.functional.cross_entropy(logits.reshape(-1, vocab_size), targets.reshape(-1)) + kl
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()  # Waits for the step to finish (on a GPU too).

  return step


class _Encoder:
  """What starts the decoder in training: for seq2seq an nn.LSTM encoder's final state; for the
  VAE q(z|x) from one, then c0 = Linear(z), h0 = tanh(c0), as textgen-jax's decoder starts;
  with neither (encoder_layers=0, no latent) the decoder starts from zeros."""

  def __init__(self, decoder: Decoder, encoder_layers: int, source_vocab_size: int):
    self.latent_size = decoder.latent_size
    self.embedding = self.lstm = self.posterior = self.initial_state = None
    if encoder_layers or self.latent_size:
      embed_dim, hidden = decoder.embedding.embedding_dim, decoder.lstm.hidden_size
      self.embedding = nn.Embedding(source_vocab_size, embed_dim)
      cell = type(decoder.lstm)
      self.lstm = cell(embed_dim, hidden, max(encoder_layers, 1), batch_first=True)
      if self.latent_size:
        self.posterior = nn.Linear(hidden, 2 * self.latent_size)
        self.initial_state = nn.Linear(self.latent_size, hidden)

  def modules(self) -> list[nn.Module]:
    return [
      m for m in (self.embedding, self.lstm, self.posterior, self.initial_state) if m is not None
    ]

  def __call__(self, sources: torch.Tensor, length: int):
    """(decoder state or None, z or None, KL per target token or 0.0)."""
    if self.lstm is None:
      return None, None, 0.0
    _, state = self.lstm(self.embedding(sources))
    gru = isinstance(self.lstm, nn.GRU)  # Its state is h alone.
    h = state if gru else state[0]
    if not self.latent_size:
      return state, None, 0.0
    mean, logvar = self.posterior(h[-1]).chunk(2, -1)
    z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
    kl = 0.5 * (logvar.exp() + mean**2 - 1.0 - logvar).sum(-1).mean() / length
    c0 = self.initial_state(z)[None]
    return (torch.tanh(c0) if gru else (torch.tanh(c0), c0)), z, kl


def _random_tokens(
  decoder: Decoder, batch_size: int, length: int, source_length: int, source_vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
  """(sources, targets, decoder inputs: BOS + targets[:-1]) on the decoder's device; the VAE's
  sources are its targets."""
  generator = torch.Generator().manual_seed(0)
  sources = torch.randint(4, source_vocab_size, (batch_size, source_length), generator=generator)
  targets = torch.randint(4, decoder.output.out_features, (batch_size, length), generator=generator)
  if decoder.latent_size:
    sources = targets
  inputs = torch.cat([torch.full((batch_size, 1), BOS_ID), targets[:, :-1]], 1)
  device = decoder.output.weight.device
  return sources.to(device), targets.to(device), inputs.to(device)
