r"""Generates text with a trained sentence VAE or LM.

  # New sentences from the prior (a VAE) or ancestral samples (an LM):
  python experiments/generate_vae.py --workdir=runs/ptb_vae --mode=sample --num=10 --top_p=0.9
  # Encode each sentence (arguments or stdin lines) and decode its posterior mean:
  python experiments/generate_vae.py --workdir=runs/ptb_vae --mode=reconstruct "the company said"
  # Bowman et al.'s homotopy between two sentences:
  python experiments/generate_vae.py --workdir=runs/ptb_vae --mode=interpolate --num_points=7 \
      "i want to talk to you" "she did n't want to be with him"

Decoding is greedy (sampling in sample mode) unless --strategy says otherwise: --strategy=sample
honours --temperature, --top_k and --top_p; --strategy=beam honours --beam_size and --length_alpha.
"""

from textgen_jax import cli  # First: Ctrl-C during the imports below is one line too.

cli.exit_on_ctrl_c()

import sys

import jax
from absl import flags

from textgen_jax import vae
from textgen_jax.data import readers
from textgen_jax.decoding import DecodeSettings
from textgen_jax.errors import TextgenError

_WORKDIR = flags.DEFINE_string("workdir", None, "A VAE or LM training workdir.", required=True)
_MODE = flags.DEFINE_enum(
  "mode", "sample", ["sample", "reconstruct", "interpolate"], "What to generate."
)
_NUM = flags.DEFINE_integer("num", 10, "sample: how many sentences.")
_NUM_POINTS = flags.DEFINE_integer(
  "num_points", 5, "interpolate: points on the line, ends included."
)
_POSTERIOR_SAMPLE = flags.DEFINE_bool(
  "posterior_sample", False, "reconstruct: decode z ~ q(z|x) instead of its mean."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed for the prior, posterior and word samples.")
# Decoding defaults to greedy, except in sample mode (--strategy=sample).
_decode_settings = cli.define_decode_flags(default_strategy=None)


def reconstruct_each(
  model: vae.SentenceModel, texts: list[str], rng: jax.Array | None, settings: DecodeSettings
) -> list[str]:
  """One output line per input: an empty one for an input without tokens (a blank line), which
  the model cannot encode, so that output line i still answers input line i."""
  encodable = [i for i, text in enumerate(texts) if model.tokenizer.tokenize(text)]
  outputs = [""] * len(texts)
  if encodable:
    decoded = model.reconstruct([texts[i] for i in encodable], rng, settings)
    for i, text in zip(encodable, decoded):
      outputs[i] = text
  return outputs


def main(argv):
  mode, rng = _MODE.value, jax.random.key(_SEED.value)
  settings = _decode_settings(default="sample" if mode == "sample" else "greedy")
  if mode == "sample":
    if len(argv) > 1:
      raise TextgenError(f"--mode=sample takes no sentences, got {len(argv) - 1}")
    model = vae.SentenceModel.load(_WORKDIR.value)
    for text in model.sample(_NUM.value, rng, settings):
      print(text)
    return
  # Bytes, so that a line that is not UTF-8 still gives its output line (with a warning).
  texts = argv[1:] if len(argv) > 1 else readers.read_input_lines(sys.stdin.buffer.read())
  model = vae.SentenceModel.load(_WORKDIR.value)
  if mode == "reconstruct":
    if not texts:
      raise TextgenError("--mode=reconstruct needs sentences, as arguments or on stdin")
    posterior_rng = rng if _POSTERIOR_SAMPLE.value else None
    for text in reconstruct_each(model, texts, posterior_rng, settings):
      print(text)
  else:
    if len(argv) == 1:  # Blank lines around the two stdin sentences are no sentences.
      texts = [text for text in texts if text.strip()]
    if len(texts) != 2:
      raise TextgenError(f"--mode=interpolate needs exactly 2 sentences, got {len(texts)}")
    for weight, text in model.interpolate(texts[0], texts[1], _NUM_POINTS.value, settings, rng):
      print(f"{weight:.2f}\t{text}")


if __name__ == "__main__":
  cli.run(main)
