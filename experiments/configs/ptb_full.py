r"""Penn Treebank at the literature's budget: the LM (`:lm`, `:lm_tied`), the VAE (`:vae`) or the VAE
with He et al. 2019's aggressive encoder training (`:aggressive`) trained to convergence as the text-VAE
literature decides it.

  python experiments/train_vae.py --config=experiments/configs/ptb_full.py:lm --workdir=runs/ptb_full_lm
  python experiments/train_vae.py --config=experiments/configs/ptb_full.py:vae --workdir=runs/ptb_full_vae
  python experiments/train_vae.py --config=experiments/configs/ptb_full.py:aggressive \
      --workdir=runs/ptb_full_aggressive
  python experiments/train_vae.py --config=experiments/configs/ptb_full.py:lm_tied \
      --workdir=runs/ptb_full_lm_tied
  # The collapse study's other recipes (ptb_collapse_study.py), each a run of its own:
  python experiments/train_vae.py --config=experiments/configs/ptb_full.py:cyclical \
      --workdir=runs/ptb_full_cyclical   # likewise word_dropout, pretrain, no_free_bits, sigmoid

`:lm_tied` is the LM with its output layer tied to its input embedding (Press and Wolf 2017;
256 = 256, so no projection), the knob the untied LM's plateau at 102.22 nats left to try;
`:lm_large` is that LM at twice the width (embedding and hidden 512, tied), the other knob. It
is no longer the VAEs' baseline (their decoders are 256 wide): it asks what capacity buys.

The literature's setup (bohanli/vae-pretraining-encoder config_ptb.py; He et al. 2019):
embedding 256, hidden 256, latent 32, dropout 0.5 on decoder input and output, batch 32, Adam
1e-3, up to 100 epochs; the rate halved after 2 epochs without held-out improvement, at most 5
times (jxhe/vae-lagging-encoder; texar halves on plateau too), and the run stopped after 10
epochs without improvement (5 plateaus' worth), inference loading the best epoch. The held-out
metric is the VAE's negative ELBO per sentence, the LM's NLL per token. One evaluation per
epoch (42,068 training sentences / 32). The VAE's recipe is ptb_vae.py's (beta from 0 to 1 over
2,000 steps, free bits 0.25 nats per dimension). The aggressive run is He et al.'s recipe
(jxhe/vae-lagging-encoder): no free bits, the KL weight raised linearly over the first 10 epochs
(from 0; theirs starts at 0.1), the encoder trained alone until its loss stops falling before
each decoder update, until the held-out mutual information stops rising at an epoch's end.

The collapse study's recipes (ptb_collapse_study.py's members 1-5; member 0 is `:vae`) at this
budget, each a run of its own so that each stops early by its own rule (a population trains its
members for the same steps): `:cyclical` (Fu et al. 2019: haofuml/cyclical_annealing's 4 cycles
of 10 epochs over its 40, half of each rising; here the cycles go on until early stopping),
`:word_dropout` (the recipe plus Bowman et al.'s word dropout 0.25), `:pretrain` (the recipe after
2,000 autoencoder steps, Li et al. 2019), `:no_free_bits` (linear annealing alone: the collapse
baseline) and `:sigmoid` (Bowman et al.'s sigmoid annealing, free bits 4 nats per sentence).

Hours per epoch on 2 CPU cores: runs in the background across sessions (it resumes exactly);
see experiments/results/ptb.md for progress.
"""

from textgen_jax import vae

STEPS_PER_EPOCH = 1315
VARIANTS = (
  "lm",
  "lm_tied",
  "lm_large",
  "vae",
  "aggressive",
  "cyclical",
  "word_dropout",
  "pretrain",
  "no_free_bits",
  "sigmoid",
)
# The collapse study's recipes: what each changes in `:vae`'s `vae` section.
RECIPES = {
  "cyclical": {"kl_schedule": "cyclical", "cycle_steps": 10 * STEPS_PER_EPOCH, "cycle_ratio": 0.5},
  "word_dropout": {"word_dropout": 0.25},
  "pretrain": {"pretrain_steps": 2000},
  "no_free_bits": {"free_bits": 0.0},
  "sigmoid": {"kl_schedule": "sigmoid", "free_bits": 4.0, "free_bits_mode": "per_batch"},
}


def get_config(kind: str = "vae"):
  if kind not in VARIANTS:
    raise ValueError(f"unknown ptb_full variant {kind!r}; choose one of {VARIANTS}")
  aggressive = kind == "aggressive"
  tied = kind in ("lm_tied", "lm_large")
  large = kind == "lm_large"
  recipe = RECIPES.get(kind, {})
  kind = "lm" if kind.startswith("lm") else "vae"
  config = vae.ptb_config(kind=kind)
  config.model.tie_embeddings = tied
  if large:
    config.model.embed_dim = config.model.hidden_size = 512
  config.model.embedding_dropout = 0.5
  config.model.output_dropout = 0.5
  config.opt.schedule = "plateau"
  config.opt.plateau_patience = 2
  config.opt.plateau_max_decays = 5
  config.train.num_steps = 100 * STEPS_PER_EPOCH
  config.train.eval_every = STEPS_PER_EPOCH
  config.train.checkpoint_every = 500  # An interruption costs at most this many steps.
  config.train.log_every = 500
  config.train.early_stopping_patience = 10
  # The VAE's bound per sentence; the LM's NLL per token (vae.ptb_config), which ranks as its
  # exact NLL per sentence does.
  config.train.held_out_metric = "valid_neg_elbo" if kind == "vae" else "valid_loss"
  if kind == "vae":
    config.vae.kl_schedule = "linear"
    config.vae.anneal_steps = 2000
    config.vae.free_bits = 0.25
    config.vae.free_bits_mode = "per_dimension"
    config.vae.update(recipe)
  if aggressive:
    config.vae.aggressive = True
    config.vae.anneal_steps = 10 * STEPS_PER_EPOCH
    config.vae.free_bits = 0.0
    # An aggressive step trains the encoder up to 100 times first: 5-15 s on one core, so 500
    # steps between checkpoints would be over an hour of work at risk.
    config.train.checkpoint_every = 50
  return config
