"""The sentence VAE / LM recipe: train (or resume) in a workdir, evaluating the literature's way.

from textgen_jax import vae
model = vae.train_and_evaluate(vae.ptb_config(), workdir="runs/ptb_vae")
"""

import dataclasses
import functools
from typing import Sequence

import jax
import ml_collections

from textgen_jax import config as config_lib
from textgen_jax import parallel, recipe, run_spec, loop
from textgen_jax.data import readers
from textgen_jax.decoding import DecodeSettings
from textgen_jax.vae import config as schema
from textgen_jax.vae import aggressive as aggressive_lib
from textgen_jax.vae import metrics as vae_metrics
from textgen_jax.vae import loss as loss_lib
from textgen_jax.vae.model import build_model, init_params
from textgen_jax.vae.sentence_model import VOCABULARY_FILES, SentenceModel


# The family's own run keys (run_spec.family_key): fresh decoder parameters for a reset during
# the run, and the dropout of aggressive training's extra encoder updates.
RESET_KEY, AGGRESSIVE_KEY = 0, 1


def periodic_evaluation(
  sentence_model: SentenceModel,
  sentences: Sequence[str],
  train_cfg: ml_collections.ConfigDict,
  rng: jax.Array,
):
  """The evaluate_generation hook: IW-NLL, MI and active units on a held-out subset, samples
  and reconstructions; the same `rng` at every evaluation, so they compare across steps."""
  sentences = sentences[: train_cfg.eval_max_sentences or None]

  def evaluate(params):
    sentence_model.params = params
    metrics, lines = {}, []
    if train_cfg.eval_num_samples:
      results = sentence_model.evaluate(
        sentences, train_cfg.eval_num_samples, rng=rng, verbose=False
      )
      metrics = {
        "iw_nll_per_sentence": results["nll_per_sentence"],
        "iw_perplexity": results["perplexity"],
      }
      metrics.update(
        {
          k: results[k]
          for k in ("mutual_information", "active_units")
          if results.get(k) is not None
        }
      )
    num = train_cfg.num_examples_to_print
    if num:
      nucleus = DecodeSettings("sample", top_p=0.9)
      lines += [f"  sample: {s!r}" for s in sentence_model.sample(num, rng, nucleus)]
      if sentence_model.has_latent:
        originals = list(sentences[:num])
        for original, output in zip(originals, sentence_model.reconstruct(originals)):
          lines.append(f"  {original.strip()!r} -> {output!r}")
    return metrics, lines

  return evaluate


def held_out_mutual_information(
  sentence_model: SentenceModel,
  sentences: Sequence[str],
  train_cfg: ml_collections.ConfigDict,
  rng: jax.Array,
):
  """params -> I(x; z) on the held-out sentences (eval_max_sentences of them), one z each from
  `rng`: the aggressive phase's stopping rule."""
  sentences = sentences[: train_cfg.eval_max_sentences or None]

  def mutual_information(params):
    sentence_model.params = params
    mean_NxZ, logvar_NxZ = sentence_model.posterior(sentences)
    return float(vae_metrics.mutual_information(mean_NxZ, logvar_NxZ, rng))

  return mutual_information


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> SentenceModel:
  """Trains (or resumes) a sentence VAE or LM in workdir; prints held-out metrics and samples."""
  parallel.initialize(config.parallel)  # Before any JAX work: may join other hosts.
  objective = schema.validate(config)
  spec = run_spec.build(config, schema.FAMILY, schema.PER_MEMBER_FIELDS)
  data = recipe.read_data(config, readers.read_lines, VOCABULARY_FILES)
  recipe.prepare_workdir(workdir, config, data)
  model = build_model(spec.model_config, *data.vocabularies.values())
  sentence_model = SentenceModel(config, model, None, data.tokenizer, *data.vocabularies.values())
  keys = spec.keys
  model_init = functools.partial(init_params, model)

  def member_hooks(hyperparameters, member_keys):
    """The loss and reset hook of a member whose `vae` fields and dropout rates may differ
    (traced values)."""
    member_objective = dataclasses.replace(
      objective, **recipe.section_values(hyperparameters, "vae")
    )
    member_model = recipe.member_model(model, hyperparameters)
    reset = loss_lib.pretraining_reset(
      member_objective, model, model_init, run_spec.family_key(member_keys, RESET_KEY)
    )
    return (
      functools.partial(loss_lib.sentence_loss, model=member_model, objective=member_objective),
      reset if model.config.has_latent else None,
    )

  loss_fn, before_update = member_hooks({}, keys)
  aggressive = None
  if objective.aggressive:
    aggressive = aggressive_lib.AggressiveTraining(
      loss_fn,
      before_update,
      aggressive_lib.side_labels(model.decoder_modules()),
      data.train_batches.num_batches,
      held_out_mutual_information(
        sentence_model, data.valid_examples, config.train, keys.evaluation
      ),
      config_lib.data_seed(config),
      keys.dropout,
      run_spec.family_key(keys, AGGRESSIVE_KEY),
      objective.aggressive_max_steps,
      objective.aggressive_check_every,
    )
  task = loop.Task(
    init_params=model_init,
    loss_fn=loss_fn,
    before_update=before_update,
    train_batches=data.train_batches,
    valid_batches=data.valid_batches,
    evaluate_generation=periodic_evaluation(
      sentence_model, data.valid_examples, config.train, keys.evaluation
    ),
    vocabulary_matrices=model.VOCABULARY_MATRICES,
    member_choices=schema.MEMBER_CHOICES,
    member_hooks=member_hooks,
    optimizer_sides=None if aggressive is None else aggressive.sides,
    procedure=aggressive,
    per_step=("kl_weight", "encoder_steps"),
  )
  sentence_model.params = recipe.train(spec, workdir, task)
  return sentence_model
