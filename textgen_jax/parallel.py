"""Training on many devices and hosts with jax.sharding: the mesh, what is sharded, and how.

The devices form a 3-D `Mesh` with axes ("members", "data", "model"). Every batch is split by
rows over "data"; parameters and optimizer state are replicated, except that with model_shards > 1
the vocabulary matrices a model declares (embedding tables, the output layer) are split over
"model" along their vocabulary dimension, and that a population's stacked state (and, with its
own data order, its stacked batches) is split along the member axis over "members"
(member_shards > 1; 1 by default, so the axis is a no-op). The train step is one `jax.jit` with these shardings as its explicit in/out
shardings; XLA inserts the gradient all-reduce. With one device all of this is a no-op.

Multi-host: `initialize` calls `jax.distributed.initialize()` (it finds the cluster on TPU pods,
SLURM and Open MPI; see docs/devices.md). Every process computes the same batch plan (a pure function
of seed and step) and pads only the rows its own devices hold (`local_slice`); arrays are then
assembled with `jax.make_array_from_process_local_data`. Only process 0 writes files.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from textgen_jax.errors import TextgenError

MEMBER_AXIS, DATA_AXIS, MODEL_AXIS = "members", "data", "model"
# A model's vocabulary matrices: (module, ..., parameter) name path -> its vocabulary dimension.
# Each model class declares its own (VOCABULARY_MATRICES); optimizer moments mirror the
# parameters' paths, so the same path suffix picks the same dimension in the whole train state.
VocabularyMatrices = Mapping[tuple[str, ...], int]


def initialize(parallel: ml_collections.ConfigDict) -> None:
  """Joins the multi-host cluster when parallel.distributed is set; call before any JAX work."""
  if parallel.distributed and not jax.distributed.is_initialized():
    try:
      jax.distributed.initialize(
        parallel.coordinator_address or None,
        parallel.num_processes or None,
        None if parallel.process_id < 0 else parallel.process_id,
      )
    except (RuntimeError, ValueError) as e:
      raise TextgenError(
        f"--config.parallel.distributed=True: jax.distributed.initialize() "
        f"failed ({str(e).splitlines()[0][:300]}). TPU pods, SLURM and Open "
        "MPI are found automatically; elsewhere set --config.parallel."
        "coordinator_address, num_processes and process_id"
      ) from None


def is_primary() -> bool:
  """Process 0 writes logs, metrics, plots and workdir assets; every process saves checkpoints."""
  return jax.process_index() == 0


@dataclasses.dataclass(frozen=True)
class Layout:
  """The device mesh and the shardings of batches and of the train state."""

  mesh: Mesh
  vocabulary_matrices: VocabularyMatrices = dataclasses.field(default_factory=dict)

  @property
  def num_data_shards(self) -> int:
    return self.mesh.shape[DATA_AXIS]

  @property
  def num_model_shards(self) -> int:
    return self.mesh.shape[MODEL_AXIS]

  @property
  def num_member_shards(self) -> int:
    return self.mesh.shape[MEMBER_AXIS]

  @property
  def members(self) -> NamedSharding:
    """A population's stacked state: the member axis (first) over "members"."""
    return NamedSharding(self.mesh, P(MEMBER_AXIS))

  @property
  def member_batch(self) -> NamedSharding:
    """Batches stacked per member ([N, B, ...]): members over "members", rows over "data"."""
    return NamedSharding(self.mesh, P(MEMBER_AXIS, DATA_AXIS))

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
      lambda path, leaf: NamedSharding(self.mesh, self._spec(path, np.ndim(leaf))), tree
    )

  def check_vocabulary_divides(self, abstract_params: Any) -> None:
    if self.num_model_shards == 1:
      return
    for path, leaf in jax.tree_util.tree_leaves_with_path(abstract_params):
      spec = self._spec(path, leaf.ndim)
      if MODEL_AXIS in spec:
        size = leaf.shape[spec.index(MODEL_AXIS)]
        if size % self.num_model_shards:
          raise TextgenError(
            f"--config.parallel.model_shards={self.num_model_shards} splits the vocabulary "
            f"matrices, but {jax.tree_util.keystr(path)} has a vocabulary of {size}, not a "
            "multiple of it; set --config.data.vocab_size_multiple to it (this pads the "
            "vocabulary with unused tokens) or choose a model_shards that divides it"
          )

  def _spec(self, path: tuple, ndim: int) -> P:
    """Sharded along MODEL_AXIS if the leaf's name path ends in a declared vocabulary matrix."""
    names = tuple(key.key for key in path if isinstance(key, jax.tree_util.DictKey))
    for matrix, axis in self.vocabulary_matrices.items():
      if names[-len(matrix) :] == matrix and axis < ndim:
        return P(*(MODEL_AXIS if i == axis else None for i in range(ndim)))
    return P()

  def check_batch_size(self, batch_size: int) -> None:
    if batch_size % self.num_data_shards:
      raise TextgenError(
        f"--config.data.batch_size={batch_size} is the global batch; it must be a multiple of "
        f"the {self.num_data_shards} data-parallel devices it is split over (devices "
        f"{self.mesh.size} / parallel.member_shards {self.num_member_shards} / "
        f"parallel.model_shards {self.num_model_shards})"
      )

  def local_slice(self, batch_size: int) -> slice:
    """The rows of a global batch that this process's devices hold (contiguous)."""
    return _addressable_range(self.batch, (batch_size,))

  def global_batch(
    self, local_part: dict[str, np.ndarray], batch_size: int
  ) -> dict[str, jax.Array]:
    """This process's rows (`local_slice(batch_size)` of each array) as global sharded arrays."""
    return {
      name: jax.make_array_from_process_local_data(self.batch, rows, (batch_size,) + rows.shape[1:])
      for name, rows in local_part.items()
    }

  def global_member_batch(
    self, local_part: dict[str, np.ndarray], batch_size: int
  ) -> dict[str, jax.Array]:
    """Per-member batches [N, rows, ...] (this process's rows of every member) as global arrays;
    a process passes on only the members its devices hold."""

    def to_global(rows):
      global_shape = (rows.shape[0], batch_size) + rows.shape[2:]
      members = _addressable_range(self.member_batch, global_shape)
      return jax.make_array_from_process_local_data(self.member_batch, rows[members], global_shape)

    return {name: to_global(rows) for name, rows in local_part.items()}

  def shard_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """A whole global batch held by every process (validation), sharded by rows."""
    batch_size = len(next(iter(batch.values())))
    row_slice = self.local_slice(batch_size)
    return self.global_batch({name: value[row_slice] for name, value in batch.items()}, batch_size)


