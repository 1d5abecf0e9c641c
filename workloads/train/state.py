"""The training state as a pytree, its shardings over the mesh, and its flat host form.

The state is `{"params": ..., "opt": ..., "step": ...}` of pure arrays (the model's parameters
as Flax's pure dict, optax's state). Checkpoints and bundles store it flat, one array per
dotted name (`params.blocks.0.qkv.kernel`), so that a reader needs no pickled structure: the
structure comes from the model config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from mlstack.workloads.train.configs import RunError

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)


def make_mesh(fsdp: int) -> Mesh:
    """A (data, fsdp) mesh over every device of every process."""
    devices = jax.device_count()
    if fsdp < 1 or devices % fsdp:
        raise RunError(
            f"--fsdp {fsdp} does not divide the {devices} devices; fix: use a divisor of {devices}"
        )
    # Auto axes: the compiler propagates shardings from the parameters and the batch.
    return jax.make_mesh(
        (devices // fsdp, fsdp), (DATA_AXIS, FSDP_AXIS), axis_types=(AxisType.Auto,) * 2
    )


def leaf_spec(shape: tuple[int, ...], fsdp: int) -> PartitionSpec:
    """Replicated, or (with fsdp > 1) sharded on the largest axis that fsdp divides."""
    if fsdp > 1:
        for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
            if shape[axis] % fsdp == 0 and shape[axis] >= fsdp:
                spec: list[str | None] = [None] * len(shape)
                spec[axis] = FSDP_AXIS
                return PartitionSpec(*spec)
    return PartitionSpec()


def state_shardings(abstract_state: Any, mesh: Mesh) -> Any:
    fsdp = mesh.shape[FSDP_AXIS]
    return jax.tree.map(lambda x: NamedSharding(mesh, leaf_spec(x.shape, fsdp)), abstract_state)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, None))


def _name(path: tuple[Any, ...]) -> str:
    parts = []
    for key in path:
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return ".".join(parts)


def flatten(tree: Any) -> dict[str, Any]:
    """`{dotted name: leaf}` of a pytree."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    flat = {_name(path): leaf for path, leaf in leaves}
    if len(flat) != len(leaves):
        raise ValueError("two leaves of the state have the same dotted name")
    return flat


def unflatten(flat: Mapping[str, Any], like: Any) -> Any:
    """The pytree shaped like `like` whose leaves are `flat`'s, by dotted name."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    missing = [_name(path) for path, _ in leaves if _name(path) not in flat]
    if missing:
        raise KeyError(f"state has no {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    return jax.tree_util.tree_unflatten(treedef, [flat[_name(path)] for path, _ in leaves])


def to_host(state: Any) -> Any:
    """A host copy of every leaf (numpy). A collective in multi-process runs: every process
    calls it at the same step. The copy never aliases a device buffer that a donated step
    reuses."""

    def one(x: Any) -> np.ndarray:
        if not isinstance(x, jax.Array):
            return np.array(x)
        if x.is_fully_replicated:
            return np.array(x.addressable_data(0), copy=True)
        return np.array(multihost_utils.process_allgather(x, tiled=True), copy=True)

    return jax.tree.map(one, state)


def to_devices(host: Any, shardings: Any) -> Any:
    """Place a host pytree on the mesh, each process filling only its own shards."""

    def one(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(one, host, shardings)
