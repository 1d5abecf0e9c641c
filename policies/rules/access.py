"""Rules for who may do what: RBAC, namespace Pod Security, and what Services expose."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import (
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
)

from mlstack.components.backend import get_backend
from mlstack.policies.rules.objects import (
    MANDATORY,
    annotations_of,
    config_value,
    describe,
    get,
    kind_of,
    labels_of,
    sequence,
    stack_rule,
)
from mlstack.policies.rules.tenancy import Objects
from mlstack.stacks.catalog import CLOUDS, Cloud
from mlstack.stacks.names import POD_SECURITY_ENFORCE_LABEL, TEAM_LABEL

POD_SECURITY_LEVELS = ("privileged", "baseline", "restricted")
#: Annotations that make a LoadBalancer Service internal on each cloud: the ones mlstack writes
#: (each backend's `internal_lb_annotations`) and, on GCP, the legacy key the GCE cloud
#: provider still reads (`cloud.google.com/load-balancer-type`, kubernetes
#: pkg/cloudprovider/providers/gce/gce_annotations.go). A key of another cloud is ignored by
#: the controller that makes the load balancer, which is then internet-facing: an AWS scheme
#: annotation on GKE makes a public passthrough Network Load Balancer.
INTERNAL_LB_ANNOTATIONS: dict[Cloud, dict[str, str]] = {
    cloud: {
        **get_backend(cloud).internal_lb_annotations,
        **({"cloud.google.com/load-balancer-type": "Internal"} if cloud == "gcp" else {}),
    }
    for cloud in CLOUDS
}
#: GKE's internal load balancer class (spec.loadBalancerClass), an alternative to annotating.
GKE_INTERNAL_LB_CLASS = "networking.gke.io/l4-regional-internal"
#: Resource type prefixes that only one cloud's stacks declare.
_CLOUD_PREFIXES: tuple[tuple[str, Cloud], ...] = (
    ("aws:", "aws"),
    ("gcp:", "gcp"),
    ("mlstack:aws:", "aws"),
    ("mlstack:gcp:", "gcp"),
    ("mlstack:onprem:", "onprem"),
)


def stack_cloud(resources: Iterable[PolicyResource]) -> Cloud | None:
    """The cloud a stack's resources are on, or None when they do not say (a program that
    declares only Kubernetes objects) or say more than one."""
    found: set[Cloud] = {
        cloud
        for r in resources
        for prefix, cloud in _CLOUD_PREFIXES
        if r.resource_type.startswith(prefix)
    }
    return found.pop() if len(found) == 1 else None


def no_wildcard_rbac(args: ResourceValidationArgs, report: ReportViolation) -> None:
    kind = kind_of(args.resource_type)
    if kind not in ("Role", "ClusterRole"):
        return
    for i, rule in enumerate(sequence(args.props.get("rules"))):
        for field in ("verbs", "resources", "apiGroups", "nonResourceURLs"):
            if "*" in sequence(get(rule, field)):
                report(
                    f"{describe(kind, args.props)}: rules[{i}].{field} contains '*', which "
                    "also grants whatever the API adds later; list the "
                    f"{field} the role needs",
                    None,
                )


#: Verbs that let a holder grant more than it has: `escalate` edits a Role beyond the editor's
#: own permissions, `bind` binds any Role, `impersonate` acts as another user, group or service
#: account (Kubernetes RBAC docs, "Privilege escalation prevention and bootstrapping" and
#: "Restrictions on role creation or update"; "RBAC good practices": "Escalate verb",
#: "Bind verb", "Impersonate verb").
ESCALATION_VERBS = ("bind", "escalate", "impersonate")
_SECRET_READS = ("get", "list", "watch")


def no_node_port_services(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if kind_of(args.resource_type) != "Service":
        return
    if get(args.props, "spec", "type") != "NodePort":
        return
    report(
        f"{describe('Service', args.props)} is a NodePort Service: it opens its port on every "
        "node to whatever reaches the nodes; use ClusterIP, or an internal LoadBalancer in a "
        "team with allow_load_balancers",
        None,
    )


def _grants(rule: Any, verbs: Iterable[str], resource: str, group: str = "") -> bool:
    given = sequence(get(rule, "verbs"))
    return (
        any(v in given for v in verbs)
        and any(r in (resource, "*") for r in sequence(get(rule, "resources")))
        and any(g in (group, "*") for g in sequence(get(rule, "apiGroups")))
    )


def no_rbac_escalation_verbs(args: ResourceValidationArgs, report: ReportViolation) -> None:
    kind = kind_of(args.resource_type)
    if kind not in ("Role", "ClusterRole"):
        return
    for i, rule in enumerate(sequence(args.props.get("rules"))):
        verbs = [v for v in ESCALATION_VERBS if v in sequence(get(rule, "verbs"))]
        if verbs:
            report(
                f"{describe(kind, args.props)}: rules[{i}] grants {', '.join(verbs)}, which let "
                "its holders give themselves or others more than the role has; remove the verb "
                "(a team's extra_rules never needs it)",
                None,
            )


def no_cluster_wide_secret_reads(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if kind_of(args.resource_type) != "ClusterRole":
        return
    for i, rule in enumerate(sequence(args.props.get("rules"))):
        if _grants(rule, _SECRET_READS, "secrets"):
            report(
                f"{describe('ClusterRole', args.props)}: rules[{i}] reads Secrets "
                "(get/list/watch), in every namespace once bound cluster-wide: every team's "
                "credentials; grant it in a namespaced Role, naming the Secrets "
                "(resourceNames)",
                None,
            )


def rolebindings_stay_in_their_team(args: StackValidationArgs, report: ReportViolation) -> None:
    """A RoleBinding in a team's namespace binds only that team's groups and service
    accounts: one that names another team's group or service account lets that team in."""
    objects = Objects.of(args.resources)
    teams = {ns for ns, _ in objects.team_namespaces()}
    owners: dict[str, set[str]] = {}
    for ns in teams:
        for b in objects.in_namespace("RoleBinding", ns):
            if labels_of(b.props).get(TEAM_LABEL) != ns:
                continue  # only mlstack's own bindings say which groups are whose
            for subject in sequence(b.props.get("subjects")):
                if get(subject, "kind") == "Group":
                    owners.setdefault(str(get(subject, "name")), set()).add(ns)
    for ns in sorted(teams):
        for b in objects.in_namespace("RoleBinding", ns):
            for subject in sequence(b.props.get("subjects")):
                kind, name = get(subject, "kind"), get(subject, "name")
                others = sorted(owners.get(str(name), set()) - {ns}) if kind == "Group" else []
                if kind == "Group" and others and ns not in owners.get(str(name), set()):
                    who, fix = (
                        f"group {name!r} of team {', '.join(others)}",
                        f"bind only team {ns}'s groups, or add {name!r} to that team's "
                        "groups or viewer_groups",
                    )
                elif kind == "ServiceAccount" and get(subject, "namespace") in teams - {ns}:
                    who, fix = (
                        f"service account {get(subject, 'namespace')}/{name}",
                        f"bind a service account of namespace {ns} instead",
                    )
                else:
                    continue
                report(
                    f"{describe('RoleBinding', b.props)} lets {who} into team {ns}'s "
                    f"namespace; {fix}",
                    b.urn,
                )


