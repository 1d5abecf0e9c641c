"""Access rules (policies/rules/access.py): RBAC, namespace Pod Security, LoadBalancers."""

from __future__ import annotations

from typing import Any

import pytest
from rule_args import fails, messages, policy_resource, resource_args, stack_args

from mlstack.policies.rules import access

ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
CLUSTER_ROLE = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole"
ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"
CLUSTER_ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding"
NAMESPACE = "kubernetes:core/v1:Namespace"
SERVICE = "kubernetes:core/v1:Service"
ENFORCE = "pod-security.kubernetes.io/enforce"


def role(*rules: dict, namespace: str | None = "vision", name: str = "ml-engineer") -> dict:
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "metadata": metadata, "rules": rules}


def rule(verbs: list[str], resources: list[str], groups: list[str] | None = None) -> dict:
    return {"apiGroups": groups or ["batch"], "resources": resources, "verbs": verbs}


def binding(
    role_kind: str, role_name: str, subjects: list[dict], namespace: str | None = "vision"
) -> dict:
    metadata = {"name": "admins", **({"namespace": namespace} if namespace else {})}
    return {
        "metadata": metadata,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name},
        "subjects": subjects,
    }


def namespace(labels: dict[str, str] | None = None) -> dict:
    return {"apiVersion": "v1", "metadata": {"name": "vision", "labels": labels or {}}}


def service(kind: str = "LoadBalancer", annotations: dict[str, str] | None = None) -> dict:
    metadata = {"name": "serve", "namespace": "vision", "annotations": annotations or {}}
    return {"metadata": metadata, "spec": {"type": kind, "ports": [{"port": 443}]}}


def check(rule_fn: Any, resource_type: str, manifest: dict, config: dict | None = None) -> list:
    return messages(rule_fn, resource_args(resource_type, manifest, config))


# no-wildcard-rbac


def test_roles_that_list_what_they_grant_pass() -> None:
    manifest = role(rule(["get", "list", "create"], ["jobs"]), rule(["get"], ["pods/log"], [""]))
    assert check(access.no_wildcard_rbac, ROLE, manifest) == []
    assert check(access.no_wildcard_rbac, CLUSTER_ROLE, role(namespace=None)) == []


@fails("no-wildcard-rbac")
def test_a_wildcard_verb_is_reported_with_the_rule_index() -> None:
    manifest = role(rule(["get"], ["pods"]), rule(["*"], ["jobs"]))
    [message] = check(access.no_wildcard_rbac, ROLE, manifest)
    assert message.startswith("Role vision/ml-engineer: rules[1].verbs contains '*'")
    assert "list the verbs the role needs" in message


@fails("no-wildcard-rbac")
def test_each_wildcard_field_of_a_cluster_role_is_reported() -> None:
    manifest = role(rule(["get"], ["*"], ["*"]), namespace=None, name="reader")
    found = check(access.no_wildcard_rbac, CLUSTER_ROLE, manifest)
    assert found == [
        "ClusterRole reader: rules[0].resources contains '*', which also grants whatever the API "
        "adds later; list the resources the role needs",
        "ClusterRole reader: rules[0].apiGroups contains '*', which also grants whatever the API "
        "adds later; list the apiGroups the role needs",
    ]


@fails("no-wildcard-rbac")
def test_a_wildcard_non_resource_url_is_reported() -> None:
    manifest = role({"nonResourceURLs": ["*"], "verbs": ["get"]}, namespace=None, name="urls")
    [message] = check(access.no_wildcard_rbac, CLUSTER_ROLE, manifest)
    assert message.startswith("ClusterRole urls: rules[0].nonResourceURLs contains '*'")


def test_wildcards_outside_roles_are_not_this_rules_business() -> None:
    manifest = role(rule(["*"], ["*"], ["*"]))
    assert check(access.no_wildcard_rbac, ROLE_BINDING, manifest) == []


# no-cluster-admin-bindings


@fails("no-cluster-admin-bindings")
def test_a_cluster_role_binding_to_cluster_admin_names_who_gets_it() -> None:
    subjects = [
        {"kind": "Group", "name": "lab-admins"},
        {"kind": "ServiceAccount", "name": "ci", "namespace": "ops"},
    ]
    manifest = binding("ClusterRole", "cluster-admin", subjects, namespace=None)
    [message] = check(access.no_cluster_admin_bindings, CLUSTER_ROLE_BINDING, manifest)
    assert message.startswith(
        "ClusterRoleBinding admins grants cluster-admin to Group lab-admins, ServiceAccount ci;"
    )
    assert "namespaced ml-engineer or viewer Role instead" in message


