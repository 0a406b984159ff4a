"""A trained sentence VAE or LM: sample, reconstruct, interpolate and evaluate text.

  from textgen_jax import vae
  model = vae.SentenceModel.load("runs/ptb_vae")
  model.sample(5, jax.random.key(0), DecodeSettings("sample", top_p=0.9))  # from the prior
  model.reconstruct(["the company said it would"])  # encode, then decode the posterior mean
  model.interpolate("a b c", "d e f", num_points=5)  # Bowman et al.'s homotopy
  model.evaluate(sentences, num_samples=500)         # ELBO, IW-NLL, perplexity, MI, active units

A workdir holds config.json, vocab.json, checkpoints/, metrics.jsonl and loss_curve.png.
"""

import dataclasses
import functools
import sys
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from textgen_jax import config as config_lib
from textgen_jax import decoding, device_memory, families
from textgen_jax import workdir as workdir_lib
from textgen_jax.data import batching
from textgen_jax.data.tokenizers import Tokenizer
from textgen_jax.data.vocab import UNK, Vocabulary
from textgen_jax.decoding import DecodeSettings
from textgen_jax.errors import TextgenError
from textgen_jax.vae import loss as loss_lib
from textgen_jax.vae import metrics
from textgen_jax.vae import config as vae_config
from textgen_jax.vae.model import SentenceVAE

VOCABULARY_FILES = {"vocab.json": "sentence"}
TRAIN_SCRIPT = "experiments/train_vae.py"


def decode_from_latent(
  params: Any,
  z_BxZ: jax.Array | None,
  rng: jax.Array,
  *,
  model: SentenceVAE,
  batch_size: int,
  max_len: int,
  settings: DecodeSettings,
) -> jax.Array:
  """Decodes one sentence per row of z (or batch_size LM samples); tokens_BxL, one program."""
  state = model.apply(params, z_BxZ, batch_size, method=SentenceVAE.decoder_start)
  step_fn = lambda state, tokens_B: model.apply(
    params, state, tokens_B, method=SentenceVAE.decode_step
  )
  return decoding.decode(step_fn, state, batch_size, max_len, settings, rng)


