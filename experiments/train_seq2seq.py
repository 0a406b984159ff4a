r"""Trains an LSTM encoder-decoder on sentence pairs; resumes from the workdir's last checkpoint.

  python experiments/train_seq2seq.py --workdir=runs/fr_en
  python experiments/train_seq2seq.py --config=experiments/configs/seq2seq_char.py \
      --config.data.train_path=pairs.tsv --config.train.num_steps=3000 --workdir=runs/mine
"""

from textgen_jax import cli  # First: Ctrl-C during the imports below is one line too.

cli.exit_on_ctrl_c(
  "training had not started or had ended: its checkpoints are as "
  "they were; run the same command to resume"
)

import os

from absl import flags

from textgen_jax import seq2seq

_CONFIG = cli.define_config_file(
  os.path.join(os.path.dirname(__file__), "configs", "seq2seq_default.py"),
  "Config file; override fields with --config.<section>.<field>=value.",
)
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Directory for checkpoints, vocabularies, metrics.", required=True
)


def main(argv):
  del argv
  seq2seq.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  print(
    f"Done. Translate with: python experiments/translate.py --workdir={_WORKDIR.value} "
    "'Go.' 'Hello!'"
  )


if __name__ == "__main__":
  cli.run(main, huge_pages=True)