@fails("no-cluster-admin-bindings")
def test_a_namespaced_binding_of_cluster_admin_without_subjects_is_reported() -> None:
    manifest = binding("ClusterRole", "cluster-admin", [])
    [message] = check(access.no_cluster_admin_bindings, ROLE_BINDING, manifest)
    assert "RoleBinding vision/admins grants cluster-admin to no one yet" in message


def test_binding_a_teams_role_passes() -> None:
    subjects = [{"kind": "Group", "name": "lab-vision"}]
    assert (
        check(access.no_cluster_admin_bindings, ROLE_BINDING, binding("Role", "ml", subjects)) == []
    )
    # A namespaced Role that happens to be called cluster-admin is not the ClusterRole.
    fake = binding("Role", "cluster-admin", subjects)
    assert check(access.no_cluster_admin_bindings, ROLE_BINDING, fake) == []


@fails("no-cluster-admin-bindings")
def test_forbidden_cluster_roles_come_from_config() -> None:
    config = {"forbiddenClusterRoles": ["admin", "edit"]}
    subjects = [{"kind": "Group", "name": "lab-vision"}]
    edit = binding("ClusterRole", "edit", subjects)
    [message] = check(access.no_cluster_admin_bindings, ROLE_BINDING, edit, config)
    assert "grants edit to Group lab-vision" in message
    view = binding("ClusterRole", "view", subjects)
    assert check(access.no_cluster_admin_bindings, ROLE_BINDING, view, config) == []


# namespaces-enforce-pod-security


@pytest.mark.parametrize("level", ["baseline", "restricted"])
def test_namespaces_at_or_above_the_default_minimum_pass(level: str) -> None:
    manifest = namespace({ENFORCE: level})
    assert check(access.namespaces_enforce_pod_security, NAMESPACE, manifest) == []


@fails("namespaces-enforce-pod-security")
@pytest.mark.parametrize(
    "labels", [{}, {ENFORCE: "strict"}, {"pod-security.kubernetes.io/warn": "restricted"}]
)
def test_a_namespace_without_a_valid_enforce_label_is_reported(labels: dict) -> None:
    [message] = check(access.namespaces_enforce_pod_security, NAMESPACE, namespace(labels))
    assert message == (
        "Namespace vision enforces no Pod Security level; label it "
        "pod-security.kubernetes.io/enforce: restricted"
    )


@fails("namespaces-enforce-pod-security")
def test_privileged_is_below_the_default_minimum() -> None:
    manifest = namespace({ENFORCE: "privileged"})
    [message] = check(access.namespaces_enforce_pod_security, NAMESPACE, manifest)
    assert "enforces Pod Security level 'privileged', below the required 'baseline'" in message


@fails("namespaces-enforce-pod-security")
def test_minimum_level_config_raises_the_bar() -> None:
    config = {"minimumLevel": "restricted"}
    baseline = namespace({ENFORCE: "baseline"})
    [message] = check(access.namespaces_enforce_pod_security, NAMESPACE, baseline, config)
    assert "'baseline', below the required 'restricted'" in message
    restricted = namespace({ENFORCE: "restricted"})
    assert check(access.namespaces_enforce_pod_security, NAMESPACE, restricted, config) == []


def test_the_fix_names_no_level_below_the_minimum() -> None:
    config = {"minimumLevel": "restricted"}
    manifest = namespace({ENFORCE: "baseline"})
    [message] = check(access.namespaces_enforce_pod_security, NAMESPACE, manifest, config)
    fix = message.split(";", 1)[1]
    assert "baseline" not in fix


# load-balancers-internal-only

#: A resource only each cloud's stacks declare, to tell the rule the cloud.
CLOUD_MARKERS = {
    "aws": ("aws:eks/cluster:Cluster", {"name": "ml"}),
    "gcp": ("gcp:container/cluster:Cluster", {"name": "ml"}),
    "onprem": ("mlstack:onprem:ExistingCluster", {"metadata": {"name": "lab"}}),
}


