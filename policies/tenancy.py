"""The tenancy layer as pure manifest builders: what each team gets, from the stack config alone.

Per team: a Namespace (Pod Security labels), a ResourceQuota, a LimitRange, a workload
ServiceAccount, `ml-engineer` and `viewer` Roles bound to the config's groups, and a NetworkPolicy
pair that denies ingress except from the namespace itself and the monitoring namespace. Nothing
here is cluster-wide: a team's groups get no ClusterRole.

Queues (Kueue) are built in `policies.queues`; `policies.component` declares both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mlstack.policies.gpu_quota import pool_gpu_quota
from mlstack.stacks.names import (
    GPU_RESOURCE,
    MANAGED_BY,
    NAMESPACE_NAME_LABEL,
    POD_SECURITY_LABEL_PREFIX,
    SERVICE_ACCOUNT_NAME,
    TEAM_LABEL,
)
from mlstack.stacks.schema import Platform, RbacRule, Team

#: Names of the other objects in every team namespace (the workload ServiceAccount's is in
#: stacks.names: cloud identities bind to it).
QUOTA_NAME = "team-quota"
LIMIT_RANGE_NAME = "container-defaults"
ENGINEER_ROLE = "ml-engineer"
VIEWER_ROLE = "viewer"
DENY_INGRESS_POLICY = "default-deny-ingress"
ALLOW_INGRESS_POLICY = "allow-namespace-and-monitoring"

_RBAC_GROUP = "rbac.authorization.k8s.io"
_READ = ["get", "list", "watch"]
_WRITE = ["get", "list", "watch", "create", "update", "patch", "delete"]


def quantity(value: float, unit: str = "") -> str:
    """A Kubernetes quantity: whole numbers stay whole, fractions become milli-units."""
    if float(value).is_integer():
        return f"{int(value)}{unit}"
    # A positive amount never rounds down to nothing.
    if unit == "Gi":
        return f"{max(1, round(value * 1024))}Mi"
    return f"{max(1, round(value * 1000))}m"


def _meta(team: Team, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": team.name,
        "labels": {**MANAGED_BY, TEAM_LABEL: team.name},
        **extra,
    }


def namespace_manifest(platform: Platform, team: Team) -> dict[str, Any]:
    level = platform.pod_security(team).value
    version = f"v{platform.cluster.kubernetes_version}"
    labels = {**MANAGED_BY, TEAM_LABEL: team.name}
    for mode in ("enforce", "audit", "warn"):
        labels[f"{POD_SECURITY_LABEL_PREFIX}{mode}"] = level
        labels[f"{POD_SECURITY_LABEL_PREFIX}{mode}-version"] = version
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": team.name, "labels": labels},
    }


def team_gpu_ceiling(platform: Platform, team: Team) -> int:
    """The most GPUs a team can hold at once: its quotas plus what its cohort may lend it.

    The namespace ResourceQuota uses it, so that Kueue, not the quota, decides GPU admission,
    and borrowing is never blocked by a lower namespace ceiling.
    """
    return sum(
        pool_gpu_quota(team, pool.name).reachable(pool.max_gpus) for pool in platform.gpu_pools
    )


def resource_quota_manifest(platform: Platform, team: Team) -> dict[str, Any]:
    q = team.quota
    hard = {
        "requests.cpu": quantity(q.cpu),
        "requests.memory": quantity(q.memory_gib, "Gi"),
        f"requests.{GPU_RESOURCE}": str(team_gpu_ceiling(platform, team)),
        "pods": str(q.pods),
    }
    if not team.allow_load_balancers:
        # A LoadBalancer Service allocates node ports too, so both stay closed together.
        hard["services.loadbalancers"] = "0"
        hard["services.nodeports"] = "0"
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": _meta(team, QUOTA_NAME),
        "spec": {"hard": hard},
    }


def limit_range_manifest(platform: Platform, team: Team) -> dict[str, Any]:
    t = platform.tenancy
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": _meta(team, LIMIT_RANGE_NAME),
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "defaultRequest": {
                        "cpu": quantity(t.default_request_cpu),
                        "memory": quantity(t.default_request_memory_gib, "Gi"),
                    },
                    "default": {
                        "cpu": quantity(t.default_limit_cpu),
                        "memory": quantity(t.default_limit_memory_gib, "Gi"),
                    },
                }
            ]
        },
    }


def service_account_manifest(
    team: Team, annotations: Mapping[str, Any], pull_secret: str | None
) -> dict[str, Any]:
    """The identity team workloads run as; the backend's annotations bind it to the cloud
    identity that may read the team's buckets."""
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(team, SERVICE_ACCOUNT_NAME),
        "automountServiceAccountToken": False,
    }
    if annotations:
        manifest["metadata"]["annotations"] = dict(annotations)
    if pull_secret is not None:
        manifest["imagePullSecrets"] = [{"name": pull_secret}]
    return manifest


