"""Sentence VAE and language model end to end: data, training, generation and evaluation.

  from textgen_jax import sentence_vae
  model = sentence_vae.train_and_evaluate(config, workdir="runs/ptb_vae")
  model = sentence_vae.SentenceModel.load("runs/ptb_vae")
  model.sample(5, jax.random.key(0), top_p=0.9)     # sentences from the prior
  model.reconstruct(["the company said it would"])  # encode, then decode the posterior mean
  model.interpolate("a b c", "d e f", num_points=5)  # Bowman et al.'s homotopy
  model.evaluate(sentences, num_samples=500)         # ELBO, IW-NLL, perplexity, MI, active units

A workdir holds config.json, vocab.json, checkpoints/, metrics.jsonl and loss_curve.png. The
same code trains the language-model baseline when config.model.kind == "lm".
"""

import functools
import sys
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from textgen_jax import decoding, device_memory, parallel, train_loop, vae_metrics, vae_objective
from textgen_jax import workdir as workdir_lib
from textgen_jax.checkpointing import Checkpointer
from textgen_jax.config import check_positive
from textgen_jax.data import batching, readers
from textgen_jax.data.tokenizers import Tokenizer, make_tokenizer, tokenizer_from_config
from textgen_jax.data.vocab import UNK, Vocabulary, load_vocabulary
from textgen_jax.decoding import DecodeSettings
from textgen_jax.errors import TextgenError
from textgen_jax.models import cudnn_lstm
from textgen_jax.models.text_vae import KINDS, TextVAE, TextVAEConfig
from textgen_jax.training import make_optimizer

VOCAB_FILE = "vocab.json"


def build_model(model_cfg: ml_collections.ConfigDict, vocab: Vocabulary) -> TextVAE:
  return TextVAE(TextVAEConfig(vocab_size=len(vocab), **model_cfg.to_dict()))


def init_params(model: TextVAE, rng: jax.Array) -> Any:
  tokens_BxT = jnp.zeros((1, 2), jnp.int32)
  z_BxZ = jnp.zeros((1, model.config.latent_size)) if model.config.has_latent else None
  return model.init(rng, tokens_BxT, jnp.ones((1,), jnp.int32), tokens_BxT, z_BxZ)


def decode_from_latent(params: Any, z_BxZ: jax.Array | None, rng: jax.Array, *, model: TextVAE,
                       batch_size: int, max_len: int, settings: DecodeSettings) -> jax.Array:
  """Decodes one sentence per row of z (or batch_size LM samples); tokens_BxL, one program."""
  state = model.apply(params, z_BxZ, batch_size, method=TextVAE.decoder_start)
  step_fn = lambda state, tokens_B: model.apply(params, state, tokens_B,
                                                method=TextVAE.decode_step)
  return decoding.decode(step_fn, state, batch_size, max_len, settings, rng)