class SentenceModel:
  """A trained sentence VAE or LM: sample, reconstruct, interpolate and evaluate text."""

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    model: SentenceVAE,
    params: Any,
    tokenizers: Sequence[Tokenizer],
    vocab: Vocabulary,
    step: int | None = None,
  ):
    """tokenizers: the one of the vocabulary (a sequence of one, as every family's are)."""
    self.config, self.model, self.params, self.step = config, model, params, step
    (self.tokenizer,), self.vocab = tokenizers, vocab
    self.max_len = config.data.max_len
    self.has_latent = model.config.has_latent
    self._buckets = batching.bucket_lengths(self.max_len, config.data.num_buckets)
    # Evaluation with K samples per sentence pays for padding K times: pad to 4-token steps.
    self._eval_buckets = batching.bucket_lengths(self.max_len, -(-(self.max_len + 1) // 4))
    self._decode = device_memory.CheckedJit(
      jax.jit(
        functools.partial(decode_from_latent, model=model, max_len=self.max_len + 1),
        static_argnames=("batch_size", "settings"),
      ),
      "decoding",
      "batch_size",
    )
    self._posterior = jax.jit(functools.partial(model.apply, method=SentenceVAE.posterior))
    loss_fn = functools.partial(
      loss_lib.sentence_loss, model=model, objective=loss_lib.VAEObjective()
    )
    self._elbo_sums = jax.jit(lambda params, batch, rng: loss_fn(params, batch, rng, True)[1])
    self._iw_cache = {}

  # ---- Text in and out -------------------------------------------------------------------

  def encode_sentences(
    self, texts: Sequence[str], what: str = "input", verbose: bool = True
  ) -> list[np.ndarray]:
    """Token ids per text; unknown words become UNK and long texts are cut, both reported."""
    token_lists = [self.tokenizer.tokenize(text) for text in texts]
    for index, tokens in enumerate(token_lists):
      if not tokens:
        raise TextgenError(f"{what} {index + 1} is empty")
    unknown = sorted(
      {t for tokens in token_lists for t in tokens if self.vocab.count_unknown([t]) and t != UNK}
    )
    if unknown and verbose:
      shown = ", ".join(repr(t) for t in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
      print(
        f"note: {len(unknown)} words not in the vocabulary are read as {UNK}: {shown}",
        file=sys.stderr,
      )
    ids, num_cut = batching.encode_texts(texts, self.tokenizer, self.vocab, self.max_len)
    if num_cut:
      print(
        f"note: cut {num_cut} of {len(texts)} {what}s to data.max_len={self.max_len} tokens",
        file=sys.stderr,
      )
    return ids

  def _texts(self, tokens_BxL: jax.Array) -> list[str]:
    return [self.tokenizer.detokenize(self.vocab.decode(row)) for row in np.asarray(tokens_BxL)]

  def _require_latent(self, what: str) -> None:
    if not self.has_latent:
      raise TextgenError(
        f"{what} needs a VAE; this workdir holds a language model "
        "(model.kind='lm'), which has no latent code"
      )

  # ---- Latent codes ----------------------------------------------------------------------

  def posterior(self, texts: Sequence[str], batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Mean and log-variance of q(z|x) for each text: two [N, Z] arrays."""
    self._require_latent("encoding text")
    return self._posterior_of_ids(self.encode_sentences(texts), batch_size)

  def _posterior_of_ids(
    self, ids: Sequence[np.ndarray], batch_size: int = 256
  ) -> tuple[np.ndarray, np.ndarray]:
    mean_NxZ = np.zeros((len(ids), self.model.config.latent_size), np.float32)
    logvar_NxZ = np.zeros_like(mean_NxZ)
    for indices, batch in batching.sorted_batches(ids, batch_size, self._buckets):
      mean_BxZ, logvar_BxZ = self._posterior(self.params, batch["inputs"], batch["input_lengths"])
      mean_NxZ[indices] = np.asarray(mean_BxZ)[: len(indices)]
      logvar_NxZ[indices] = np.asarray(logvar_BxZ)[: len(indices)]
    return mean_NxZ, logvar_NxZ

  def decode(
    self,
    z_NxZ: np.ndarray | None,
    rng: jax.Array | None = None,
    settings: DecodeSettings = DecodeSettings(),
    num: int | None = None,
    batch_size: int = 256,
  ) -> list[str]:
    """Decodes a sentence from each latent code (or `num` LM samples when z is None)."""
    settings.check(self.max_len + 1, len(self.vocab))
    settings.check_rng(rng)
    rng = jax.random.key(0) if rng is None else rng  # Unused by greedy and beam decoding.
    num = len(z_NxZ) if z_NxZ is not None else num
    texts = []
    for index, start in enumerate(range(0, num, batch_size)):
      num_rows = min(batch_size, num - start)
      padded_size = batching.padded_rows(num_rows, batch_size)
      z_BxZ = None
      if z_NxZ is not None:
        z_BxZ = np.zeros((padded_size, z_NxZ.shape[1]), np.float32)
        z_BxZ[:num_rows] = z_NxZ[start : start + num_rows]
      tokens_BxL = self._decode(
        self.params,
        z_BxZ,
        jax.random.fold_in(rng, index),
        num_rows=padded_size,
        batch_size=padded_size,
        settings=settings,
      )
      texts.extend(self._texts(tokens_BxL)[:num_rows])
    return texts

  def sample(
    self,
    num: int,
    rng: jax.Array,
    settings: DecodeSettings = DecodeSettings(),
    batch_size: int = 256,
  ) -> list[str]:
    """`num` sentences: z ~ N(0, I) then decoding (a VAE), or ancestral samples (an LM)."""
    if num < 1:
      raise TextgenError(f"the number of samples must be positive, got {num}")
    prior_rng, decode_rng = jax.random.split(rng)
    if not self.has_latent:
      return self.decode(None, decode_rng, settings, num=num, batch_size=batch_size)
    z_NxZ = np.asarray(jax.random.normal(prior_rng, (num, self.model.config.latent_size)))
    return self.decode(z_NxZ, decode_rng, settings, batch_size=batch_size)

  def reconstruct(
    self,
    texts: Sequence[str],
    rng: jax.Array | None = None,
    settings: DecodeSettings = DecodeSettings(),
  ) -> list[str]:
    """Encode, then decode the posterior mean (or, given `rng`, a posterior sample)."""
    mean_NxZ, logvar_NxZ = self.posterior(texts)
    z_NxZ = mean_NxZ
    if rng is not None:
      rng, noise_rng = jax.random.split(rng)
      z_NxZ = mean_NxZ + np.exp(0.5 * logvar_NxZ) * np.asarray(
        jax.random.normal(noise_rng, mean_NxZ.shape)
      )
    return self.decode(z_NxZ, rng, settings)

  def interpolate(
    self,
    first: str,
    second: str,
    num_points: int = 5,
    settings: DecodeSettings = DecodeSettings(),
    rng: jax.Array | None = None,
  ) -> list[tuple[float, str]]:
    """Bowman et al.'s homotopy: decodes evenly spaced points between two posterior means."""
    if num_points < 2:
      raise TextgenError(f"interpolation needs at least 2 points, got {num_points}")
    mean_2xZ, _ = self.posterior([first, second])
    weights = np.linspace(0.0, 1.0, num_points, dtype=np.float32)
    z_NxZ = (1.0 - weights[:, None]) * mean_2xZ[0] + weights[:, None] * mean_2xZ[1]
    return list(zip(weights.tolist(), self.decode(z_NxZ, rng, settings)))

  # ---- Evaluation ------------------------------------------------------------------------

  def _iw_fn(self, num_samples: int, chunk_size: int, dtype: str | None, rows_per_block):
    key = (num_samples, chunk_size, dtype, rows_per_block)
    if key not in self._iw_cache:
      model = self.model
      if dtype is not None and dtype != model.config.dtype:
        # Same float32 parameters, matmuls in `dtype` (float32 accumulation and logits).
        model = model.clone(config=dataclasses.replace(model.config, dtype=dtype))
      self._iw_cache[key] = jax.jit(
        functools.partial(
          metrics.importance_weighted_log_likelihood,
          model=model,
          num_samples=num_samples,
          chunk_size=chunk_size,
          rows_per_block=rows_per_block,
        )
      )
    return self._iw_cache[key]

  def evaluate(
    self,
    texts: Sequence[str],
    num_samples: int = 500,
    chunk_size: int = 50,
    batch_size: int = 16,
    rng: jax.Array | None = None,
    verbose: bool = True,
    dtype: str | None = None,
    rows_per_block: int | None = 256,
  ) -> dict[str, float]:
    """The literature's numbers on `texts` (see vae/metrics.py): per-sentence ELBO terms,
    K-sample importance-weighted NLL and its perplexity, MI and active units (VAE), with times.

    NLL is in nats per sentence; perplexity counts words plus one EOS per sentence. `dtype`
    ("bfloat16") runs the importance-weighted pass's matmuls in that type, accumulating, taking
    the log-sum-exp and summing in float32 (default: the model's own dtype).
    """
    if dtype is not None and dtype not in config_lib.DTYPES:
      raise TextgenError(f"dtype must be one of {', '.join(config_lib.DTYPES)}, got {dtype!r}")
    if num_samples < 1:
      raise TextgenError(f"the number of importance samples K must be positive, got {num_samples}")
    if chunk_size < 1 or batch_size < 1:
      raise TextgenError(
        f"chunk_size and batch_size must be positive, got {chunk_size} and {batch_size}"
      )
    rng, mi_rng = jax.random.split(jax.random.key(0) if rng is None else rng)
    ids = self.encode_sentences(texts, "sentence", verbose)
    num_tokens = sum(len(x) + 1 for x in ids)  # Words plus EOS.
    start = time.perf_counter()
    iw_fn = self._iw_fn(num_samples, chunk_size, dtype, rows_per_block)
    log_px_N = np.zeros(len(ids))
    totals = None
    batches = tqdm(
      batching.sorted_batches(ids, batch_size, self._eval_buckets),
      total=-(-len(ids) // batch_size),
      desc="evaluate",
      disable=not verbose,
      mininterval=1.0 if sys.stderr.isatty() else 60.0,
    )
    for index, (indices, batch) in enumerate(batches):
      elbo_key, iw_key = jax.random.split(jax.random.fold_in(rng, index))
      sums = self._elbo_sums(self.params, batch, elbo_key)
      totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
      log_px_N[indices] = np.asarray(iw_fn(self.params, batch, iw_key))[: len(indices)]
    nll = -log_px_N.sum()
    results = {
      "num_sentences": len(ids),
      "num_tokens": num_tokens,
      "nll_per_sentence": nll / len(ids),
      "perplexity": float(np.exp(nll / num_tokens)),
      "importance_samples": num_samples if self.has_latent else 0,
      "dtype": dtype or self.model.config.dtype,
    }
    totals = jax.device_get(totals)
    if self.has_latent:
      results["reconstruction"] = float(totals["nll_sum"]) / len(ids)
      results["kl"] = float(totals["kl_sum"]) / len(ids)
      results["neg_elbo"] = results["reconstruction"] + results["kl"]
      mean_NxZ, logvar_NxZ = self._posterior_of_ids(ids)
      results["mutual_information"] = float(
        metrics.mutual_information(jnp.asarray(mean_NxZ), jnp.asarray(logvar_NxZ), mi_rng)
      )
      results["active_units"], _ = metrics.active_units(mean_NxZ)
    results["seconds"] = time.perf_counter() - start
    return results

  # ---- Persistence -----------------------------------------------------------------------

  def vocabularies(self) -> dict[str, Vocabulary]:
    """Vocabulary file -> vocabulary, as the workdir stores them."""
    return dict(zip(VOCABULARY_FILES, [self.vocab]))

  def save(self, directory: str, step: int = 0) -> None:
    """Writes an inference-only copy (config, vocabulary, parameters) loadable by `load`."""
    workdir_lib.save(
      directory, self.config, (self.tokenizer,), self.vocabularies(), self.params, step
    )

  @classmethod
  def load(
    cls, workdir: str, step: int | None = None, member: int | None = None, average_last: int = 0
  ) -> "SentenceModel":
    """The VAE or LM in a workdir, at its latest checkpoint (or at `step`); of a population, its
    `member` (default: the best); average_last=K averages the last K kept checkpoints."""
    loaded = workdir_lib.load(workdir, families.get(vae_config.NAME), step, member, average_last)
    return cls(
      loaded.config,
      loaded.model,
      loaded.params,
      loaded.tokenizers,
      *loaded.vocabularies,
      loaded.step,
    )
