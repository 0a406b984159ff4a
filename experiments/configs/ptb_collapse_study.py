r"""The posterior-collapse study on Penn Treebank: six VAE recipes in one vmapped program.

  python experiments/train_vae.py --config=experiments/configs/ptb_collapse_study.py \
      --workdir=runs/ptb_collapse
  # He et al. 2019's aggressive training is a program of its own (its encoder loop's length is
  # decided per run), and the LM baseline another, at the same budget:
  python experiments/train_vae.py --config=experiments/configs/ptb_collapse_study.py \
      --config.population.num_members=0 --config.population.vary="" \
      --config.vae.aggressive=True --workdir=runs/ptb_aggressive
  python experiments/train_vae.py --config=experiments/configs/ptb_lm.py \
      --config.train.num_steps=20000 --workdir=runs/ptb_lm_20k
  # Then, per member (export_member.py) and for the two single runs:
  python experiments/evaluate_vae.py --workdir=... --data_path=../shared/data/ptb/ptb.test.txt \
      --num_samples=500

Members (all at the literature's size, embedding 256, hidden 256, latent 32, batch 32, and the
same batches): 0 the ptb_vae.py recipe (linear annealing over 2,000 steps, free bits 0.25 per
dimension); 1 cyclical annealing (Fu et al. 2019, 4 cycles of 5,000 steps) with the same free
bits; 2 the recipe plus word dropout 0.25 (Bowman et al. 2016); 3 the recipe after 2,000 steps of
encoder pretraining (Li et al. 2019); 4 plain linear annealing, no free bits (the collapse
baseline); 5 sigmoid annealing with free bits 4 nats per sentence (per_batch).

Not run yet: one member of this size trained at 4.4 steps/s on a 2-core Zen 5 CPU
(experiments/results/ptb_steps_per_s.log), so 20,000 steps (15 epochs) of six members are about
7.5 hours there even at sequential speed; it is meant for a GPU or a longer session. Goal (issue 13):
a member whose 500-sample test NLL is below the LM's at equal updates with KL >= 5 nats,
MI >= 2 and at least 8 of 32 active units.
"""

from textgen_jax import vae


def get_config():
  config = vae.ptb_config(kind="vae")
  config.vae.kl_schedule = "linear"
  config.vae.anneal_steps = 2000
  config.vae.cycle_steps = 5000
  config.vae.free_bits = 0.25
  config.vae.free_bits_mode = "per_dimension"
  config.train.num_steps = 20000
  config.population.num_members = 6
  config.population.seeds = "0,0,0,0,0,0"  # One initialisation: the recipes alone differ.
  config.population.vary = ";".join(
    [
      "vae.kl_schedule=linear,cyclical,linear,linear,linear,sigmoid",
      "vae.free_bits=0.25,0.25,0.25,0.25,0,4",
      "vae.free_bits_mode=per_dimension,per_dimension,per_dimension,per_dimension,"
      "per_dimension,per_batch",
      "vae.word_dropout=0,0,0.25,0,0,0",
      "vae.pretrain_steps=0,0,0,2000,0,0",
    ]
  )
  config.population.select_metric = "valid_iw_nll_per_sentence"
  return config