def lb_messages(cloud: str | None, *services: dict) -> list[str]:
    resources = [policy_resource(SERVICE, s, name=f"svc-{i}") for i, s in enumerate(services)]
    if cloud is not None:
        type_, inputs = CLOUD_MARKERS[cloud]
        resources.append(policy_resource(type_, inputs, name="cluster"))
    return messages(access.load_balancers_internal_only, stack_args(resources))


@fails("load-balancers-internal-only")
@pytest.mark.parametrize("cloud", [None, "aws", "gcp", "onprem"])
@pytest.mark.parametrize(
    "annotations",
    [{}, {"service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing"}],
)
def test_a_public_load_balancer_is_reported(cloud: str | None, annotations: dict[str, str]) -> None:
    [message] = lb_messages(cloud, service(annotations=annotations))
    assert message.startswith("Service vision/serve is a LoadBalancer reachable from outside")
    assert "annotate it as internal" in message
    assert "or use ClusterIP" in message


@pytest.mark.parametrize(
    ("cloud", "key", "value"),
    [(c, k, v) for c, keys in access.INTERNAL_LB_ANNOTATIONS.items() for k, v in keys.items()],
)
def test_each_clouds_internal_annotation_passes_on_that_cloud(
    cloud: str, key: str, value: str
) -> None:
    assert lb_messages(cloud, service(annotations={key: value})) == []
    # A program that shows no cloud: any mlstack cloud's internal annotation counts.
    assert lb_messages(None, service(annotations={key: value})) == []


@fails("load-balancers-internal-only")
@pytest.mark.parametrize(
    ("cloud", "key", "value"),
    [
        ("gcp", "service.beta.kubernetes.io/aws-load-balancer-scheme", "internal"),
        ("gcp", "metallb.io/address-pool", "internal"),
        ("aws", "networking.gke.io/load-balancer-type", "Internal"),
        ("aws", "cloud.google.com/load-balancer-type", "Internal"),
        ("onprem", "service.beta.kubernetes.io/aws-load-balancer-internal", "true"),
        ("onprem", "networking.gke.io/load-balancer-type", "Internal"),
    ],
)
def test_another_clouds_internal_annotation_is_reported(cloud: str, key: str, value: str) -> None:
    [message] = lb_messages(cloud, service(annotations={key: value}))
    assert f"marked internal only by another cloud's annotation ({key})" in message
    assert f"which {cloud} ignores" in message
    own = next(iter(access.INTERNAL_LB_ANNOTATIONS[cloud]))  # type: ignore[index]
    assert own in message


def test_gkes_internal_load_balancer_class_passes_on_gcp_only() -> None:
    internal = service()
    internal["spec"]["loadBalancerClass"] = access.GKE_INTERNAL_LB_CLASS
    assert lb_messages("gcp", internal) == []
    assert len(lb_messages("aws", internal)) == 1


def test_mixed_cloud_resources_accept_any_clouds_annotation() -> None:
    resources = [
        policy_resource(SERVICE, service(annotations={"metallb.io/address-pool": "internal"})),
        policy_resource(*CLOUD_MARKERS["aws"], name="eks"),
        policy_resource(*CLOUD_MARKERS["gcp"], name="gke"),
    ]
    assert access.stack_cloud(resources) is None
    assert messages(access.load_balancers_internal_only, stack_args(resources)) == []


@pytest.mark.parametrize("kind", ["ClusterIP", "NodePort", "ExternalName"])
def test_services_that_are_not_load_balancers_pass(kind: str) -> None:
    assert lb_messages("aws", service(kind)) == []


# no-rbac-escalation-verbs


@fails("no-rbac-escalation-verbs")
@pytest.mark.parametrize("verb", ["bind", "escalate", "impersonate"])
@pytest.mark.parametrize("type_", [ROLE, CLUSTER_ROLE])
def test_an_escalation_verb_is_reported(verb: str, type_: str) -> None:
    manifest = role(rule(["get", verb], ["roles", "users"], ["rbac.authorization.k8s.io", ""]))
    [message] = check(access.no_rbac_escalation_verbs, type_, manifest)
    assert f"rules[0] grants {verb}, which let its holders" in message
    assert "remove the verb" in message


def test_roles_without_escalation_verbs_pass() -> None:
    manifest = role(rule(["get", "list", "create", "delete"], ["jobs"]))
    assert check(access.no_rbac_escalation_verbs, ROLE, manifest) == []


# no-cluster-wide-secret-reads


