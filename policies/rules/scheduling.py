"""Scheduling feasibility: every pod template the stack deploys can run on some node pool.

A pod that no node can take sits Pending, and whatever awaits it (a Deployment's rollout, a
JobSet's start) times out long after `pulumi up` began. This rule finds that offline. For each
pod template (a JobSet's replicated jobs, Deployments (canaries included), and any other workload
object, and the add-on Helm releases whose chart defaults are recorded, merged with the
release's values as Helm merges them) it tries every pool the plan declares, in the order a
scheduler would refuse a node:

1. nodeSelector and required node affinity against the labels the pool's resource gives its
   nodes, tolerations against its taints (the checks of policies/rules/addons.py);
2. the pod's requests (cpu, memory, nvidia.com/gpu, ephemeral-storage) against one node's
   allocatable: the machine from the cloud's catalog less what the cloud reserves
   (components/aws/catalog.py and components/gcp/catalog.py say how much and where from);
3. the pods it runs at once against the pool's most nodes: a JobSet's replicas x parallelism,
   a Deployment's most replicas (its HPA's maxReplicas) plus its rolling-update surge, packed
   as many per node as the node's allocatable holds.

A template that fits no pool is one violation naming, per pool, the first reason it refused.
On-prem nodes are the cluster's own: their sizes are not in the plan, so only steps 1 and 3
(one node per node patch, any number of pods per node) apply there. The pods' requests are
counted against an empty node: DaemonSets (the CNI, kube-proxy, the device plugin) take a share
too, so a pod admitted here may still need a larger machine; one refused here never fits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pulumi_policy import ReportViolation, StackValidationArgs
from pulumi_policy.proxy import UnknownValueError

from mlstack.components.kubernetes.chart_defaults import EffectivePlacement, effective_placement
from mlstack.policies.rules.addons import HELM_RELEASE, placement_refusal, release_defaults
from mlstack.policies.rules.objects import (
    WORKLOAD_KINDS,
    PodTemplate,
    get,
    kind_of,
    mapping,
    number,
    pod_templates,
    sequence,
    stack_rule,
)
from mlstack.policies.rules.pools import PoolNodes, pool_of
from mlstack.stacks.catalog import Allocatable
from mlstack.stacks.names import GPU_RESOURCE

_DECIMAL = {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_MIB = 2**20


def quantity(value: Any) -> float | None:
    """A Kubernetes quantity ('500m', '16', '128Gi', '1e3', 4.0) in base units; None if it is
    not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    for suffixes in (_BINARY, _DECIMAL):
        for suffix, factor in suffixes.items():
            if text.endswith(suffix):
                return _float(text[: -len(suffix)], factor)
    if text.endswith("m"):
        return _float(text[:-1], 1e-3)
    return _float(text, 1.0)


def _float(text: str, factor: float) -> float | None:
    try:
        return float(text) * factor
    except ValueError:
        return None


@dataclass(frozen=True)
class Requests:
    """What one pod asks of a node: CPUs, bytes of memory and of ephemeral storage, GPUs."""

    cpu: float = 0.0
    memory: float = 0.0
    gpus: float = 0.0
    ephemeral: float = 0.0


def _container_requests(container: Mapping[str, Any]) -> Requests:
    """A container's requests; a resource with only a limit requests its limit (the API
    defaults requests to limits)."""
    resources = mapping(container.get("resources"))
    asked = {**mapping(resources.get("limits")), **mapping(resources.get("requests"))}
    return Requests(
        cpu=quantity(asked.get("cpu")) or 0.0,
        memory=quantity(asked.get("memory")) or 0.0,
        gpus=quantity(asked.get(GPU_RESOURCE)) or 0.0,
        ephemeral=quantity(asked.get("ephemeral-storage")) or 0.0,
    )


def pod_requests(spec: Mapping[str, Any]) -> Requests:
    """The pod's effective request per resource, as the scheduler counts it: the larger of the
    containers' sum and the largest init container (which run one at a time, before them)."""
    running = [_container_requests(mapping(c)) for c in sequence(spec.get("containers"))]
    init = [_container_requests(mapping(c)) for c in sequence(spec.get("initContainers"))]

    def effective(name: str) -> float:
        total = sum(getattr(r, name) for r in running)
        return max([total, *(getattr(r, name) for r in init)])

    return Requests(*(effective(n) for n in ("cpu", "memory", "gpus", "ephemeral")))


