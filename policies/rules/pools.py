"""Node pools as the policy pack sees them, whatever cloud declared them.

Each backend's pool resource is a different type (an on-prem NodePatch, an EKS node group, a GKE
node pool); `POOL_SOURCES` maps each type to a reader that returns the pool's name, kind,
capacity and taints from its props. A backend that adds a pool type registers its reader here,
and every pool rule covers it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs, ResourceValidationPolicy

from policies.rules.objects import MANDATORY, get, mapping, sequence
from stacks.schema import CAPACITY_LABEL, GPU_TAINT, POOL_KIND_LABEL, POOL_LABEL


@dataclass(frozen=True)
class PoolNodes:
    """Nodes of one pool, as one resource declares them."""

    pool: str
    kind: str  # "cpu" or "gpu"
    capacity: str  # "on-demand", "spot" or "reserved"
    taints: tuple[tuple[str, str, str], ...]  # (key, value, effect)


def pool_from_labels(labels: Mapping[str, Any], taints: Sequence[Any]) -> PoolNodes | None:
    pool = labels.get(POOL_LABEL)
    if not isinstance(pool, str):
        return None
    return PoolNodes(
        pool=pool,
        kind=str(labels.get(POOL_KIND_LABEL) or "cpu"),
        capacity=str(labels.get(CAPACITY_LABEL) or "on-demand"),
        taints=tuple(
            (str(get(t, "key") or ""), str(get(t, "value") or ""), str(get(t, "effect") or ""))
            for t in taints
        ),
    )


def _node_patch(props: Mapping[str, Any]) -> PoolNodes | None:
    return pool_from_labels(
        mapping(get(props, "metadata", "labels")), sequence(get(props, "spec", "taints"))
    )


#: Pool resource type -> reader. The cloud backends add their node group types.
POOL_SOURCES: dict[str, Callable[[Mapping[str, Any]], PoolNodes | None]] = {
    "kubernetes:core/v1:NodePatch": _node_patch,
}


def pool_of(resource_type: str, props: Mapping[str, Any]) -> PoolNodes | None:
    reader = POOL_SOURCES.get(resource_type)
    return reader(props) if reader is not None else None


def gpu_pools_tainted(args: ResourceValidationArgs, report: ReportViolation) -> None:
    nodes = pool_of(args.resource_type, args.props)
    if nodes is None or nodes.kind != "gpu":
        return
    wanted = (GPU_TAINT.key, GPU_TAINT.value, GPU_TAINT.effect.value)
    # The value counts too: GPU workloads tolerate exactly this taint (or the key with Exists).
    if wanted not in nodes.taints:
        report(
            f"GPU pool {nodes.pool!r} is not tainted {wanted[0]}={wanted[1]}:{wanted[2]}, so "
            "any pod can fill its GPU nodes (or GPU pods cannot tolerate it); remove taints "
            "from the pool config (the default adds it) or include that taint",
            None,
        )


POLICIES = [
    ResourceValidationPolicy(
        name="gpu-pools-tainted",
        description="Nodes of GPU pools carry the nvidia.com/gpu NoSchedule taint.",
        validate=gpu_pools_tainted,
        enforcement_level=MANDATORY,
    ),
]
