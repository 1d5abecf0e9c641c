"""Rules for who may do what: RBAC, namespace Pod Security, and what Services expose."""

from __future__ import annotations

from pulumi_policy import (
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

from mlstack.policies.rules.objects import (
    MANDATORY,
    annotations_of,
    config_value,
    describe,
    get,
    kind_of,
    labels_of,
    sequence,
)
from mlstack.stacks.names import POD_SECURITY_ENFORCE_LABEL

POD_SECURITY_LEVELS = ("privileged", "baseline", "restricted")
#: Annotations that make a LoadBalancer Service internal, per cloud (value expected).
INTERNAL_LB_ANNOTATIONS = {
    "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal",
    "service.beta.kubernetes.io/aws-load-balancer-internal": "true",
    "networking.gke.io/load-balancer-type": "Internal",
    "cloud.google.com/load-balancer-type": "Internal",
    "service.beta.kubernetes.io/azure-load-balancer-internal": "true",
    "metallb.universe.tf/address-pool": "internal",
}


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


def load_balancers_internal_only(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if kind_of(args.resource_type) != "Service":
        return
    if get(args.props, "spec", "type") != "LoadBalancer":
        return
    given = annotations_of(args.props)
    if any(given.get(k) == v for k, v in INTERNAL_LB_ANNOTATIONS.items()):
        return
    report(
        f"{describe('Service', args.props)} is a LoadBalancer reachable from outside the "
        "network; annotate it as internal (e.g. "
        "service.beta.kubernetes.io/aws-load-balancer-scheme: internal, "
        "networking.gke.io/load-balancer-type: Internal) or use ClusterIP",
        None,
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
    ResourceValidationPolicy(
        name="load-balancers-internal-only",
        description="Services of type LoadBalancer are internal.",
        validate=load_balancers_internal_only,
        enforcement_level=MANDATORY,
    ),
]