@dataclass(frozen=True)
class Template:
    """One pod template to place, with how many of its pods run at once (None: not counted,
    as for a DaemonSet's, one per matching node)."""

    where: str
    placement: EffectivePlacement
    requests: Requests = field(default_factory=Requests)
    pods: int | None = None
    #: What the count is, for messages: "2 replicas x 2 pods" and the like.
    pods_detail: str = ""


def pod_placement(spec: Mapping[str, Any]) -> EffectivePlacement:
    """A pod spec's nodeSelector, affinity and tolerations, as the placement checks read them."""
    return EffectivePlacement(
        node_selector=mapping(spec.get("nodeSelector")),
        affinity=mapping(spec.get("affinity")),
        tolerations=sequence(spec.get("tolerations")),
    )


def _surge(strategy: Mapping[str, Any], replicas: int) -> int:
    """Extra pods a rolling update starts: maxSurge, a count or a percentage rounded up
    (default 25%); none for Recreate."""
    if strategy.get("type") == "Recreate":
        return 0
    surge = get(strategy, "rollingUpdate", "maxSurge")
    if surge is None:
        surge = "25%"
    if isinstance(surge, str) and surge.endswith("%"):
        return math.ceil(replicas * number(surge[:-1]) / 100)
    return int(number(surge))


def _workload_templates(
    kind: str, props: Mapping[str, Any], scaled: Mapping[tuple[str, str], int]
) -> list[Template]:
    """The pod templates of one workload object, each with its pods at once."""
    templates = pod_templates(kind, props)
    if kind == "JobSet":
        found = []
        for rj, t in zip(sequence(get(props, "spec", "replicatedJobs")), templates, strict=True):
            replicas = int(number(get(rj, "replicas")) or 1)
            job = get(rj, "template", "spec")
            parallel = int(number(get(job, "parallelism")) or 1)
            completions = get(job, "completions")
            if completions is not None:
                parallel = min(parallel, int(number(completions)))
            found.append(_template(t, replicas * parallel, f"{replicas} x {parallel} pods"))
        return found
    if kind == "Deployment":
        name = (str(get(props, "metadata", "namespace")), str(get(props, "metadata", "name")))
        replicas = max(int(number(get(props, "spec", "replicas")) or 1), scaled.get(name, 0))
        surge = _surge(mapping(get(props, "spec", "strategy")), replicas)
        detail = f"{replicas} replicas and {surge} surge" if surge else f"{replicas} replicas"
        return [_template(templates[0], replicas + surge, detail)]
    if kind in ("StatefulSet", "ReplicaSet"):
        replicas = int(number(get(props, "spec", "replicas")) or 1)
        return [_template(templates[0], replicas, f"{replicas} replicas")]
    if kind == "Job":
        parallel = int(number(get(props, "spec", "parallelism")) or 1)
        return [_template(templates[0], parallel, f"parallelism {parallel}")]
    if kind == "DaemonSet":
        return [_template(t, None, "") for t in templates]
    return [_template(t, 1, "1 pod") for t in templates]


def _template(t: PodTemplate, pods: int | None, detail: str) -> Template:
    return Template(t.where, pod_placement(t.spec), pod_requests(t.spec), pods, detail)


def _hpa_maxima(resources: Iterable[Any]) -> dict[tuple[str, str], int]:
    """(namespace, name) of each Deployment an HPA scales -> its maxReplicas."""
    maxima: dict[tuple[str, str], int] = {}
    for r in resources:
        if kind_of(r.resource_type) != "HorizontalPodAutoscaler":
            continue
        target = get(r.props, "spec", "scaleTargetRef")
        if get(target, "kind") == "Deployment":
            key = (str(get(r.props, "metadata", "namespace")), str(get(target, "name")))
            maxima[key] = int(number(get(r.props, "spec", "maxReplicas")))
    return maxima


def _addon_template(r: Any) -> Template | None:
    """An add-on release's pods, placed as its chart renders them; node agents (which must run
    on every GPU pool) are gpu-addons-reach-gpu-pools' to check."""
    defaults = release_defaults(r.props)
    if defaults is None or defaults.runs_on_gpu_nodes:
        return None
    placement = effective_placement(defaults, mapping(r.props.get("values")))
    return Template(f"Helm release {r.name!r} ({defaults.chart} {defaults.version})", placement)


# --- one template against one pool --------------------------------------------------------


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.3g} GiB"


