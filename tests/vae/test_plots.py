"""Tests for textgen_jax.vae.plots (PCA, t-SNE, the pictures) and experiments/latent_map.py."""

import json

import jax
import numpy as np
import pytest

from experiments import latent_map
from tests.helpers import SENTENCES, tiny_vae_config, write_text
from textgen_jax import vae
from textgen_jax.errors import TextgenError
from textgen_jax.vae import plots


def test_pca_gives_the_coordinates_on_the_principal_axes():
  rng = np.random.default_rng(0)
  u, v = np.eye(5)[0] + np.eye(5)[3], np.eye(5)[1] - np.eye(5)[2]
  u, v = u / np.linalg.norm(u), v / np.linalg.norm(v)
  a, b = 10 * rng.standard_normal(200), rng.standard_normal(200)
  a, b = a - a.mean(), b - b.mean()
  b -= (a @ b) / (a @ a) * a  # Uncorrelated exactly: the principal axes are u and v.
  points = 3.0 + a[:, None] * u + b[:, None] * v
  coordinates = plots.pca_2d(points)
  expected = np.stack([a, b], axis=1)
  for axis in (0, 1):  # Up to the sign of each axis.
    sign = np.sign(coordinates[:, axis] @ expected[:, axis])
    np.testing.assert_allclose(coordinates[:, axis], sign * expected[:, axis], atol=1e-9)
  np.testing.assert_array_equal(plots.pca_2d(points), coordinates)  # The same every time.


def test_tsne_keeps_well_separated_clusters_apart():
  rng = np.random.default_rng(0)
  centres = 6.0 * rng.standard_normal((3, 10))
  labels = np.repeat(np.arange(3), 25)
  points = centres[labels] + rng.standard_normal((75, 10))
  coordinates = plots.tsne_2d(points, jax.random.key(0), perplexity=10.0, steps=500)
  assert coordinates.shape == (75, 2) and np.all(np.isfinite(coordinates))
  distances = np.sum((coordinates[:, None] - coordinates[None]) ** 2, -1)
  np.fill_diagonal(distances, np.inf)
  nearest = np.argsort(distances, axis=1)[:, :5]
  assert np.mean(labels[nearest] == labels[:, None]) > 0.95  # Every point among its own.
  # Randomly placed points would be among their own cluster a third of the time.
  shuffled = rng.permutation(labels)
  assert np.mean(shuffled[nearest] == shuffled[:, None]) < 0.6
  with pytest.raises(TextgenError, match="perplexity must be in"):
    plots.tsne_2d(points[:10], jax.random.key(0), perplexity=30.0)


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory):
  directory = tmp_path_factory.mktemp("map")
  corpus = write_text(directory / "sentences.txt", "\n".join(SENTENCES * 4) + "\n")
  workdir = str(directory / "vae")
  vae.train_and_evaluate(tiny_vae_config(corpus, train__num_steps=4), workdir)
  return vae.SentenceModel.load(workdir)


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_the_latent_map_draws_the_posterior_means_it_was_given(tiny_vae, method, tmp_path):
  files = [SENTENCES[:4], SENTENCES[4:]]
  png = str(tmp_path / "map.png")
  means, coordinates = latent_map.make_map(
    tiny_vae, files, ["first", "second"], method, png, jax.random.key(0), perplexity=3.0
  )
  expected_means, _ = tiny_vae.posterior(files[0] + files[1])
  np.testing.assert_array_equal(means, expected_means)
  if method == "pca":
    np.testing.assert_allclose(coordinates, plots.pca_2d(expected_means))
  with open(png, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  saved = np.load(str(tmp_path / "map.npz"))
  np.testing.assert_array_equal(saved["means"], means)
  np.testing.assert_array_equal(saved["coordinates"], coordinates)
  assert list(saved["labels"]) == ["first"] * 4 + ["second"] * (len(SENTENCES) - 4)


def test_collapse_curves_draw_kl_and_active_units(tmp_path):
  records = [
    {"step": s, "valid_kl": kl, "valid_active_units": units}
    for s, kl, units in ((100, 5.0, 12), (200, 0.1, 0))
  ]
  png = str(tmp_path / "collapse" / "curves.png")
  plots.collapse_curves({"no remedy": records, "free bits": records[:1]}, png)
  with open(png, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  json.dumps(records)  # The records are plain metrics.jsonl lines.