def _addressable_range(sharding: NamedSharding, shape: tuple[int, ...]) -> slice:
  """The indices along the first axis of an array of `shape` that this process's devices hold
  (contiguous)."""
  index_map = sharding.addressable_devices_indices_map(shape)
  starts = [index[0].start or 0 for index in index_map.values()]
  stops = [shape[0] if index[0].stop is None else index[0].stop for index in index_map.values()]
  return slice(min(starts), max(stops))


def make_layout(
  parallel: ml_collections.ConfigDict, vocabulary_matrices: VocabularyMatrices | None = None
) -> Layout:
  """The mesh over parallel.num_devices devices (0: all), model_shards of them per data shard;
  with model_shards > 1 the model's `vocabulary_matrices` are split over them."""
  devices = jax.devices()
  num_devices = parallel.num_devices or len(devices)
  if not 0 < num_devices <= len(devices):
    raise TextgenError(
      f"--config.parallel.num_devices={parallel.num_devices}: there are "
      f"{len(devices)} devices (0 uses all of them)"
    )
  if parallel.model_shards < 1 or num_devices % parallel.model_shards:
    raise TextgenError(
      f"--config.parallel.model_shards={parallel.model_shards} must be a "
      f"positive divisor of the {num_devices} devices in use"
    )
  member_shards = parallel.get("member_shards", 1)
  if member_shards < 1 or num_devices % (member_shards * parallel.model_shards):
    raise TextgenError(
      f"--config.parallel.member_shards={member_shards} times model_shards "
      f"{parallel.model_shards} must divide the {num_devices} devices in use"
    )
  if num_devices != len(devices) and jax.process_count() > 1:
    raise TextgenError("--config.parallel.num_devices must be 0 (all devices) on several hosts")
  shape = (
    member_shards,
    num_devices // (member_shards * parallel.model_shards),
    parallel.model_shards,
  )
  # Auto axes: XLA propagates the input shardings through the model (GSPMD), so model code
  # carries no sharding annotations.
  mesh = jax.make_mesh(
    shape,
    (MEMBER_AXIS, DATA_AXIS, MODEL_AXIS),
    devices=devices[:num_devices],
    axis_types=(jax.sharding.AxisType.Auto,) * 3,
  )
  return Layout(mesh, dict(vocabulary_matrices or {}))


def local_copy(tree: Any) -> Any:
  """The whole tree on this process's first device, for inference beside training (every
  process must call it: a leaf split across hosts is gathered collectively)."""

  def gather(leaf):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      return multihost_utils.process_allgather(leaf, tiled=True)
    return leaf

  return jax.device_put(jax.tree.map(gather, tree), jax.local_devices()[0])
