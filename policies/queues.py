"""Kueue scheduling from the stack config: flavors from pools, queues from team quotas.

One ResourceFlavor per GPU pool, selecting the pool's nodes and carrying its taints, plus a
label-less `default` flavor for CPU and memory; one ClusterQueue per team with its CPU and
memory totals and a nominal GPU quota per pool flavor (and the cohort and borrowing limits the
config gives); a LocalQueue named `default` in each team namespace; and the priorities that
order work: serving above training above best-effort.

Quotas, flavors and pools come from the same `Platform`, so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlstack.policies.gpu_quota import pool_gpu_quota
from mlstack.policies.tenancy import quantity
from mlstack.stacks.names import (
    ALLOW_OVERCOMMIT_ANNOTATION,
    BEST_EFFORT_PRIORITY,
    CAPACITY_LABEL,
    DEFAULT_FLAVOR,
    GPU_RESOURCE,
    LOCAL_QUEUE_NAME,
    MANAGED_BY,
    MAX_GPUS_ANNOTATION,
    NAMESPACE_NAME_LABEL,
    POOL_LABEL,
    SERVING_PRIORITY,
    TEAM_LABEL,
    TRAINING_PRIORITY,
)
from mlstack.stacks.schema import NodePool, Platform, Team

KUEUE_API = "kueue.x-k8s.io/v1beta2"


@dataclass(frozen=True)
class Priority:
    name: str
    value: int
    description: str


#: Serving preempts training, training preempts best-effort (spot, exploratory) work.
PRIORITIES = (
    Priority(SERVING_PRIORITY, 100_000, "Online inference: preempts training and batch work."),
    Priority(TRAINING_PRIORITY, 10_000, "Training jobs: preempt best-effort work."),
    Priority(BEST_EFFORT_PRIORITY, 1_000, "Exploratory and spot work: preempted first."),
)


def default_flavor_manifest() -> dict[str, Any]:
    return {
        "apiVersion": KUEUE_API,
        "kind": "ResourceFlavor",
        "metadata": {"name": DEFAULT_FLAVOR, "labels": dict(MANAGED_BY)},
        "spec": {},
    }


def flavor_manifest(pool: NodePool) -> dict[str, Any]:
    """A pool as Kueue sees it.

    The flavor carries the pool's taints as `nodeTaints`, so Kueue admits to it only workloads
    that tolerate them. It deliberately sets no `tolerations`: Kueue would add them to every
    admitted pod, and CPU-only work would then be placed on GPU nodes.
    """
    spec: dict[str, Any] = {
        "nodeLabels": {POOL_LABEL: pool.name, CAPACITY_LABEL: pool.capacity.value}
    }
    taints = [
        {"key": t.key, "value": t.value, "effect": t.effect.value} for t in pool.effective_taints
    ]
    if taints:
        spec["nodeTaints"] = taints
    metadata: dict[str, Any] = {
        "name": pool.name,
        "labels": dict(MANAGED_BY),
        "annotations": {MAX_GPUS_ANNOTATION: str(pool.max_gpus)},
    }
    return {"apiVersion": KUEUE_API, "kind": "ResourceFlavor", "metadata": metadata, "spec": spec}


def _gpu_flavors(platform: Platform, team: Team) -> list[dict[str, Any]]:
    """The team's GPU quota per pool flavor, in the pools its queue lists."""
    flavors = []
    for pool in platform.gpu_pools:
        quota = pool_gpu_quota(team, pool.name)
        if not quota.queued:
            continue
        gpu: dict[str, Any] = {"name": GPU_RESOURCE, "nominalQuota": quota.nominal}
        if quota.borrowing_limit is not None:
            gpu["borrowingLimit"] = quota.borrowing_limit
        flavors.append({"name": pool.name, "resources": [gpu]})
    return flavors


def cluster_queue_manifest(platform: Platform, team: Team) -> dict[str, Any]:
    """Two resource groups: CPU and memory at the team's totals on the label-less `default`
    flavor, and GPUs per pool flavor. Kueue counts quota per flavor, so CPU and memory on every
    pool flavor would admit the team's total once per pool; and a label-less flavor adds no
    node selector that could contradict the GPU flavor's."""
    cpu: dict[str, Any] = {"name": "cpu", "nominalQuota": quantity(team.quota.cpu)}
    memory: dict[str, Any] = {
        "name": "memory",
        "nominalQuota": quantity(team.quota.memory_gib, "Gi"),
    }
    if team.cohort is not None:
        # Unset means unlimited borrowing; the namespace quota would then refuse the pods of
        # work Kueue admitted. Cohorts share GPUs; CPU and memory stay the team's own.
        cpu["borrowingLimit"] = memory["borrowingLimit"] = 0
    groups: list[dict[str, Any]] = [
        {
            "coveredResources": ["cpu", "memory"],
            "flavors": [{"name": DEFAULT_FLAVOR, "resources": [cpu, memory]}],
        }
    ]
    gpu_flavors = _gpu_flavors(platform, team)
    if gpu_flavors:
        groups.append({"coveredResources": [GPU_RESOURCE], "flavors": gpu_flavors})
    spec: dict[str, Any] = {
        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: team.name}},
        "queueingStrategy": "BestEffortFIFO",
        "preemption": {
            "withinClusterQueue": "LowerPriority",
            "reclaimWithinCohort": "Any",
        },
        "resourceGroups": groups,
    }
    metadata: dict[str, Any] = {
        "name": team.name,
        "labels": {**MANAGED_BY, TEAM_LABEL: team.name},
    }
    if team.cohort is not None:
        spec["cohortName"] = team.cohort
        if platform.cohort(team.cohort).allow_overcommit:
            metadata["annotations"] = {ALLOW_OVERCOMMIT_ANNOTATION: "true"}
    return {"apiVersion": KUEUE_API, "kind": "ClusterQueue", "metadata": metadata, "spec": spec}


def local_queue_manifest(team: Team) -> dict[str, Any]:
    return {
        "apiVersion": KUEUE_API,
        "kind": "LocalQueue",
        "metadata": {
            "name": LOCAL_QUEUE_NAME,
            "namespace": team.name,
            "labels": {**MANAGED_BY, TEAM_LABEL: team.name},
        },
        "spec": {"clusterQueue": team.name},
    }


def priority_class_manifest(p: Priority) -> dict[str, Any]:
    return {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": p.name, "labels": dict(MANAGED_BY)},
        "value": p.value,
        "globalDefault": False,
        "preemptionPolicy": "PreemptLowerPriority",
        "description": p.description,
    }


def workload_priority_class_manifest(p: Priority) -> dict[str, Any]:
    return {
        "apiVersion": KUEUE_API,
        "kind": "WorkloadPriorityClass",
        "metadata": {"name": p.name, "labels": dict(MANAGED_BY)},
        "value": p.value,
        "description": p.description,
    }
