"""Attention heatmaps: where each output token's decoding step looked in the source."""

import os
from collections.abc import Sequence

from textgen_jax.data.tokenizers import JOINER
from textgen_jax.errors import TextgenError
from textgen_jax.seq2seq.translator import Alignment


def attention_heatmaps(alignments: Sequence[Alignment], folder: str) -> list[str]:
  """One PNG per alignment, <folder>/attention_<i>.png (source tokens across, output tokens
  down, darker = more weight); returns the paths. An empty input draws an empty map."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:
    raise TextgenError(
      f"--attention_png={folder}: cannot create the folder ({e.strerror})"
    ) from None
  shown = lambda tokens: [t.replace(JOINER, "") for t in tokens]  # Joiners are for detokenising.
  paths = []
  for index, alignment in enumerate(alignments):
    rows, columns = alignment.weights.shape
    fig, axis = plt.subplots(figsize=(1.0 + 0.45 * max(columns, 1), 1.0 + 0.4 * max(rows, 1)))
    axis.imshow(
      alignment.weights if rows and columns else [[0.0]],
      cmap="Greys",
      vmin=0.0,
      vmax=1.0,
      aspect="auto",
    )
    axis.set_xticks(range(columns), shown(alignment.source_tokens), rotation=90)
    axis.set_yticks(range(rows), shown(alignment.output_tokens))
    axis.set_xlabel("source")
    axis.set_ylabel("output")
    fig.tight_layout()
    path = os.path.join(folder, f"attention_{index}.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    paths.append(path)
  return paths
