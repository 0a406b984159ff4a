r"""The K-sample importance-weighted evaluation of a trained VAE: its time by matmul type and chunk
shape, and how far bfloat16's NLL lies from float32's.

  python -m experiments.bench.iw_eval --workdir=runs/ptb_vae \
      --data_path=../shared/data/ptb/ptb.test.txt --num_sentences=64 \
      --variants=float32:50:16:0,bfloat16:50:16:256,bfloat16:50:16:1024

Each variant (dtype:chunk_size:batch_size:rows_per_block) evaluates the same sentences (drawn
with a fixed seed from the file) with the same importance-sampling key; one untimed call each compiles every
length bucket, then the variants run in interleaved rounds (A B C, A B C, ...). One JSON line
per variant and round (seconds, sentences/s, NLL per sentence), then one per variant: median
seconds, the median of the round-by-round speed-ups over the first variant, and its NLL per
sentence minus the first variant's.
"""

import json

import jax
import numpy as np
from absl import flags

from experiments.bench import common
from textgen_jax import cli, vae
from textgen_jax.data import readers

_WORKDIR = flags.DEFINE_string("workdir", None, "A VAE training workdir.", required=True)
_DATA_PATH = flags.DEFINE_string("data_path", None, "Sentences, one per line.", required=True)
_NUM_SENTENCES = flags.DEFINE_integer("num_sentences", 64, "Sentences drawn from the file.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 500, "K, importance samples per sentence.")
_VARIANTS = flags.DEFINE_list(
  "variants",
  "float32:50:16:0,bfloat16:50:16:256",
  "dtype:chunk_size:batch_size:rows_per_block (0: one block), the first the base.",
)
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved rounds.")


def main(argv):
  del argv
  model = vae.SentenceModel.load(_WORKDIR.value)
  sentences, _ = readers.read_lines(_DATA_PATH.value, verbose=False)
  picked = np.random.default_rng(0).choice(len(sentences), _NUM_SENTENCES.value, replace=False)
  sentences = [sentences[i] for i in sorted(picked)]
  variants = [
    (d, int(c), int(b), int(r) or None) for d, c, b, r in (v.split(":") for v in _VARIANTS.value)
  ]
  rng = jax.random.key(0)

  def run(variant):
    dtype, chunk, batch, rows = variant
    return model.evaluate(sentences, _NUM_SAMPLES.value, chunk, batch, rng, False, dtype, rows)

  for variant in variants:  # Compiles every bucket.
    run(variant)
  seconds = {v: [] for v in variants}
  nll = {}
  for round_index in range(_ROUNDS.value):
    for variant in variants:
      results = run(variant)
      seconds[variant].append(results["seconds"])
      nll[variant] = results["nll_per_sentence"]
      print(
        json.dumps(
          {
            "round": round_index,
            "variant": ":".join(map(str, variant)),
            "seconds": round(results["seconds"], 3),
            "sentences_per_s": round(len(sentences) / results["seconds"], 3),
            "nll_per_sentence": results["nll_per_sentence"],
          }
        ),
        flush=True,
      )
  base = variants[0]
  for variant in variants:
    ratios = np.array(seconds[base]) / np.array(seconds[variant])
    print(
      json.dumps(
        {
          "variant": ":".join(map(str, variant)),
          "cpu": common.cpu_description(),
          "num_sentences": len(sentences),
          "num_samples": _NUM_SAMPLES.value,
          "median_s": float(np.median(seconds[variant])),
          "speedup_over_base_median": float(np.median(ratios)),
          "speedup_range": [float(ratios.min()), float(ratios.max())],
          "nll_per_sentence": nll[variant],
          "nll_minus_base": nll[variant] - nll[base],
        }
      ),
      flush=True,
    )


if __name__ == "__main__":
  cli.run(main, huge_pages=True)
