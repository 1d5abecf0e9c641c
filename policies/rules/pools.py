"""Node pools as the policy pack sees them, whatever cloud declared them.

Each backend's pool resource is a different type (an on-prem NodePatch, an EKS node group, a GKE
node pool); `POOL_SOURCES` maps each type to a reader that returns the pool's name, kind,
capacity, labels and taints from its props, and where the plan says them, one node's allocatable
resources (the machine from the cloud's catalog) and the most nodes the resource declares. A
backend that adds a pool type registers its reader here,
and every pool rule covers it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs, ResourceValidationPolicy
from pulumi_policy.proxy import UnknownValueError

from mlstack.components.aws.catalog import SPOT_INTERRUPTION_NOTICE_S
from mlstack.components.aws.catalog import node_allocatable as eks_allocatable
from mlstack.components.gcp.catalog import SPOT_SHUTDOWN_DEFAULT_S
from mlstack.components.gcp.catalog import node_allocatable as gke_allocatable
from mlstack.components.onprem.pools import parse_taints
from mlstack.policies.rules.objects import MANDATORY, get, mapping, number, sequence
from mlstack.stacks.catalog import Allocatable
from mlstack.stacks.names import (
    CAPACITY_LABEL,
    POOL_KIND_LABEL,
    POOL_LABEL,
    POOL_TAINTS_ANNOTATION,
)
from mlstack.stacks.schema import GPU_TAINT


@dataclass(frozen=True)
class PoolNodes:
    """Nodes of one pool, as one resource declares them."""

    pool: str
    kind: str  # "cpu" or "gpu"
    capacity: str  # "on-demand", "spot" or "reserved"
    taints: tuple[tuple[str, str, str], ...]  # (key, value, effect)
    #: The nodes' labels as (key, value) pairs: what nodeSelectors and node affinities match.
    #: Not part of equality: the fields above identify the pool.
    labels: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    #: What one node offers pods, where the resource names a machine the cloud's catalog knows
    #: (None on-prem: the nodes are the cluster's own, their sizes not in the plan).
    node: Allocatable | None = field(default=None, compare=False)
    #: The most nodes this resource declares: a node group's maximum size, 1 for a node patch.
    max_nodes: int | None = field(default=None, compare=False)
    #: On spot capacity, the seconds a pod has from SIGTERM to the end of its node when the
    #: cloud reclaims it (EC2's interruption notice; a GKE spot node's graceful shutdown less
    #: the critical pods' share); None for other capacity or where the plan does not say.
    reclaim_notice_s: float | None = field(default=None, compare=False)


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
        labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
    )


NODE_PATCH = "kubernetes:core/v1:NodePatch"


def _node_patch(props: Mapping[str, Any]) -> PoolNodes | None:
    """An on-prem node, read from its patch: the labels it applies and the taints its pool
    declares (the operator sets those; see components/onprem/pools.py)."""
    annotation = get(props, "metadata", "annotations", POOL_TAINTS_ANNOTATION)
    nodes = pool_from_labels(
        mapping(get(props, "metadata", "labels")),
        parse_taints(annotation) if isinstance(annotation, str) else (),
    )
    return replace(nodes, max_nodes=1) if nodes is not None else None


EKS_NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
#: EKS spells taint effects in capitals; Kubernetes (and the pool rules) in camel case.
EKS_TAINT_EFFECTS = {
    "NO_SCHEDULE": "NoSchedule",
    "PREFER_NO_SCHEDULE": "PreferNoSchedule",
    "NO_EXECUTE": "NoExecute",
}
#: A node group's capacityType as a pool capacity (CAPACITY_BLOCK: EC2 Capacity Blocks).
EKS_CAPACITY_TYPES = {"ON_DEMAND": "on-demand", "SPOT": "spot", "CAPACITY_BLOCK": "reserved"}


def _eks_gpu_ami(ami_type: Any) -> bool:
    """AMIs with the NVIDIA driver (AL2023_*_NVIDIA, BOTTLEROCKET_*_NVIDIA, AL2_x86_64_GPU)."""
    return isinstance(ami_type, str) and ("NVIDIA" in ami_type or ami_type.endswith("_GPU"))


def _eks_node_group(props: Mapping[str, Any]) -> PoolNodes | None:
    """An EKS managed node group, read from its Kubernetes node labels and taints.

    The nodes are what EC2 runs, whatever the labels claim: a SPOT group is spot capacity and a
    group on an NVIDIA AMI has GPUs, so either makes the pool so (the labels decide otherwise,
    capacity defaulting to capacityType). A group whose labels or taints are not known yet (a
    preview) is not read, rather than stopping every stack rule that indexes the pools.
    """
    try:
        taints = [
            {
                "key": get(t, "key"),
                "value": get(t, "value"),
                "effect": EKS_TAINT_EFFECTS.get(str(get(t, "effect")), get(t, "effect")),
            }
            for t in sequence(props.get("taints"))
        ]
        labels = mapping(props.get("labels"))
        nodes = pool_from_labels(labels, taints)
        if nodes is None:
            return None
        labelled_capacity = labels.get(CAPACITY_LABEL)
        capacity_type = props.get("capacityType")
        ami_type = props.get("amiType")
        instance_type = get(props, "instanceTypes", 0)
        disk = props.get("diskSize")
        max_size = get(props, "scalingConfig", "maxSize")
    except UnknownValueError:
        return None
    # A group of several instance types is read as its first (mlstack names one).
    node = (
        eks_allocatable(instance_type, number(disk) or None)
        if isinstance(instance_type, str)
        else None
    )
    nodes = replace(nodes, node=node, max_nodes=int(number(max_size)) or None)
    if capacity_type == "SPOT":
        nodes = replace(nodes, capacity="spot", reclaim_notice_s=SPOT_INTERRUPTION_NOTICE_S)
    elif (
        not labelled_capacity
        and isinstance(capacity_type, str)
        and capacity_type in EKS_CAPACITY_TYPES
    ):
        nodes = replace(nodes, capacity=EKS_CAPACITY_TYPES[capacity_type])
    if _eks_gpu_ami(ami_type):
        nodes = replace(nodes, kind="gpu")
    return nodes


GKE_NODE_POOL = "gcp:container/nodePool:NodePool"
#: Accelerator-optimized machine families: their GPUs come with the machine type, attached
#: whether or not guestAccelerators lists them (A2: A100, A3: H100/H200, A4/A4X: B200/GB200,
#: G2: L4, G4: RTX PRO 6000).
GKE_GPU_MACHINE_FAMILIES = ("a2-", "a3-", "a4-", "a4x-", "g2-", "g4-")


def _gke_gpu_machine(config: Mapping[str, Any]) -> bool:
    machine = config.get("machineType")
    accelerators = sequence(config.get("guestAccelerators"))
    return any(number(get(a, "count")) > 0 for a in accelerators) or (
        isinstance(machine, str) and machine.startswith(GKE_GPU_MACHINE_FAMILIES)
    )


def _gke_node(config: Mapping[str, Any]) -> Allocatable | None:
    machine = config.get("machineType")
    if not isinstance(machine, str):
        return None
    attached = [int(number(get(a, "count"))) for a in sequence(config.get("guestAccelerators"))]
    return gke_allocatable(
        machine, number(config.get("diskSizeGb")) or None, sum(attached) if attached else None
    )


def _gke_max_nodes(props: Mapping[str, Any]) -> int | None:
    """The pool's largest size: totalMaxNodeCount, or maxNodeCount per zone times its zones
    (the provider's autoscaling block takes one or the other), or a fixed pool's nodeCount per
    zone times its zones; None when the plan says neither."""
    zones = len(sequence(props.get("nodeLocations"))) or 1
    autoscaling = mapping(props.get("autoscaling"))
    if not autoscaling:
        return int(number(props.get("nodeCount"))) * zones or None
    total = number(autoscaling.get("totalMaxNodeCount"))
    if total:
        return int(total)
    per_zone = number(autoscaling.get("maxNodeCount"))
    return int(per_zone) * zones or None


def _gke_spot_notice(config: Mapping[str, Any]) -> float:
    """Ordinary pods' share of a spot node's graceful shutdown: the kubelet's whole period less
    the critical pods' share, GKE's defaults where the node config leaves them unset
    (components/gcp/catalog.py)."""
    kubelet = mapping(config.get("kubeletConfig"))
    whole = number(kubelet.get("shutdownGracePeriodSeconds")) or SPOT_SHUTDOWN_DEFAULT_S[0]
    critical = kubelet.get("shutdownGracePeriodCriticalPodsSeconds")
    critical_s = number(critical) if critical is not None else SPOT_SHUTDOWN_DEFAULT_S[1]
    return max(whole - critical_s, 0)


def _gke_node_pool(props: Mapping[str, Any]) -> PoolNodes | None:
    """A GKE node pool, read from the Kubernetes node labels and taints of its nodeConfig.

    As with EKS, the nodes are what Compute Engine runs: a spot (or preemptible) pool is spot
    capacity and a pool with guest accelerators or on a GPU machine family has GPUs, whatever
    the labels say (else they decide, capacity defaulting to on-demand). GKE spells taint
    effects as EKS does. A pool whose node config is not known yet (a preview) is not read.
    """
    try:
        config = mapping(props.get("nodeConfig"))
        taints = [
            {
                "key": get(t, "key"),
                "value": get(t, "value"),
                "effect": EKS_TAINT_EFFECTS.get(str(get(t, "effect")), get(t, "effect")),
            }
            for t in sequence(config.get("taints"))
        ]
        nodes = pool_from_labels(mapping(config.get("labels")), taints)
        if nodes is None:
            return None
        spot = config.get("spot") is True or config.get("preemptible") is True
        gpus = _gke_gpu_machine(config)
        node = _gke_node(config)
        max_nodes = _gke_max_nodes(props)
        notice = _gke_spot_notice(config) if spot else None
    except UnknownValueError:
        return None
    nodes = replace(nodes, node=node, max_nodes=max_nodes)
    if spot:
        nodes = replace(nodes, capacity="spot", reclaim_notice_s=notice)
    if gpus:
        nodes = replace(nodes, kind="gpu")
    return nodes


#: Pool resource type -> reader. The cloud backends add their node group types here, next to
#: each other rather than from each backend's rules module at import time: pool_of then sees
#: every type whichever rules module was imported first, and the table is the whole list.
POOL_SOURCES: dict[str, Callable[[Mapping[str, Any]], PoolNodes | None]] = {
    NODE_PATCH: _node_patch,
    EKS_NODE_GROUP: _eks_node_group,
    GKE_NODE_POOL: _gke_node_pool,
}


#: pool_of's answers by props object: several rules read every node patch's pool, and under
#: `mlstack check` they all get the same props objects (the object is kept, so an id is never
#: reused for another while its answer is cached).
_POOLS_READ: dict[int, tuple[Mapping[str, Any], PoolNodes | None]] = {}
_POOLS_READ_MAX = 50_000


def pool_of(resource_type: str, props: Mapping[str, Any]) -> PoolNodes | None:
    reader = POOL_SOURCES.get(resource_type)
    if reader is None:
        return None
    hit = _POOLS_READ.get(id(props))
    if hit is not None and hit[0] is props:
        return hit[1]
    nodes = reader(props)
    if len(_POOLS_READ) >= _POOLS_READ_MAX:
        _POOLS_READ.clear()
    _POOLS_READ[id(props)] = (props, nodes)
    return nodes


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


def node_patches_leave_taints(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != NODE_PATCH or get(args.props, "spec", "taints") is None:
        return
    report(
        "a Node patch sets spec.taints, an atomic list under server-side apply (the Kubernetes "
        "OpenAPI's x-kubernetes-list-type: atomic): the patch would own every taint of the node "
        "and conflict with kubelet's and controllers' taints (or drop them when forced); set "
        "taints at node registration (kubelet registerWithTaints, kubeadm nodeRegistration."
        f"taints) and name them in the {POOL_TAINTS_ANNOTATION} annotation instead",
        None,
    )


POLICIES = [
    ResourceValidationPolicy(
        name="gpu-pools-tainted",
        description="Nodes of GPU pools carry the nvidia.com/gpu NoSchedule taint.",
        validate=gpu_pools_tainted,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="node-patches-leave-taints",
        description="Node patches do not set spec.taints (atomic: one manager owns every taint).",
        validate=node_patches_leave_taints,
        enforcement_level=MANDATORY,
    ),
]
