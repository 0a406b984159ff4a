"""Pictures of a sentence VAE: the latent map (posterior means projected to 2-D by PCA or t-SNE)
and posterior collapse over training (KL and active units from metrics.jsonl)."""

import functools
import os
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from textgen_jax.errors import TextgenError


def pca_2d(points_NxD: np.ndarray) -> np.ndarray:
  """The points' coordinates on their two principal axes (centred; signs fixed so that each
  axis's largest coordinate is positive, for the same picture every time)."""
  centred = np.asarray(points_NxD, np.float64) - np.mean(points_NxD, axis=0)
  _, _, axes_DxD = np.linalg.svd(centred, full_matrices=False)
  projected = centred @ axes_DxD[:2].T
  if projected.shape[1] < 2:  # One-dimensional data: the second axis is zero.
    projected = np.pad(projected, ((0, 0), (0, 2 - projected.shape[1])))
  signs = np.sign(projected[np.argmax(np.abs(projected), axis=0), [0, 1]])
  return projected * np.where(signs == 0, 1.0, signs)


def _conditional_probabilities(distances_NxN: jax.Array, perplexity: float) -> jax.Array:
  """p(j|i) of a Gaussian around each point whose entropy is log(perplexity): the precision
  of each row found by bisection on its log (64 halvings)."""
  target = jnp.log(perplexity)
  off_diagonal = ~jnp.eye(distances_NxN.shape[0], dtype=bool)

  def row_probabilities(log_precision_N):
    logits = jnp.where(off_diagonal, -distances_NxN * jnp.exp(log_precision_N)[:, None], -jnp.inf)
    return jax.nn.softmax(logits, axis=1)

  def entropy(p_NxN):
    return -jnp.sum(jnp.where(p_NxN > 0, p_NxN * jnp.log(jnp.where(p_NxN > 0, p_NxN, 1.0)), 0.0), 1)

  def halve(_, bounds):
    low, high = bounds
    middle = (low + high) / 2
    too_flat = entropy(row_probabilities(middle)) > target  # More precision narrows it.
    return jnp.where(too_flat, middle, low), jnp.where(too_flat, high, middle)

  n = distances_NxN.shape[0]
  low, high = jax.lax.fori_loop(0, 64, halve, (jnp.full(n, -20.0), jnp.full(n, 20.0)))
  return row_probabilities((low + high) / 2)


@functools.partial(jax.jit, static_argnames=("steps",))
def _tsne(points_NxD, key, perplexity, steps):
  n = points_NxD.shape[0]
  squared = jnp.sum(points_NxD**2, axis=1)
  distances = jnp.maximum(squared[:, None] + squared[None, :] - 2 * points_NxD @ points_NxD.T, 0)
  conditional = _conditional_probabilities(distances / jnp.max(distances), perplexity)
  p_NxN = jnp.maximum((conditional + conditional.T) / (2 * n), 1e-12)
  off_diagonal = ~jnp.eye(n, dtype=bool)

  def gradient(y_Nx2, exaggeration):
    difference_NxNx2 = y_Nx2[:, None, :] - y_Nx2[None, :, :]
    kernel = jnp.where(off_diagonal, 1 / (1 + jnp.sum(difference_NxNx2**2, axis=-1)), 0.0)
    q_NxN = jnp.maximum(kernel / jnp.sum(kernel), 1e-12)
    weight = (exaggeration * p_NxN - q_NxN) * kernel
    return 4 * jnp.sum(weight[:, :, None] * difference_NxNx2, axis=1)

  # van der Maaten's schedule: early exaggeration (12) and momentum 0.5 for the first quarter,
  # then 0.8, with per-coordinate gains (grow where the step keeps its direction).
  def step(state, t):
    y, velocity, gains = state
    early = t < steps // 4
    grad = gradient(y, jnp.where(early, 12.0, 1.0))
    gains = jnp.maximum(
      jnp.where(jnp.sign(grad) != jnp.sign(velocity), gains + 0.2, gains * 0.8), 0.01
    )
    velocity = jnp.where(early, 0.5, 0.8) * velocity - 200.0 * gains * grad
    y = y + velocity
    return (y - jnp.mean(y, axis=0, keepdims=True), velocity, gains), None

  y0 = 1e-4 * jax.random.normal(key, (n, 2))
  (y, _, _), _ = jax.lax.scan(step, (y0, jnp.zeros_like(y0), jnp.ones_like(y0)), jnp.arange(steps))
  return y


def tsne_2d(
  points_NxD: np.ndarray, key: jax.Array, perplexity: float = 30.0, steps: int = 1000
) -> np.ndarray:
  """Exact t-SNE (van der Maaten and Hinton 2008) to 2-D, one compiled program: O(N^2) memory
  and time per step, meant for the few thousand points a latent map shows."""
  n = len(points_NxD)
  if not 1 <= perplexity < n - 1:
    raise TextgenError(
      f"t-SNE's perplexity must be in [1, {n - 1}) for {n} points, got {perplexity}"
    )
  return np.asarray(_tsne(jnp.asarray(points_NxD, jnp.float32), key, perplexity, steps))


def latent_map(
  coordinates_Nx2: np.ndarray,
  labels: Sequence[str] | None,
  values: Sequence[float] | None,
  title: str,
  png_path: str,
) -> None:
  """A scatter plot of projected posterior means, coloured by a label (one colour each, with a
  legend) or by a number (a colour bar), written as a PNG."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, axis = plt.subplots(figsize=(6, 5))
  if labels is not None:
    for label in sorted(set(labels)):
      chosen = np.asarray([lab == label for lab in labels])
      axis.scatter(*coordinates_Nx2[chosen].T, s=6, alpha=0.6, label=label)
    axis.legend(markerscale=3)
  else:
    shown = axis.scatter(*coordinates_Nx2.T, s=6, alpha=0.7, c=values, cmap="viridis")
    if values is not None:
      fig.colorbar(shown, ax=axis)
  axis.set_title(title)
  fig.tight_layout()
  _save(fig, png_path)
  plt.close(fig)


def collapse_curves(runs: Mapping[str, Sequence[Mapping]], png_path: str) -> None:
  """KL per sentence and active units of each run's held-out evaluations against step (runs:
  name -> its metrics.jsonl records), side by side: posterior collapse is KL and active units
  falling to zero."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, (kl_axis, units_axis) = plt.subplots(1, 2, figsize=(10, 4))
  for name, records in runs.items():
    held_out = [r for r in records if "valid_kl" in r]
    steps = [r["step"] for r in held_out]
    kl_axis.plot(steps, [r["valid_kl"] for r in held_out], "o-", label=name)
    units = [(r["step"], r["valid_active_units"]) for r in held_out if "valid_active_units" in r]
    if units:
      units_axis.plot(*zip(*units), "o-", label=name)
  kl_axis.set(xlabel="step", ylabel="held-out KL (nats per sentence)")
  units_axis.set(xlabel="step", ylabel="active units")
  kl_axis.legend()
  fig.tight_layout()
  _save(fig, png_path)
  plt.close(fig)


def _save(fig, png_path: str) -> None:
  folder = os.path.dirname(png_path)
  try:
    if folder:
      os.makedirs(folder, exist_ok=True)
    fig.savefig(png_path, dpi=80)
  except OSError as e:
    raise TextgenError(f"{png_path}: cannot write the picture ({e.strerror})") from None