class SentenceModel:
  """A trained sentence VAE or LM: sample, reconstruct, interpolate and evaluate text."""

  def __init__(self, config: ml_collections.ConfigDict, model: TextVAE, params: Any,
               tokenizer: Tokenizer, vocab: Vocabulary, step: int | None = None):
    self.config, self.model, self.params, self.step = config, model, params, step
    self.tokenizer, self.vocab = tokenizer, vocab
    self.max_len = config.data.max_len
    self.has_latent = model.config.has_latent
    self._lengths = batching.bucket_lengths(self.max_len, config.data.num_buckets)
    # Evaluation with K samples per sentence pays for padding K times: pad to 4-token steps.
    self._eval_lengths = batching.bucket_lengths(self.max_len, -(-(self.max_len + 1) // 4))
    self._decode = device_memory.CheckedJit(
        jax.jit(functools.partial(decode_from_latent, model=model, max_len=self.max_len + 1),
                static_argnames=("batch_size", "settings")), "decoding", "batch_size")
    self._posterior = jax.jit(functools.partial(model.apply, method=TextVAE.posterior))
    loss_fn = functools.partial(vae_objective.sentence_loss, model=model,
                                objective=vae_objective.VAEObjective())
    self._elbo_sums = jax.jit(lambda params, batch, rng: loss_fn(params, batch, rng, True)[1])
    self._iw_cache = {}

  # ---- Text in and out -------------------------------------------------------------------

  def encode_sentences(self, texts: Sequence[str], what: str = "input",
                       verbose: bool = True) -> list[np.ndarray]:
    """Token ids per text; unknown words become UNK and long texts are cut, both reported."""
    token_lists = [self.tokenizer.tokenize(text) for text in texts]
    for index, tokens in enumerate(token_lists):
      if not tokens:
        raise TextgenError(f"{what} {index + 1} is empty")
    unknown = sorted({t for tokens in token_lists for t in tokens
                      if self.vocab.count_unknown([t]) and t != UNK})
    if unknown and verbose:
      shown = ", ".join(repr(t) for t in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
      print(f"note: {len(unknown)} words not in the vocabulary are read as {UNK}: {shown}",
            file=sys.stderr)
    ids, num_cut = batching.encode_texts(texts, self.tokenizer, self.vocab, self.max_len)
    if num_cut:
      print(f"note: cut {num_cut} of {len(texts)} {what}s to data.max_len={self.max_len} tokens",
            file=sys.stderr)
    return ids

  def _texts(self, tokens_BxL: jax.Array) -> list[str]:
    return [self.tokenizer.detokenize(self.vocab.decode(row)) for row in np.asarray(tokens_BxL)]

  def _require_latent(self, what: str) -> None:
    if not self.has_latent:
      raise TextgenError(f"{what} needs a VAE; this workdir holds a language model "
                         "(model.kind='lm'), which has no latent code")

  # ---- Latent codes ----------------------------------------------------------------------

  def posterior(self, texts: Sequence[str], batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Mean and log-variance of q(z|x) for each text: two [N, Z] arrays."""
    self._require_latent("encoding text")
    return self._posterior_of_ids(self.encode_sentences(texts), batch_size)

  def _posterior_of_ids(self, ids: Sequence[np.ndarray],
                        batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    mean_NxZ = np.zeros((len(ids), self.model.config.latent_size), np.float32)
    logvar_NxZ = np.zeros_like(mean_NxZ)
    for rows, batch in batching.sorted_batches(ids, batch_size, self._lengths):
      mean_BxZ, logvar_BxZ = self._posterior(self.params, batch["inputs"], batch["input_lengths"])
      mean_NxZ[rows], logvar_NxZ[rows] = np.asarray(mean_BxZ)[:len(rows)], np.asarray(
          logvar_BxZ)[:len(rows)]
    return mean_NxZ, logvar_NxZ

  def decode(self, z_NxZ: np.ndarray | None, rng: jax.Array | None = None,
             settings: DecodeSettings = DecodeSettings(), num: int | None = None,
             batch_size: int = 256) -> list[str]:
    """Decodes a sentence from each latent code (or `num` LM samples when z is None)."""
    settings.check(self.max_len + 1, len(self.vocab))
    if settings.strategy == "sample" and rng is None:
      raise TextgenError("sampling needs an explicit rng key")
    rng = jax.random.key(0) if rng is None else rng
    num = len(z_NxZ) if z_NxZ is not None else num
    texts = []
    for index, start in enumerate(range(0, num, batch_size)):
      rows = min(batch_size, num - start)
      padded_size = batching.padded_rows(rows, batch_size)
      z_BxZ = None
      if z_NxZ is not None:
        z_BxZ = np.zeros((padded_size, z_NxZ.shape[1]), np.float32)
        z_BxZ[:rows] = z_NxZ[start:start + rows]
      tokens_BxL = self._decode(self.params, z_BxZ, jax.random.fold_in(rng, index),
                                rows=padded_size, batch_size=padded_size, settings=settings)
      texts.extend(self._texts(tokens_BxL)[:rows])
    return texts

  def sample(self, num: int, rng: jax.Array, settings: DecodeSettings = DecodeSettings(),
             batch_size: int = 256) -> list[str]:
    """`num` sentences: z ~ N(0, I) then decoding (a VAE), or ancestral samples (an LM)."""
    if num < 1:
      raise TextgenError(f"the number of samples must be positive, got {num}")
    prior_rng, decode_rng = jax.random.split(rng)
    if not self.has_latent:
      return self.decode(None, decode_rng, settings, num=num, batch_size=batch_size)
    z_NxZ = np.asarray(jax.random.normal(prior_rng, (num, self.model.config.latent_size)))
    return self.decode(z_NxZ, decode_rng, settings, batch_size=batch_size)

  def reconstruct(self, texts: Sequence[str], rng: jax.Array | None = None,
                  settings: DecodeSettings = DecodeSettings()) -> list[str]:
    """Encode, then decode the posterior mean (or, given `rng`, a posterior sample)."""
    mean_NxZ, logvar_NxZ = self.posterior(texts)
    z_NxZ = mean_NxZ
    if rng is not None:
      rng, noise_rng = jax.random.split(rng)
      z_NxZ = mean_NxZ + np.exp(0.5 * logvar_NxZ) * np.asarray(
          jax.random.normal(noise_rng, mean_NxZ.shape))
    return self.decode(z_NxZ, rng, settings)

  def interpolate(self, first: str, second: str, num_points: int = 5,
                  settings: DecodeSettings = DecodeSettings(),
                  rng: jax.Array | None = None) -> list[tuple[float, str]]:
    """Bowman et al.'s homotopy: decodes evenly spaced points between two posterior means."""
    if num_points < 2:
      raise TextgenError(f"interpolation needs at least 2 points, got {num_points}")
    mean_2xZ, _ = self.posterior([first, second])
    weights = np.linspace(0.0, 1.0, num_points, dtype=np.float32)
    z_NxZ = (1.0 - weights[:, None]) * mean_2xZ[0] + weights[:, None] * mean_2xZ[1]
    return list(zip(weights.tolist(), self.decode(z_NxZ, rng, settings)))

  # ---- Evaluation ------------------------------------------------------------------------

  def _iw_fn(self, num_samples: int, chunk_size: int):
    key = (num_samples, chunk_size)
    if key not in self._iw_cache:
      self._iw_cache[key] = jax.jit(functools.partial(
          vae_metrics.importance_weighted_log_likelihood, model=self.model,
          num_samples=num_samples, chunk_size=chunk_size))
    return self._iw_cache[key]

  def evaluate(self, texts: Sequence[str], num_samples: int = 500, chunk_size: int = 50,
               batch_size: int = 16, rng: jax.Array | None = None,
               verbose: bool = True) -> dict[str, float]:
    """The literature's numbers on `texts` (see vae_metrics): per-sentence ELBO terms,
    K-sample importance-weighted NLL and its perplexity, MI and active units (VAE), with times.

    NLL is in nats per sentence; perplexity counts words plus one EOS per sentence.
    """
    if num_samples < 1:
      raise TextgenError(f"the number of importance samples K must be positive, got {num_samples}")
    if chunk_size < 1 or batch_size < 1:
      raise TextgenError(f"chunk_size and batch_size must be positive, got {chunk_size} and "
                         f"{batch_size}")
    rng, mi_rng = jax.random.split(jax.random.key(0) if rng is None else rng)
    ids = self.encode_sentences(texts, "sentence", verbose)
    num_tokens = sum(len(x) + 1 for x in ids)  # Words plus EOS.
    start = time.perf_counter()
    iw_fn = self._iw_fn(num_samples, chunk_size)
    log_px_N = np.zeros(len(ids))
    totals = None
    batches = tqdm(batching.sorted_batches(ids, batch_size, self._eval_lengths),
                   total=-(-len(ids) // batch_size), desc="evaluate", disable=not verbose,
                   mininterval=1.0 if sys.stderr.isatty() else 60.0)
    for index, (rows, batch) in enumerate(batches):
      elbo_key, iw_key = jax.random.split(jax.random.fold_in(rng, index))
      sums = self._elbo_sums(self.params, batch, elbo_key)
      totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
      log_px_N[rows] = np.asarray(iw_fn(self.params, batch, iw_key))[:len(rows)]
    nll = -log_px_N.sum()
    results = {"num_sentences": len(ids), "num_tokens": num_tokens,
               "nll_per_sentence": nll / len(ids),
               "perplexity": float(np.exp(nll / num_tokens)),
               "importance_samples": num_samples if self.has_latent else 0}
    totals = jax.device_get(totals)
    if self.has_latent:
      results["reconstruction"] = float(totals["nll_sum"]) / len(ids)
      results["kl"] = float(totals["kl_sum"]) / len(ids)
      results["neg_elbo"] = results["reconstruction"] + results["kl"]
      mean_NxZ, logvar_NxZ = self._posterior_of_ids(ids)
      results["mutual_information"] = float(vae_metrics.mutual_information(
          jnp.asarray(mean_NxZ), jnp.asarray(logvar_NxZ), mi_rng))
      results["active_units"], _ = vae_metrics.active_units(mean_NxZ)
    results["seconds"] = time.perf_counter() - start
    return results

  # ---- Persistence -----------------------------------------------------------------------

  @classmethod
  def load(cls, workdir: str, step: int | None = None) -> "SentenceModel":
    """The VAE or LM in a workdir, at its latest checkpoint (or at `step`)."""
    config = workdir_lib.read_model_config(workdir)
    if config.get("model", {}).get("kind") not in KINDS:
      raise TextgenError(f"{workdir} holds a model this script cannot use (a seq2seq "
                         "translation model?); train a VAE or LM with experiments/train_vae.py")
    if not workdir_lib.has_checkpoints(workdir):
      raise TextgenError(f"{workdir}: no checkpoint found; train one with "
                         f"experiments/train_vae.py --workdir={workdir}")
    vocab, tokenizer_cfg = load_vocabulary(f"{workdir}/{VOCAB_FILE}")
    model = build_model(config.model, vocab)
    params_shape = jax.eval_shape(functools.partial(init_params, model), jax.random.key(0))
    checkpointer = Checkpointer(workdir_lib.checkpoint_dir(workdir))
    available = checkpointer.all_steps()
    step = available[-1] if step is None else step
    if step not in available:
      checkpointer.close()
      raise TextgenError(f"{workdir}: no checkpoint at step {step}; it has steps {available}")
    params = checkpointer.restore_params(params_shape, step)
    checkpointer.close()
    return cls(config, model, params, tokenizer_from_config(tokenizer_cfg), vocab, step)


# ---- Training ------------------------------------------------------------------------------

def _validate(config: ml_collections.ConfigDict) -> vae_objective.VAEObjective:
  check_positive(config, ["data.max_len", "data.batch_size", "data.num_buckets", "data.min_count",
                          "model.embed_dim", "model.hidden_size", "model.latent_size",
                          "model.encoder_layers", "model.decoder_layers", "opt.learning_rate",
                          "train.num_steps", "train.log_every", "train.eval_every",
                          "train.checkpoint_every", "train.keep_checkpoints"])
  if config.model.kind not in KINDS:
    raise TextgenError(f"--config.model.kind={config.model.kind!r}: choose vae or lm")
  if config.model.dtype not in ("float32", "bfloat16"):
    raise TextgenError(f"--config.model.dtype={config.model.dtype!r}: choose float32 or bfloat16")
  for name in ("embedding_dropout", "output_dropout"):
    if not 0.0 <= config.model[name] < 1.0:
      raise TextgenError(f"--config.model.{name} must be in [0, 1), got {config.model[name]}")
  if config.train.eval_num_samples < 0:
    raise TextgenError("--config.train.eval_num_samples must not be negative, got "
                       f"{config.train.eval_num_samples}")
  cudnn_lstm.resolve_backend(config.model.lstm_backend, config.model.dtype)  # Raises if unusable.
  make_optimizer(config.opt, config.train.num_steps)  # Raises on an unknown name or schedule.
  return vae_objective.check_objective(config.vae)


def _encode(sentences: Sequence[str], locations: Sequence[str], tokenizer: Tokenizer,
            vocab: Vocabulary, data_cfg: ml_collections.ConfigDict, what: str) -> list[np.ndarray]:
  ids, num_cut = batching.encode_texts(sentences, tokenizer, vocab, data_cfg.max_len,
                                       data_cfg.too_long, "sentence", locations)
  if num_cut:
    print(f"{what}: truncated {num_cut} of {len(sentences)} sentences to "
          f"data.max_len={data_cfg.max_len} tokens")
  return ids


def _periodic_evaluation(sentence_model: SentenceModel, sentences: Sequence[str],
                         train_cfg: ml_collections.ConfigDict, seed: int):
  """The evaluate_generation hook: IW-NLL, MI and active units on a held-out subset, samples."""
  sentences = sentences[:train_cfg.eval_max_sentences or None]
  rng = jax.random.key(seed)

  def evaluate(params):
    sentence_model.params = params
    metrics, lines = {}, []
    if train_cfg.eval_num_samples:
      results = sentence_model.evaluate(sentences, train_cfg.eval_num_samples, rng=rng,
                                        verbose=False)
      metrics = {"iw_nll_per_sentence": results["nll_per_sentence"],
                 "iw_perplexity": results["perplexity"]}
      metrics.update({k: results[k] for k in ("mutual_information", "active_units")
                      if k in results})
    num = train_cfg.num_examples_to_print
    if num:
      greedy, nucleus = DecodeSettings(), DecodeSettings("sample", top_p=0.9)
      lines += [f"  sample: {s!r}" for s in sentence_model.sample(num, rng, nucleus)]
      if sentence_model.has_latent:
        originals = list(sentences[:num])
        for original, output in zip(originals, sentence_model.reconstruct(originals,
                                                                          settings=greedy)):
          lines.append(f"  {original.strip()!r} -> {output!r}")
    return metrics, lines

  return evaluate


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> SentenceModel:
  """Trains (or resumes) a sentence VAE or LM in workdir; prints held-out metrics and samples."""
  parallel.initialize(config.parallel)  # Before any JAX work: may join other hosts.
  objective = _validate(config)
  data_cfg = config.data
  splits = readers.read_splits(data_cfg, config.seed, readers.read_lines)
  tokenizer = make_tokenizer(data_cfg.tokenizer, data_cfg.lowercase)
  vocab = Vocabulary.build([tokenizer.tokenize(s) for s in splits.train], data_cfg.min_count,
                           data_cfg.max_size or None, data_cfg.vocab_size_multiple)
  print(f"{len(splits.train)} training and {len(splits.valid)} validation sentences; "
        f"vocabulary: {len(vocab)} {data_cfg.tokenizer} tokens")
  lengths = batching.bucket_lengths(data_cfg.max_len, data_cfg.num_buckets)
  train_ids = _encode(splits.train, splits.train_locations, tokenizer, vocab, data_cfg, "train")
  valid_ids = _encode(splits.valid, splits.valid_locations, tokenizer, vocab, data_cfg, "valid")
  train_batches = batching.BucketedBatches(train_ids, train_ids, data_cfg.batch_size, lengths,
                                           config.seed)
  valid_batches = batching.BucketedBatches(valid_ids, valid_ids, data_cfg.batch_size, lengths,
                                           shuffle=False).epoch(0)
  if config.train.max_eval_batches:
    valid_batches = valid_batches[:config.train.max_eval_batches]

  workdir_lib.make_workdir(workdir)
  if workdir_lib.has_checkpoints(workdir):
    workdir_lib.check_resumable(workdir, config, {VOCAB_FILE: vocab})
  if parallel.is_primary():
    workdir_lib.write_assets(workdir, config, tokenizer, {VOCAB_FILE: vocab})

  model = build_model(config.model, vocab)
  sentence_model = SentenceModel(config, model, None, tokenizer, vocab)
  model_init = functools.partial(init_params, model)
  reset_rng = jax.random.fold_in(jax.random.key(config.seed), objective.pretrain_steps)
  task = train_loop.Task(
      init_params=model_init,
      loss_fn=functools.partial(vae_objective.sentence_loss, model=model, objective=objective),
      train_batches=train_batches, valid_batches=valid_batches,
      evaluate_generation=_periodic_evaluation(sentence_model, splits.valid, config.train,
                                               config.seed),
      before_update=vae_objective.pretraining_reset(objective, model_init, reset_rng)
      if model.config.has_latent else None)
  state = train_loop.train(config, workdir, task)
  sentence_model.params = parallel.local_copy(state.params)
  return sentence_model
