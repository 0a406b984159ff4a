r"""A picture of a sentence VAE's latent space: the posterior means of sentences, projected to 2-D
(PCA or t-SNE) and coloured by which file each came from, or by sentence length.

  # Coloured by length (one file):
  python experiments/latent_map.py --workdir=runs/vae --sentences=held_out.txt --out=latent.png
  # Coloured by sentiment (one file per label, e.g. Yelp's negative and positive dev sentences):
  Y=../shared/data/yelp_style_transfer
  python experiments/latent_map.py --workdir=runs/yelp_vae --method=tsne --max_per_file=1000 \
      --sentences=$Y/sentiment.dev.0,$Y/sentiment.dev.1 --names=negative,positive --out=yelp.png

The projected points are written beside the picture (<out>.npz: means, coordinates, labels).
"""

from textgen_jax import cli  # First: Ctrl-C during the imports below is one line too.

cli.exit_on_ctrl_c()

import os
from collections.abc import Sequence

import jax
import numpy as np
from absl import flags

from textgen_jax import vae
from textgen_jax.errors import TextgenError
from textgen_jax.files import read_text
from textgen_jax.vae import plots


def read_sentences(paths: Sequence[str], max_per_file: int) -> list[list[str]]:
  """Each file's first max_per_file non-empty lines."""
  files = []
  for path in paths:
    try:
      text = read_text(path)
    except FileNotFoundError:
      raise TextgenError(f"--sentences: {path} not found") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
      raise TextgenError(f"--sentences: {path} holds no sentences")
    files.append(lines[:max_per_file])
  return files


def make_map(
  model: vae.SentenceModel,
  files: Sequence[Sequence[str]],
  names: Sequence[str],
  method: str,
  png_path: str,
  key: jax.Array,
  perplexity: float = 30.0,
) -> tuple[np.ndarray, np.ndarray]:
  """(posterior means, their 2-D coordinates) of the sentences of `files`, drawn to png_path:
  coloured by file with several, by length in tokens with one."""
  texts = [text for sentences in files for text in sentences]
  mean_NxZ, _ = model.posterior(texts)
  if method == "pca":
    coordinates = plots.pca_2d(mean_NxZ)
  else:
    coordinates = plots.tsne_2d(mean_NxZ, key, perplexity)
  labels = [name for name, sentences in zip(names, files) for _ in sentences]
  if len(files) > 1:
    plots.latent_map(coordinates, labels, None, f"{method.upper()} of posterior means", png_path)
  else:
    lengths = [len(model.tokenizer.tokenize(text)) for text in texts]
    plots.latent_map(
      coordinates, None, lengths, f"{method.upper()} of posterior means, by length", png_path
    )
  np.savez(
    os.path.splitext(png_path)[0] + ".npz", means=mean_NxZ, coordinates=coordinates, labels=labels
  )
  return mean_NxZ, coordinates


def define_flags() -> None:
  """The command line's flags (defined when run as a script, so tests import it freely)."""
  flags.DEFINE_string("workdir", None, "A VAE training workdir.", required=True)
  flags.DEFINE_list(
    "sentences", None, "One or more files of sentences, one per line.", required=True
  )
  flags.DEFINE_list("names", None, "A label per file (default: the files' names).")
  flags.DEFINE_integer("max_per_file", 1000, "Sentences read from each file.")
  flags.DEFINE_enum("method", "pca", ["pca", "tsne"], "The projection to 2-D.")
  flags.DEFINE_float("perplexity", 30.0, "t-SNE's perplexity.")
  flags.DEFINE_integer("seed", 0, "t-SNE's start.")
  flags.DEFINE_string("out", "latent_map.png", "The PNG to write.")


def main(argv):
  if len(argv) > 1:
    raise TextgenError(f"unexpected arguments {argv[1:]}; sentences come from --sentences")
  args = flags.FLAGS
  names = args.names or [os.path.basename(path) for path in args.sentences]
  if len(names) != len(args.sentences):
    raise TextgenError(f"--names: {len(names)} names for {len(args.sentences)} --sentences files")
  files = read_sentences(args.sentences, args.max_per_file)
  model = vae.SentenceModel.load(args.workdir)
  key = jax.random.key(args.seed)
  means, _ = make_map(model, files, names, args.method, args.out, key, args.perplexity)
  print(f"{args.out}: {len(means)} sentences, {args.method}")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