def no_cluster_admin_bindings(args: ResourceValidationArgs, report: ReportViolation) -> None:
    kind = kind_of(args.resource_type)
    if kind not in ("RoleBinding", "ClusterRoleBinding"):
        return
    forbidden = config_value(args, "forbiddenClusterRoles", ["cluster-admin"])
    ref = args.props.get("roleRef")
    if get(ref, "kind") == "ClusterRole" and get(ref, "name") in forbidden:
        who = ", ".join(
            f"{get(s, 'kind')} {get(s, 'name')}" for s in sequence(args.props.get("subjects"))
        )
        report(
            f"{describe(kind, args.props)} grants {get(ref, 'name')} to {who or 'no one yet'}; "
            "bind a team's groups to its namespaced ml-engineer or viewer Role instead",
            None,
        )


def namespaces_enforce_pod_security(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if kind_of(args.resource_type) != "Namespace":
        return
    minimum = config_value(args, "minimumLevel", "baseline")
    level = labels_of(args.props).get(POD_SECURITY_ENFORCE_LABEL)
    where = describe("Namespace", args.props)
    if level not in POD_SECURITY_LEVELS:
        report(
            f"{where} enforces no Pod Security level; label it "
            f"{POD_SECURITY_ENFORCE_LABEL}: restricted",
            None,
        )
    elif POD_SECURITY_LEVELS.index(level) < POD_SECURITY_LEVELS.index(minimum):
        allowed = " or ".join(POD_SECURITY_LEVELS[POD_SECURITY_LEVELS.index(minimum) :][::-1])
        report(
            f"{where} enforces Pod Security level {level!r}, below the required {minimum!r}; "
            f"use {allowed} (a team's pod_security, or tenancy.pod_security)",
            None,
        )


def _is_internal(
    props: Mapping[str, Any], accepted: Mapping[str, str], cloud: Cloud | None
) -> bool:
    given = annotations_of(props)
    if any(given.get(k) == v for k, v in accepted.items()):
        return True
    return (
        cloud in ("gcp", None) and get(props, "spec", "loadBalancerClass") == GKE_INTERNAL_LB_CLASS
    )


def load_balancers_internal_only(args: StackValidationArgs, report: ReportViolation) -> None:
    """Every LoadBalancer Service is internal by its own cloud's annotations. Where the stack
    does not show its cloud, any mlstack cloud's internal annotation counts."""
    cloud = stack_cloud(args.resources)
    if cloud is not None:
        accepted = INTERNAL_LB_ANNOTATIONS[cloud]
    else:
        accepted = {
            k: v for by_cloud in INTERNAL_LB_ANNOTATIONS.values() for k, v in by_cloud.items()
        }
    for r in args.resources:
        if kind_of(r.resource_type) != "Service":
            continue
        if get(r.props, "spec", "type") != "LoadBalancer":
            continue
        if _is_internal(r.props, accepted, cloud):
            continue
        where = describe("Service", r.props)
        example = ", ".join(f"{k}: {v}" for k, v in list(accepted.items())[:2])
        foreign = sorted(
            k
            for other, keys in INTERNAL_LB_ANNOTATIONS.items()
            if other != cloud
            for k, v in keys.items()
            if annotations_of(r.props).get(k) == v and k not in accepted
        )
        if cloud is not None and foreign:
            report(
                f"{where} is a LoadBalancer marked internal only by another cloud's annotation "
                f"({', '.join(foreign)}), which {cloud} ignores, so it is reachable from outside "
                f"the network; use {example}, or ClusterIP",
                r.urn,
            )
        else:
            report(
                f"{where} is a LoadBalancer reachable from outside the network; annotate it as "
                f"internal ({example}) or use ClusterIP",
                r.urn,
            )


POLICIES = [
    ResourceValidationPolicy(
        name="no-wildcard-rbac",
        description="Roles and ClusterRoles list their verbs, resources and API groups.",
        validate=no_wildcard_rbac,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="no-cluster-admin-bindings",
        description="No binding grants cluster-admin (or another forbidden ClusterRole).",
        validate=no_cluster_admin_bindings,
        enforcement_level=MANDATORY,
        config_schema=PolicyConfigSchema(
            properties={
                "forbiddenClusterRoles": {
                    "type": "array",
                    "items": {"type": "string"},
                    "default": ["cluster-admin"],
                    "description": "ClusterRoles no binding may grant.",
                }
            }
        ),
    ),
    ResourceValidationPolicy(
        name="no-node-port-services",
        description="No Service is of type NodePort.",
        validate=no_node_port_services,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="no-rbac-escalation-verbs",
        description="No Role or ClusterRole grants bind, escalate or impersonate.",
        validate=no_rbac_escalation_verbs,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="no-cluster-wide-secret-reads",
        description="No ClusterRole reads Secrets (get, list or watch).",
        validate=no_cluster_wide_secret_reads,
        enforcement_level=MANDATORY,
    ),
    stack_rule(
        "rolebindings-stay-in-their-team",
        "A RoleBinding in a team's namespace binds only that team's groups and service accounts.",
        rolebindings_stay_in_their_team,
    ),
    ResourceValidationPolicy(
        name="namespaces-enforce-pod-security",
        description="Namespaces enforce a Pod Security level no lower than the minimum.",
        validate=namespaces_enforce_pod_security,
        enforcement_level=MANDATORY,
        config_schema=PolicyConfigSchema(
            properties={
                "minimumLevel": {
                    "type": "string",
                    "enum": list(POD_SECURITY_LEVELS),
                    "default": "baseline",
                    "description": "Lowest Pod Security level a namespace may enforce.",
                }
            }
        ),
    ),
    stack_rule(
        "load-balancers-internal-only",
        "Services of type LoadBalancer are internal by their own cloud's annotations.",
        load_balancers_internal_only,
    ),
]