def _rule(api_groups: list[str], resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": api_groups, "resources": resources, "verbs": verbs}


def engineer_rules(extra: tuple[RbacRule, ...] = ()) -> list[dict[str, Any]]:
    """Run and watch training work; read serving; no Secrets, no exec, nothing cluster-wide."""
    return [
        _rule(["batch"], ["jobs", "cronjobs"], _WRITE),
        _rule(["jobset.x-k8s.io"], ["jobsets"], _WRITE),
        _rule(["kueue.x-k8s.io"], ["workloads"], [*_READ, "delete"]),
        _rule(["kueue.x-k8s.io"], ["localqueues"], _READ),
        _rule([""], ["pods"], [*_READ, "delete"]),
        _rule([""], ["pods/log", "events", "services", "configmaps"], _READ),
        _rule([""], ["resourcequotas", "limitranges"], _READ),
        _rule([""], ["configmaps"], ["create", "update", "patch", "delete"]),
        _rule(["apps"], ["deployments", "replicasets"], _READ),
        _rule(["autoscaling"], ["horizontalpodautoscalers"], _READ),
        *(_rule(list(r.api_groups), list(r.resources), list(r.verbs)) for r in extra),
    ]


def viewer_rules() -> list[dict[str, Any]]:
    return [
        _rule(["batch"], ["jobs", "cronjobs"], _READ),
        _rule(["jobset.x-k8s.io"], ["jobsets"], _READ),
        _rule(["kueue.x-k8s.io"], ["workloads", "localqueues"], _READ),
        _rule([""], ["pods", "pods/log", "events", "services", "configmaps"], _READ),
        _rule([""], ["resourcequotas", "limitranges"], _READ),
        _rule(["apps"], ["deployments", "replicasets"], _READ),
        _rule(["autoscaling"], ["horizontalpodautoscalers"], _READ),
    ]


def role_manifest(team: Team, name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": f"{_RBAC_GROUP}/v1",
        "kind": "Role",
        "metadata": _meta(team, name),
        "rules": rules,
    }


def role_binding_manifest(team: Team, role: str, groups: tuple[str, ...]) -> dict[str, Any]:
    return {
        "apiVersion": f"{_RBAC_GROUP}/v1",
        "kind": "RoleBinding",
        "metadata": _meta(team, role),
        "roleRef": {"apiGroup": _RBAC_GROUP, "kind": "Role", "name": role},
        "subjects": [{"apiGroup": _RBAC_GROUP, "kind": "Group", "name": g} for g in groups],
    }


def deny_ingress_manifest(team: Team) -> dict[str, Any]:
    """Default deny: selects every pod, allows no ingress. Other policies add what is allowed."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(team, DENY_INGRESS_POLICY),
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }


def allow_ingress_manifest(
    platform: Platform, team: Team, collectors: Sequence[str] = ()
) -> dict[str, Any]:
    """Pods of the namespace reach each other (multi-host training); monitoring scrapes, from
    tenancy.monitoring_namespace and from the namespaces of the cloud's own metrics collectors
    (`collectors`: GKE's managed Prometheus scrapes from gmp-system)."""
    monitoring = platform.tenancy.monitoring_namespace
    scrapers = [
        {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: ns}}}
        for ns in (monitoring, *(c for c in collectors if c != monitoring))
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(team, ALLOW_INGRESS_POLICY),
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {}}]},
                {"from": scrapers},
            ],
        },
    }


def team_manifests(
    platform: Platform,
    team: Team,
    sa_annotations: Mapping[str, Any] | None = None,
    pull_secret: str | None = None,
    collectors: Sequence[str] = (),
) -> dict[str, dict[str, Any]]:
    """Every namespaced object of a team except queues and credentials, by role name.
    `collectors`: namespaces of the cloud's metrics collectors, admitted to scrape."""
    manifests = {
        "namespace": namespace_manifest(platform, team),
        "quota": resource_quota_manifest(platform, team),
        "limits": limit_range_manifest(platform, team),
        "service-account": service_account_manifest(team, sa_annotations or {}, pull_secret),
        "engineer-role": role_manifest(team, ENGINEER_ROLE, engineer_rules(team.extra_rules)),
        "viewer-role": role_manifest(team, VIEWER_ROLE, viewer_rules()),
        "deny-ingress": deny_ingress_manifest(team),
        "allow-ingress": allow_ingress_manifest(platform, team, collectors),
    }
    if team.groups:
        manifests["engineer-binding"] = role_binding_manifest(team, ENGINEER_ROLE, team.groups)
    if team.viewer_groups:
        manifests["viewer-binding"] = role_binding_manifest(team, VIEWER_ROLE, team.viewer_groups)
    return manifests
