"""On-prem machines: the cluster's own, so no machine table; what a GPU pool must say instead.

An on-prem pool is a set of existing nodes: it names no instance type, and a GPU pool says how
many GPUs each of its nodes carries, within what real boards carry.
"""

from __future__ import annotations

from mlstack.stacks.catalog import CatalogError, Machine, accelerator

#: Most GPUs an on-prem node is accepted with (HGX boards carry 8; a few 16-GPU systems exist).
MAX_GPUS_PER_NODE = 16
#: Why an on-prem pool may not set instance_type (GPU and CPU pools alike).
NO_INSTANCE_TYPE = "onprem pools are existing machines and have no instance type"


def resolve_gpu_machine(
    accelerator_name: str, instance_type: str | None, gpus_per_node: int | None
) -> Machine:
    """An on-prem GPU pool as a machine: no type, the GPU count it gives; or CatalogError."""
    accelerator(accelerator_name)
    if instance_type is not None:
        raise CatalogError("instance_type", NO_INSTANCE_TYPE, "remove instance_type")
    if gpus_per_node is None:
        raise CatalogError(
            "gpus_per_node",
            "onprem GPU pools must say how many GPUs each node carries",
            f"set gpus_per_node (1-{MAX_GPUS_PER_NODE})",
        )
    if not 1 <= gpus_per_node <= MAX_GPUS_PER_NODE:
        raise CatalogError(
            "gpus_per_node",
            f"{gpus_per_node} GPUs per node is outside 1-{MAX_GPUS_PER_NODE}",
            f"set gpus_per_node between 1 and {MAX_GPUS_PER_NODE}",
        )
    return Machine(None, gpus_per_node)
