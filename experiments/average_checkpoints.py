r"""Averages the parameters of a run's last K kept checkpoints into an ordinary workdir.

  python experiments/average_checkpoints.py --workdir=runs/fr_en --last=3 --out=runs/fr_en_avg3
  python experiments/translate.py --workdir=runs/fr_en_avg3 "Go."

translate.py and evaluate_translation.py take --average_last=K to do the same on the fly.
train.keep_checkpoints (default 3) sets how many checkpoints a run keeps.
"""

from textgen_jax import cli  # First: Ctrl-C during the imports below is one line too.

cli.exit_on_ctrl_c()

from absl import flags

from textgen_jax import families
from textgen_jax import workdir as workdir_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir.", required=True)
_LAST = flags.DEFINE_integer("last", 3, "How many of the newest kept checkpoints to average.")
_OUT = flags.DEFINE_string("out", None, "The new workdir.", required=True)
_STEP = flags.DEFINE_integer("step", None, "The newest checkpoint averaged (default: the latest).")
_MEMBER = flags.DEFINE_integer("member", None, "Of a population, which member (default: best).")


def main(argv):
  del argv
  cli.check_output_directory("--out", _OUT.value)  # Before loading and averaging.
  family = workdir_lib.family_of(workdir_lib.read_config(_WORKDIR.value))
  model = families.get(family).inference.load(
    _WORKDIR.value, _STEP.value, _MEMBER.value, _LAST.value
  )
  model.save(_OUT.value)
  print(
    f"Wrote the average of the last {_LAST.value} checkpoints of {_WORKDIR.value} to {_OUT.value}."
  )


if __name__ == "__main__":
  cli.run(main)
