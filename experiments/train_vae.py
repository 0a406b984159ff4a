r"""Trains a sentence VAE (or, with --config.model.kind=lm, the LM baseline); resumes from the
workdir's last checkpoint.

  python experiments/train_vae.py --config=experiments/configs/ptb_vae.py --workdir=runs/ptb_vae
  python experiments/train_vae.py --config=experiments/configs/ptb_lm.py --workdir=runs/ptb_lm
"""

from textgen_jax import cli  # First: Ctrl-C during the imports below is one line too.

cli.exit_on_ctrl_c(
  "training had not started or had ended: its checkpoints are as "
  "they were; run the same command to resume"
)

import os

from absl import flags

from textgen_jax import vae

_CONFIG = cli.define_config_file(
  os.path.join(os.path.dirname(__file__), "configs", "ptb_vae.py"),
  "Config file; override fields with --config.<section>.<field>=value.",
)
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Directory for checkpoints, vocabulary, metrics.", required=True
)


def main(argv):
  del argv
  vae.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  print(
    f"Done. Generate with: python experiments/generate_vae.py --workdir={_WORKDIR.value} "
    "--mode=sample"
  )


if __name__ == "__main__":
  cli.run(main, huge_pages=True)