def _size_refusal(req: Requests, node: Allocatable) -> str | None:
    """Why one node of the pool cannot hold one pod, or None."""
    if req.cpu * 1000 > node.cpu_millis:
        return (
            f"a pod asks {req.cpu:g} CPUs and a {node.machine} node ({node.vcpus} vCPUs) has "
            f"{node.cpu_millis / 1000:g} allocatable"
        )
    if req.memory > node.memory_mib * _MIB:
        return (
            f"a pod asks {_gib(req.memory)} of memory and a {node.machine} node "
            f"({node.memory_gib:g} GiB) has {_gib(node.memory_mib * _MIB)} allocatable"
        )
    if req.gpus > node.gpus:
        return f"a pod asks {req.gpus:g} GPUs and a {node.machine} node has {node.gpus}"
    if node.ephemeral_mib is not None and req.ephemeral > node.ephemeral_mib * _MIB:
        return (
            f"a pod asks {_gib(req.ephemeral)} of ephemeral storage and a {node.machine} "
            f"node's disk leaves {_gib(node.ephemeral_mib * _MIB)} allocatable"
        )
    return None


def pods_per_node(req: Requests, node: Allocatable | None) -> int | None:
    """How many of the pods one node holds at once; None when nothing bounds it (an on-prem
    node of unknown size, or a pod that asks for nothing)."""
    if node is None:
        return None
    room = [
        (req.cpu * 1000, node.cpu_millis),
        (req.memory, node.memory_mib * _MIB),
        (req.gpus, node.gpus),
        (req.ephemeral, None if node.ephemeral_mib is None else node.ephemeral_mib * _MIB),
    ]
    bounds = [int(have // asked) for asked, have in room if asked > 0 and have is not None]
    return min(bounds) if bounds else None


def refusal(t: Template, pool: PoolNodes) -> str | None:
    """The first reason `pool` cannot run all of `t`'s pods, or None if it can."""
    placed = placement_refusal(t.placement, pool)
    if placed is not None:
        return placed
    if pool.node is not None:
        too_big = _size_refusal(t.requests, pool.node)
        if too_big is not None:
            return too_big
    elif t.requests.gpus > 0 and pool.kind != "gpu":
        return f"a pod asks {t.requests.gpus:g} GPUs and it is a CPU pool"
    if t.pods is None or pool.max_nodes is None:
        return None
    per_node = pods_per_node(t.requests, pool.node)
    if per_node is None:
        return None
    nodes = math.ceil(t.pods / per_node)
    if nodes > pool.max_nodes:
        return (
            f"{t.pods} pods at once ({t.pods_detail}) at {per_node} per node need {nodes} "
            f"nodes and the pool has at most {pool.max_nodes}"
        )
    return None


def declared_pools(resources: Iterable[Any]) -> dict[str, PoolNodes]:
    """Every pool the plan declares, by name; a pool of several node patches (on-prem: one per
    node) has as many nodes as patches."""
    pools: dict[str, PoolNodes] = {}
    for r in resources:
        nodes = pool_of(r.resource_type, r.props)
        if nodes is None:
            continue
        seen = pools.get(nodes.pool)
        if seen is not None and seen.max_nodes is not None and nodes.max_nodes is not None:
            nodes = replace(seen, max_nodes=seen.max_nodes + nodes.max_nodes)
        elif seen is not None:
            nodes = seen
        pools[nodes.pool] = nodes
    return pools


def pods_fit_a_pool(args: StackValidationArgs, report: ReportViolation) -> None:
    resources = list(args.resources)
    pools = declared_pools(resources)
    if not pools:
        return
    scaled = _hpa_maxima(resources)
    for r in resources:
        try:
            kind = kind_of(r.resource_type)
            if r.resource_type == HELM_RELEASE:
                addon = _addon_template(r)
                templates = [addon] if addon is not None else []
            elif kind in WORKLOAD_KINDS:
                templates = _workload_templates(kind, r.props, scaled)
            else:
                continue
        except UnknownValueError:
            continue
        for t in templates:
            if any(refusal(t, pool) is None for pool in pools.values()):
                continue  # the common case: stop at the first pool that holds it
            reasons = {name: refusal(t, pool) for name, pool in sorted(pools.items())}
            why = "; ".join(f"pool {name!r}: {reason}" for name, reason in reasons.items())
            report(
                f"{t.where} fits no node pool, so its pods would stay Pending ({why}); lower "
                "its requests or pod count, or select a pool that holds it (a larger "
                "instance_type, disk_gib or max_nodes, or the labels and taints it expects)",
                r.urn,
            )


POLICIES = [
    stack_rule(
        "pods-fit-a-pool",
        "Every pod template (workloads and add-ons) fits some node pool: placement, one node's "
        "allocatable CPU, memory, GPUs and disk, and the pool's most nodes.",
        pods_fit_a_pool,
    ),
]
