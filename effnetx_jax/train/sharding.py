"""How arrays are laid out on the devices: a (`data`, `fsdp`) mesh over every device of every process.

The batch is split over both axes. Parameters, optimizer state and EMA are replicated when the
`fsdp` axis has size 1 (`config.fsdp_size`, the default) and otherwise sharded over it (ZeRO-3 /
FSDP): each large array is split along its largest dimension that the axis divides, and XLA
gathers it where a computation needs it. Small arrays (biases, BatchNorm vectors, scalars) stay
replicated, where splitting saves nothing and costs a collective.
"""

from __future__ import annotations

import math

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXES = ("data", "fsdp")
# Arrays below this many elements are replicated whatever the fsdp size.
MIN_SHARDED_SIZE = 1024


def make_mesh(fsdp_size: int) -> Mesh:
    # Auto axes: XLA propagates shardings through the model (flax layers are not written for
    # explicit sharding types).
    return jax.make_mesh(
        (jax.device_count() // fsdp_size, fsdp_size), DATA_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 2
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis over every device, in device order: device i holds the i-th slice."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def state_shardings(abstract_state, mesh: Mesh):
    """A NamedSharding per leaf of `abstract_state` (shapes only): fsdp-sharded or replicated."""
    return jax.tree.map(lambda leaf: NamedSharding(mesh, _fsdp_spec(leaf.shape, mesh.shape["fsdp"])), abstract_state)


def _fsdp_spec(shape: tuple[int, ...], fsdp_size: int) -> PartitionSpec:
    if fsdp_size == 1 or math.prod(shape) < MIN_SHARDED_SIZE:
        return PartitionSpec()
    divisible = [axis for axis, dim in enumerate(shape) if dim % fsdp_size == 0]
    if not divisible:
        return PartitionSpec()
    axis = max(divisible, key=lambda a: shape[a])
    return PartitionSpec(*(("fsdp" if a == axis else None) for a in range(len(shape))))


def global_array(value, like) -> jax.Array:
    """The host value `value` laid out as the (abstract or concrete) array `like`; every process must pass
    the whole value (as each read it from the same files)."""
    return jax.make_array_from_callback(like.shape, like.sharding, lambda index: value[index])