@fails("no-cluster-wide-secret-reads")
@pytest.mark.parametrize(
    ("verbs", "resources", "groups"),
    [
        (["get"], ["secrets"], [""]),
        (["list", "watch"], ["*"], [""]),
        (["watch"], ["secrets"], ["*"]),
    ],
)
def test_a_clusterrole_reading_secrets_is_reported(
    verbs: list[str], resources: list[str], groups: list[str]
) -> None:
    manifest = role(rule(verbs, resources, groups), namespace=None, name="reader")
    [message] = check(access.no_cluster_wide_secret_reads, CLUSTER_ROLE, manifest)
    assert message.startswith("ClusterRole reader: rules[0] reads Secrets")
    assert "namespaced Role" in message


@pytest.mark.parametrize(
    ("type_", "verbs", "resources", "groups"),
    [
        (ROLE, ["get", "list"], ["secrets"], [""]),  # namespaced: that namespace only
        (CLUSTER_ROLE, ["create"], ["secrets"], [""]),  # writes, no reads
        (CLUSTER_ROLE, ["get"], ["secrets"], ["apps"]),  # another group has no secrets
        (CLUSTER_ROLE, ["get", "list"], ["configmaps"], [""]),
    ],
)
def test_what_is_not_a_cluster_wide_secret_read_passes(
    type_: str, verbs: list[str], resources: list[str], groups: list[str]
) -> None:
    manifest = role(rule(verbs, resources, groups), namespace=None)
    assert check(access.no_cluster_wide_secret_reads, type_, manifest) == []


# rolebindings-stay-in-their-team


def _team_stack(*extra: dict) -> list:
    """Two teams as mlstack declares them (namespace and engineer binding), plus `extra`."""
    found = []
    for team, group in (("vision", "lab-vision"), ("language", "lab-language")):
        labels = {"mlstack.dev/team": team}
        found.append(
            policy_resource(
                NAMESPACE, {"metadata": {"name": team, "labels": labels}}, name=f"ns-{team}"
            )
        )
        found.append(
            policy_resource(
                ROLE_BINDING,
                {
                    "metadata": {"name": "ml-engineer", "namespace": team, "labels": labels},
                    "roleRef": {"kind": "Role", "name": "ml-engineer"},
                    "subjects": [{"kind": "Group", "name": group}],
                },
                name=f"rb-{team}",
            )
        )
    found += [policy_resource(ROLE_BINDING, b, name=f"extra-{i}") for i, b in enumerate(extra)]
    return found


def test_the_teams_own_bindings_pass() -> None:
    own = binding("Role", "ml-engineer", [{"kind": "Group", "name": "lab-vision"}])
    sa = binding(
        "Role", "ml-engineer", [{"kind": "ServiceAccount", "name": "ci", "namespace": "vision"}]
    )
    outsider = binding("Role", "viewer", [{"kind": "Group", "name": "auditors"}])
    resources = _team_stack(own, sa, outsider)
    assert messages(access.rolebindings_stay_in_their_team, stack_args(resources)) == []


@fails("rolebindings-stay-in-their-team")
def test_another_teams_group_in_a_binding_is_reported() -> None:
    other = binding("Role", "ml-engineer", [{"kind": "Group", "name": "lab-language"}])
    [message] = messages(access.rolebindings_stay_in_their_team, stack_args(_team_stack(other)))
    assert message.startswith("RoleBinding vision/admins lets group 'lab-language' of team ")
    assert "language into team vision's namespace" in message
    assert "add 'lab-language' to that team's groups" in message


@fails("rolebindings-stay-in-their-team")
def test_another_teams_service_account_in_a_binding_is_reported() -> None:
    subject = {"kind": "ServiceAccount", "name": "workloads", "namespace": "language"}
    [message] = messages(
        access.rolebindings_stay_in_their_team,
        stack_args(_team_stack(binding("Role", "ml-engineer", [subject]))),
    )
    assert "lets service account language/workloads into team vision's namespace" in message


# no-node-port-services


@fails("no-node-port-services")
def test_a_node_port_service_is_reported() -> None:
    [message] = check(access.no_node_port_services, SERVICE, service("NodePort"))
    assert message.startswith("Service vision/serve is a NodePort Service")
    assert "use ClusterIP" in message


@pytest.mark.parametrize("kind", ["ClusterIP", "LoadBalancer", "ExternalName"])
def test_other_service_types_are_not_node_ports(kind: str) -> None:
    assert check(access.no_node_port_services, SERVICE, service(kind)) == []
