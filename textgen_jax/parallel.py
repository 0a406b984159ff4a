"""Training on many devices and hosts with jax.sharding: the mesh, what is sharded, and how.

The devices form a 2-D `Mesh` with axes ("data", "model"). Every batch is split by rows over
"data"; parameters and optimizer state are replicated, except that with model_shards > 1 the
vocabulary matrices (embedding tables and the output layer) are split over "model" along their
vocabulary dimension. The train step is one `jax.jit` with these shardings as its explicit in/out
shardings; XLA inserts the gradient all-reduce. With one device all of this is a no-op.

Multi-host: `initialize` calls `jax.distributed.initialize()` (it finds the cluster on TPU pods,
SLURM and Open MPI; see the README). Every process computes the same batch plan (a pure function
of seed and step) and pads only the rows its own devices hold (`local_rows`); arrays are then
assembled with `jax.make_array_from_process_local_data`. Only process 0 writes files.
"""

import dataclasses
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from textgen_jax.errors import TextgenError

DATA_AXIS, MODEL_AXIS = "data", "model"
# Parameters whose vocabulary dimension is sharded over MODEL_AXIS, by (module, parameter) name:
# flax's nn.Embed tables are called "embedding" (vocabulary first); the output layers of the
# seq2seq decoder and of the VAE/LM decoder are Dense layers (vocabulary last).
_EMBEDDING_PARAM = "embedding"
_OUTPUT_LAYERS = ("output_layer", "decoder_output")


def initialize(parallel: ml_collections.ConfigDict) -> None:
  """Joins the multi-host cluster when parallel.distributed is set; call before any JAX work."""
  if parallel.distributed and not jax.distributed.is_initialized():
    try:
      jax.distributed.initialize(parallel.coordinator_address or None,
                                 parallel.num_processes or None,
                                 None if parallel.process_id < 0 else parallel.process_id)
    except (RuntimeError, ValueError) as e:
      raise TextgenError(f"--config.parallel.distributed=True: jax.distributed.initialize() "
                         f"failed ({str(e).splitlines()[0][:300]}). TPU pods, SLURM and Open "
                         "MPI are found automatically; elsewhere set --config.parallel."
                         "coordinator_address, num_processes and process_id") from None


def is_primary() -> bool:
  """Process 0 writes logs, metrics, plots and workdir assets; every process saves checkpoints."""
  return jax.process_index() == 0


@dataclasses.dataclass(frozen=True)
class Layout:
  """The device mesh and the shardings of batches and of the train state."""

  mesh: Mesh

  @property
  def num_data_shards(self) -> int:
    return self.mesh.shape[DATA_AXIS]

  @property
  def num_model_shards(self) -> int:
    return self.mesh.shape[MODEL_AXIS]

  @property
  def batch(self) -> NamedSharding:
    """Rows over the data axis (every leaf of a batch has the batch first)."""
    return NamedSharding(self.mesh, P(DATA_AXIS))

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  def tree_shardings(self, tree: Any) -> Any:
    """Shardings for a tree of parameters or of train state (optimizer moments mirror the
    parameters' paths, so the same names pick the same vocabulary dimension)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: NamedSharding(self.mesh, _vocab_spec(path, np.ndim(leaf))), tree)

  def check_vocabulary_divides(self, abstract_params: Any) -> None:
    if self.num_model_shards == 1:
      return
    for path, leaf in jax.tree_util.tree_leaves_with_path(abstract_params):
      spec = _vocab_spec(path, leaf.ndim)
      if MODEL_AXIS in spec:
        size = leaf.shape[spec.index(MODEL_AXIS)]
        if size % self.num_model_shards:
          raise TextgenError(
              f"--config.parallel.model_shards={self.num_model_shards} splits the vocabulary "
              f"matrices, but {jax.tree_util.keystr(path)} has a vocabulary of {size}, not a "
              "multiple of it; set --config.data.vocab_size_multiple to it (this pads the "
              "vocabulary with unused tokens) or choose a model_shards that divides it")

  def check_batch_size(self, batch_size: int) -> None:
    if batch_size % self.num_data_shards:
      raise TextgenError(
          f"--config.data.batch_size={batch_size} is the global batch; it must be a multiple of "
          f"the {self.num_data_shards} data-parallel devices it is split over (devices "
          f"{self.mesh.size} / parallel.model_shards {self.num_model_shards})")

  def local_rows(self, batch_size: int) -> slice:
    """The rows of a global batch that this process's devices hold (contiguous)."""
    index_map = self.batch.addressable_devices_indices_map((batch_size,))
    starts = [index[0].start or 0 for index in index_map.values()]
    stops = [batch_size if index[0].stop is None else index[0].stop for index in index_map.values()]
    return slice(min(starts), max(stops))

  def global_batch(self, local_rows: dict[str, np.ndarray],
                   batch_size: int) -> dict[str, jax.Array]:
    """This process's rows (`local_rows(batch_size)` of each array) as global sharded arrays."""
    return {name: jax.make_array_from_process_local_data(
        self.batch, rows, (batch_size,) + rows.shape[1:]) for name, rows in local_rows.items()}

  def shard_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """A whole global batch held by every process (validation), sharded by rows."""
    batch_size = len(next(iter(batch.values())))
    rows = self.local_rows(batch_size)
    return self.global_batch({name: value[rows] for name, value in batch.items()}, batch_size)


def _vocab_spec(path: tuple, ndim: int) -> P:
  names = [key.key for key in path if isinstance(key, jax.tree_util.DictKey)]
  if len(names) >= 2 and names[-1] == _EMBEDDING_PARAM and ndim == 2:
    return P(MODEL_AXIS, None)
  if len(names) >= 2 and names[-2] in _OUTPUT_LAYERS:
    if names[-1] == "kernel" and ndim == 2:
      return P(None, MODEL_AXIS)
    if names[-1] == "bias" and ndim == 1:
      return P(MODEL_AXIS)
  return P()


def make_layout(parallel: ml_collections.ConfigDict) -> Layout:
  """The mesh over parallel.num_devices devices (0: all), model_shards of them per data shard."""
  devices = jax.devices()
  num_devices = parallel.num_devices or len(devices)
  if not 0 < num_devices <= len(devices):
    raise TextgenError(f"--config.parallel.num_devices={parallel.num_devices}: there are "
                       f"{len(devices)} devices (0 uses all of them)")
  if parallel.model_shards < 1 or num_devices % parallel.model_shards:
    raise TextgenError(f"--config.parallel.model_shards={parallel.model_shards} must be a "
                       f"positive divisor of the {num_devices} devices in use")
  if num_devices != len(devices) and jax.process_count() > 1:
    raise TextgenError("--config.parallel.num_devices must be 0 (all devices) on several hosts")
  shape = (num_devices // parallel.model_shards, parallel.model_shards)
  # Auto axes: XLA propagates the input shardings through the model (GSPMD), so model code
  # carries no sharding annotations.
  mesh = jax.make_mesh(shape, (DATA_AXIS, MODEL_AXIS), devices=devices[:num_devices],
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  return Layout(mesh)


def local_copy(tree: Any) -> Any:
  """The whole tree on this process's first device, for inference beside training (every
  process must call it: a leaf split across hosts is gathered collectively)."""
  def gather(leaf):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      return multihost_utils.process_allgather(leaf, tiled=True)
    return leaf
  return jax.device_put(jax.tree.map(gather, tree), jax.local_devices()[0])
