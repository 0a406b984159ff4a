r"""Writes one member of a population run as an ordinary workdir that every script loads.

  python experiments/export_member.py --workdir=runs/seeds --member=2 --out=runs/seeds_member2
  python experiments/translate.py --workdir=runs/seeds_member2 "Go."

The export holds the member's config (its seed and varied values, no population), the
vocabularies and its parameters at the latest checkpoint (or --step).
"""

from textgen_jax import cli  # First: Ctrl-C during the imports below is one line too.

cli.exit_on_ctrl_c()

from absl import flags

from textgen_jax import families
from textgen_jax import workdir as workdir_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "A population's training workdir.", required=True)
_MEMBER = flags.DEFINE_integer("member", None, "Which member (default: the best).")
_OUT = flags.DEFINE_string("out", None, "The new workdir.", required=True)
_STEP = flags.DEFINE_integer("step", None, "The checkpoint (default: the latest).")


def main(argv):
  del argv
  family = workdir_lib.family_of(workdir_lib.read_config(_WORKDIR.value))
  model = families.get(family).inference.load(_WORKDIR.value, _STEP.value, _MEMBER.value)
  model.save(_OUT.value)
  print(f"Wrote the {family} member to {_OUT.value} (seed {model.config.seed}).")


if __name__ == "__main__":
  cli.run(main)
