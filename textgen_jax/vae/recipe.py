"""The sentence VAE / LM family's hooks and its `Family` (registered by the package): train (or
resume) in a workdir, evaluating the literature's way.

from textgen_jax import vae
model = vae.train_and_evaluate(vae.ptb_config(), workdir="runs/ptb_vae")
"""

import dataclasses
import functools
from typing import Sequence

import jax
import ml_collections

from textgen_jax import config as config_lib
from textgen_jax import families, recipe
from textgen_jax.data import readers
from textgen_jax.decoding import DecodeSettings
from textgen_jax.vae import config as vae_config
from textgen_jax.vae import aggressive as aggressive_lib
from textgen_jax.vae import metrics as vae_metrics
from textgen_jax.vae import loss as loss_lib
from textgen_jax.vae.model import SentenceVAE, build_model, init_params
from textgen_jax.vae.sentence_model import TRAIN_SCRIPT, VOCABULARY_FILES, SentenceModel


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


def evaluation(run: recipe.FamilyRun):
  return periodic_evaluation(
    run.inference, run.data.valid_examples, run.spec.config.train, run.spec.keys.evaluation
  )


def hooks(run: recipe.FamilyRun):
  """The loss and reset hook of a member whose `vae` fields and dropout rates may differ
  (traced values)."""
  objective, model = run.settings, run.model
  model_init = functools.partial(init_params, model)

  def member_hooks(hyperparameters, member_keys):
    member_objective = dataclasses.replace(
      objective, **recipe.section_values(hyperparameters, "vae")
    )
    reset = loss_lib.pretraining_reset(
      member_objective, model, model_init, member_keys.family["reset"]
    )
    return (
      functools.partial(
        loss_lib.sentence_loss,
        model=recipe.member_model(model, hyperparameters),
        objective=member_objective,
      ),
      reset if model.config.has_latent else None,
    )

  return member_hooks


def procedure(run: recipe.FamilyRun, loss_fn, before_update):
  """He et al. 2019's aggressive encoder training, when vae.aggressive asks for it."""
  objective, config, keys = run.settings, run.spec.config, run.spec.keys
  if not objective.aggressive:
    return None
  return aggressive_lib.AggressiveTraining(
    loss_fn,
    before_update,
    aggressive_lib.side_labels(run.model.decoder_modules()),
    run.data.train_batches.num_batches,
    held_out_mutual_information(
      run.inference, run.data.valid_examples, config.train, keys.evaluation
    ),
    config_lib.data_seed(config),
    keys.dropout,
    keys.family["aggressive"],
    objective.aggressive_max_steps,
    objective.aggressive_check_every,
  )


FAMILY = families.Family(
  vae_config.NAME,
  get_config=vae_config.get_config,
  validate=vae_config.validate,
  per_member_fields=vae_config.PER_MEMBER_FIELDS,
  reader=readers.read_lines,
  vocabulary_files=VOCABULARY_FILES,
  build_model=build_model,
  init_params=init_params,
  hooks=hooks,
  inference=SentenceModel,
  train_script=TRAIN_SCRIPT,
  evaluation=evaluation,
  procedure=procedure,
  member_choices=vae_config.MEMBER_CHOICES,
  # Fresh decoder parameters for a reset during the run, and the dropout of aggressive
  # training's extra encoder updates: fold_in positions 3 and 4, as they always were.
  run_keys=("reset", "aggressive"),
  per_step=("kl_weight", "encoder_steps"),
  summary=vae_metrics.elbo_summary,
  vocabulary_matrices=SentenceVAE.VOCABULARY_MATRICES,
  added_later=frozenset(
    {
      ("vae", "aggressive"),
      ("vae", "aggressive_max_steps"),
      ("vae", "aggressive_check_every"),
      ("model", "tie_embeddings"),
    }
  ),
  # Aggressive training gives the encoder and the decoder an optimizer state each: another
  # checkpoint structure.
  must_match=(("vae", "aggressive"),),
)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> SentenceModel:
  """Trains (or resumes) a sentence VAE or LM in workdir; prints held-out metrics and samples."""
  return FAMILY.train_and_evaluate(config, workdir)
