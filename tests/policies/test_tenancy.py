"""The tenancy manifests of policies.tenancy: schema-valid, and each behaviour from the config."""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import pytest

from mlstack.policies.tenancy import (
    ALLOW_INGRESS_POLICY,
    DENY_INGRESS_POLICY,
    ENGINEER_ROLE,
    LIMIT_RANGE_NAME,
    QUOTA_NAME,
    VIEWER_ROLE,
    engineer_rules,
    quantity,
    team_gpu_ceiling,
    team_manifests,
    viewer_rules,
)
from mlstack.stacks.names import (
    GPU_RESOURCE,
    MANAGED_BY,
    REGISTRY_PULL_SECRET,
    SERVICE_ACCOUNT_NAME,
    TEAM_LABEL,
)
from mlstack.stacks.schema import SUPPORTED_KUBERNETES, Platform, RbacRule, Team
from mlstack.stacks.stackfile import read_stack
from mlstack.stacks.validate import load_platform

LAB = load_platform(read_stack("onprem-lab").platform)
LAB_TEAMS = [t.name for t in LAB.teams]
RBAC = "rbac.authorization.k8s.io"
READ = {"get", "list", "watch"}
#: A Kubernetes quantity (apimachinery's resource.Quantity grammar).
QUANTITY = re.compile(
    r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+))?$"
)
#: Every role of `team_manifests`, bindings included (they need groups and viewer_groups).
ALL_ROLES = {
    "namespace",
    "quota",
    "limits",
    "service-account",
    "engineer-role",
    "viewer-role",
    "engineer-binding",
    "viewer-binding",
    "deny-ingress",
    "allow-ingress",
}


def _k8s(platform: Platform) -> str:
    return f"{platform.cluster.kubernetes_version}.0"


def _team(platform: Platform, name: str) -> Team:
    return next(t for t in platform.teams if t.name == name)


def _rich(cfg: dict[str, Any]) -> dict[str, Any]:
    """The lab config with every optional tenancy feature of the first team switched on."""
    cfg["tenancy"] = {
        "pod_security": "baseline",
        "monitoring_namespace": "observability",
        "cohorts": [{"name": "shared", "allow_overcommit": True}],
    }
    cfg["teams"][0].update(
        {
            "viewer_groups": ["lab-vision-viewers"],
            "cohort": "shared",
            "pod_security": "privileged",
            "allow_load_balancers": True,
            "extra_rules": [
                {
                    "api_groups": ["serving.kserve.io"],
                    "resources": ["inferenceservices"],
                    "verbs": ["get", "list", "create"],
                },
            ],
        }
    )
    cfg["teams"][0]["quota"]["borrowing_limit_gpus"] = {"a100": 4}
    return cfg


def _triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) for every permission the rules grant."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


# --- schema validity ------------------------------------------------------------------------


@pytest.mark.parametrize("team", LAB_TEAMS)
def test_every_manifest_of_a_lab_team_is_strictly_valid(team: str) -> None:
    manifests = team_manifests(
        LAB,
        _team(LAB, team),
        {"example.com/identity": "lab-" + team},
        pull_secret=REGISTRY_PULL_SECRET,
    )
    assert {"namespace", "quota", "limits", "engineer-binding"} <= set(manifests)
    for manifest in manifests.values():
        kubernetes_validate.validate(manifest, _k8s(LAB), strict=True)


@pytest.mark.parametrize("version", SUPPORTED_KUBERNETES)
def test_every_manifest_is_valid_at_every_supported_version(
    lab_config: dict[str, Any], version: str
) -> None:
    cfg = _rich(lab_config)
    cfg["cluster"]["kubernetes_version"] = version
    platform = load_platform(cfg)
    manifests = team_manifests(platform, platform.teams[0], {}, REGISTRY_PULL_SECRET)
    assert set(manifests) == ALL_ROLES
    for manifest in manifests.values():
        kubernetes_validate.validate(manifest, f"{version}.0", strict=True)


@pytest.mark.parametrize("team", LAB_TEAMS)
def test_every_object_is_in_the_team_namespace_and_labelled(team: str) -> None:
    manifests = team_manifests(LAB, _team(LAB, team))
    namespace = manifests.pop("namespace")
    assert namespace["metadata"]["name"] == team
    assert "namespace" not in namespace["metadata"]
    for manifest in [namespace, *manifests.values()]:
        labels = manifest["metadata"]["labels"]
        assert labels[TEAM_LABEL] == team
        assert MANAGED_BY.items() <= labels.items()
    for manifest in manifests.values():
        assert manifest["metadata"]["namespace"] == team
    assert not any(m["kind"].startswith("Cluster") for m in manifests.values())


def test_object_names_are_the_documented_ones() -> None:
    manifests = team_manifests(LAB, LAB.teams[0])
    assert {role: m["metadata"]["name"] for role, m in manifests.items()} == {
        "namespace": "vision",
        "quota": QUOTA_NAME,
        "limits": LIMIT_RANGE_NAME,
        "service-account": SERVICE_ACCOUNT_NAME,
        "engineer-role": ENGINEER_ROLE,
        "viewer-role": VIEWER_ROLE,
        "engineer-binding": ENGINEER_ROLE,
        "deny-ingress": DENY_INGRESS_POLICY,
        "allow-ingress": ALLOW_INGRESS_POLICY,
    }


# --- Pod Security -----------------------------------------------------------------------------


def _pod_security(namespace: dict[str, Any]) -> dict[str, str]:
    prefix = "pod-security.kubernetes.io/"
    return {
        k.removeprefix(prefix): v
        for k, v in namespace["metadata"]["labels"].items()
        if k.startswith(prefix)
    }


def test_namespaces_enforce_restricted_by_default_pinned_to_the_cluster_version() -> None:
    for team in LAB.teams:
        assert _pod_security(team_manifests(LAB, team)["namespace"]) == {
            "enforce": "restricted",
            "enforce-version": "v1.35",
            "audit": "restricted",
            "audit-version": "v1.35",
            "warn": "restricted",
            "warn-version": "v1.35",
        }


def test_the_tenancy_level_applies_and_a_team_override_wins(lab_config: dict[str, Any]) -> None:
    lab_config["tenancy"] = {"pod_security": "baseline"}
    lab_config["teams"][1]["pod_security"] = "privileged"
    lab_config["cluster"]["kubernetes_version"] = "1.31"
    platform = load_platform(lab_config)
    levels = {
        t.name: _pod_security(team_manifests(platform, t)["namespace"]) for t in platform.teams
    }
    for team, expected in (
        ("vision", "baseline"),
        ("language", "privileged"),
        ("research-infra", "baseline"),
    ):
        for mode in ("enforce", "audit", "warn"):
            assert levels[team][mode] == expected
            assert levels[team][f"{mode}-version"] == "v1.31"


def test_a_team_may_also_be_stricter_than_the_default(lab_config: dict[str, Any]) -> None:
    lab_config["tenancy"] = {"pod_security": "privileged"}
    lab_config["teams"][2]["pod_security"] = "restricted"
    platform = load_platform(lab_config)
    ns = team_manifests(platform, platform.teams[2])["namespace"]
    assert _pod_security(ns)["enforce"] == "restricted"
    assert _pod_security(team_manifests(platform, platform.teams[0])["namespace"])["enforce"] == (
        "privileged"
    )


# --- ResourceQuota ---------------------------------------------------------------------------


def _hard(platform: Platform, team: Team) -> dict[str, str]:
    return team_manifests(platform, team)["quota"]["spec"]["hard"]


@pytest.mark.parametrize(("team", "gpus"), [("vision", 12), ("language", 8), ("research-infra", 8)])
def test_without_a_cohort_the_gpu_quota_is_the_sum_of_the_team_quotas(team: str, gpus: int) -> None:
    t = _team(LAB, team)
    assert sum(t.quota.gpus.values()) == gpus
    assert team_gpu_ceiling(LAB, t) == gpus
    assert _hard(LAB, t)[f"requests.{GPU_RESOURCE}"] == str(gpus)


def test_the_quota_carries_cpu_memory_and_pods_of_the_team() -> None:
    assert _hard(LAB, _team(LAB, "research-infra")) == {
        "requests.cpu": "32",
        "requests.memory": "256Gi",
        f"requests.{GPU_RESOURCE}": "8",
        "pods": "200",
        "services.nodeports": "0",
        "services.loadbalancers": "0",
    }


def test_with_a_cohort_the_gpu_quota_includes_what_the_team_may_borrow(
    lab_config: dict[str, Any],
) -> None:
    lab_config["tenancy"] = {"cohorts": [{"name": "shared"}]}
    for team in lab_config["teams"]:
        team["cohort"] = "shared"
    # vision: a100 8 + borrow up to 4 = 12 of 16; l40s 4 + no limit = the pool, 12.
    lab_config["teams"][0]["quota"]["borrowing_limit_gpus"] = {"a100": 4}
    # language: a100 8 + a limit above the pool is capped at the pool, 16; l40s: the pool, 12.
    lab_config["teams"][1]["quota"]["borrowing_limit_gpus"] = {"a100": 100}
    # research-infra: a limit of 0 keeps the nominal quota (l40s 8) and borrows nothing.
    lab_config["teams"][2]["quota"]["borrowing_limit_gpus"] = {"l40s": 0, "a100": 2}
    platform = load_platform(lab_config)
    expected = {"vision": 12 + 12, "language": 16 + 12, "research-infra": 8 + 2}
    for team in platform.teams:
        assert team_gpu_ceiling(platform, team) == expected[team.name]
        assert _hard(platform, team)[f"requests.{GPU_RESOURCE}"] == str(expected[team.name])


def test_a_cohort_member_without_quota_may_borrow_every_pool(lab_config: dict[str, Any]) -> None:
    lab_config["tenancy"] = {"cohorts": [{"name": "shared"}]}
    lab_config["teams"].append({"name": "interns", "cohort": "shared"})
    platform = load_platform(lab_config)
    interns = _team(platform, "interns")
    assert team_gpu_ceiling(platform, interns) == 16 + 12
    assert _hard(platform, interns)[f"requests.{GPU_RESOURCE}"] == "28"


def test_a_team_without_gpu_quota_or_cohort_gets_no_gpus(lab_config: dict[str, Any]) -> None:
    lab_config["teams"].append({"name": "analytics"})
    platform = load_platform(lab_config)
    assert _hard(platform, _team(platform, "analytics"))[f"requests.{GPU_RESOURCE}"] == "0"


def test_load_balancers_are_forbidden_unless_allowed(lab_config: dict[str, Any]) -> None:
    lab_config["teams"][1]["allow_load_balancers"] = True
    platform = load_platform(lab_config)
    vision, language, _ = platform.teams
    assert _hard(platform, vision)["services.loadbalancers"] == "0"
    assert _hard(platform, vision)["services.nodeports"] == "0"
    assert "services.loadbalancers" not in _hard(platform, language)


def test_allowed_load_balancers_are_not_refused_by_the_node_port_quota(
    lab_config: dict[str, Any],
) -> None:
    lab_config["teams"][1]["allow_load_balancers"] = True
    platform = load_platform(lab_config)
    hard = _hard(platform, platform.teams[1])
    # A LoadBalancer Service allocates node ports too: the quota leaves both open.
    assert "services.nodeports" not in hard
    assert "services.loadbalancers" not in hard


def test_the_quota_sets_no_memory_limit(lab_config: dict[str, Any]) -> None:
    """Kueue admits on requests; the namespace caps requests, and limits stay the
    containers' own (the LimitRange default applies where a container sets none)."""
    lab_config["teams"][0]["allow_load_balancers"] = True
    platform = load_platform(lab_config)
    for team in platform.teams:
        assert not [k for k in _hard(platform, team) if k.startswith("limits.")], team.name


def test_every_quota_and_limit_value_is_a_kubernetes_quantity(lab_config: dict[str, Any]) -> None:
    lab_config["teams"][0]["quota"].update({"cpu": 7.5, "memory_gib": 0.75})
    lab_config["tenancy"] = {"default_request_cpu": 0.1, "default_request_memory_gib": 0.25}
    platform = load_platform(lab_config)
    manifests = team_manifests(platform, platform.teams[0])
    values = list(manifests["quota"]["spec"]["hard"].values())
    for limit in manifests["limits"]["spec"]["limits"]:
        values += [*limit["default"].values(), *limit["defaultRequest"].values()]
    assert values
    for value in values:
        assert isinstance(value, str) and QUANTITY.match(value), value
    assert manifests["quota"]["spec"]["hard"]["requests.cpu"] == "7500m"
    assert manifests["quota"]["spec"]["hard"]["requests.memory"] == "768Mi"


# --- quantities -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (16, "", "16"),
        (16.0, "", "16"),
        (0.25, "", "250m"),
        (2.5, "", "2500m"),
        (0.5, "Gi", "512Mi"),
        (1.5, "Gi", "1536Mi"),
        (4, "Gi", "4Gi"),
        (64.0, "Gi", "64Gi"),
    ],
)
def test_quantity(value: float, unit: str, expected: str) -> None:
    assert quantity(value, unit) == expected
    assert QUANTITY.match(expected)


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [(0.0004, "", "1m"), (0.0004, "Gi", "1Mi"), (1e-9, "", "1m"), (1e-9, "Gi", "1Mi")],
)
def test_a_positive_quantity_never_becomes_zero(value: float, unit: str, expected: str) -> None:
    assert quantity(value, unit) == expected


def test_a_tiny_quota_or_default_stays_positive(lab_config: dict[str, Any]) -> None:
    lab_config["teams"][0]["quota"].update({"cpu": 0.0004, "memory_gib": 0.0004})
    lab_config["tenancy"] = {"default_request_cpu": 0.0001, "default_request_memory_gib": 0.0001}
    platform = load_platform(lab_config)
    manifests = team_manifests(platform, platform.teams[0])
    hard = manifests["quota"]["spec"]["hard"]
    assert (hard["requests.cpu"], hard["requests.memory"]) == ("1m", "1Mi")
    (limit,) = manifests["limits"]["spec"]["limits"]
    assert limit["defaultRequest"] == {"cpu": "1m", "memory": "1Mi"}


def test_limit_range_defaults_come_from_the_tenancy_config(lab_config: dict[str, Any]) -> None:
    default = team_manifests(LAB, LAB.teams[0])["limits"]["spec"]["limits"]
    assert default == [
        {
            "type": "Container",
            "defaultRequest": {"cpu": "250m", "memory": "512Mi"},
            "default": {"cpu": "2", "memory": "4Gi"},
        }
    ]
    lab_config["tenancy"] = {
        "default_request_cpu": 1,
        "default_request_memory_gib": 2,
        "default_limit_cpu": 4.5,
        "default_limit_memory_gib": 8,
    }
    platform = load_platform(lab_config)
    (limit,) = team_manifests(platform, platform.teams[0])["limits"]["spec"]["limits"]
    assert limit["defaultRequest"] == {"cpu": "1", "memory": "2Gi"}
    assert limit["default"] == {"cpu": "4500m", "memory": "8Gi"}


# --- ServiceAccount ---------------------------------------------------------------------------


def test_service_account_takes_the_backend_annotations_and_the_pull_secret() -> None:
    annotations = {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/vision"}
    sa = team_manifests(LAB, LAB.teams[0], annotations, pull_secret="registry-pull")[
        "service-account"
    ]
    assert sa["metadata"]["annotations"] == annotations
    assert sa["imagePullSecrets"] == [{"name": "registry-pull"}]
    assert sa["automountServiceAccountToken"] is False


def test_service_account_without_identity_or_registry_credentials() -> None:
    sa = team_manifests(LAB, LAB.teams[0])["service-account"]
    assert "annotations" not in sa["metadata"]
    assert "imagePullSecrets" not in sa
    assert sa["automountServiceAccountToken"] is False


# --- RBAC -------------------------------------------------------------------------------------


def _roles(platform: Platform, team: Team) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    manifests = team_manifests(platform, team)
    return manifests["engineer-role"]["rules"], manifests["viewer-role"]["rules"]


def test_engineers_run_jobs_and_jobsets_and_read_pods_and_logs() -> None:
    engineer, _ = _roles(LAB, LAB.teams[0])
    granted = _triples(engineer)
    for verb in ("create", "get", "list", "watch", "delete"):
        assert ("batch", "jobs", verb) in granted
        assert ("jobset.x-k8s.io", "jobsets", verb) in granted
    for verb in READ:
        assert ("", "pods", verb) in granted
        assert ("", "pods/log", verb) in granted
        assert ("kueue.x-k8s.io", "workloads", verb) in granted
        assert ("kueue.x-k8s.io", "localqueues", verb) in granted
    assert engineer == engineer_rules()


@pytest.mark.parametrize("role", [ENGINEER_ROLE, VIEWER_ROLE])
def test_no_role_reaches_secrets_exec_or_wildcards(role: str) -> None:
    engineer, viewer = _roles(LAB, LAB.teams[0])
    rules = engineer if role == ENGINEER_ROLE else viewer
    for group, resource, verb in _triples(rules):
        assert "*" not in (group, resource, verb)
        assert resource != "secrets"
        assert resource not in ("pods/exec", "pods/attach", "pods/portforward", "pods/proxy")
        assert resource not in ("roles", "rolebindings", "serviceaccounts/token")
        assert verb not in ("escalate", "bind", "impersonate")
    for rule in rules:
        assert set(rule) == {"apiGroups", "resources", "verbs"}
        assert rule["apiGroups"] and rule["resources"] and rule["verbs"]


def test_engineers_cannot_create_pods_directly() -> None:
    engineer, _ = _roles(LAB, LAB.teams[0])
    assert ("", "pods", "create") not in _triples(engineer)


def test_the_viewer_is_read_only_and_sees_the_team_work() -> None:
    _, viewer = _roles(LAB, LAB.teams[0])
    assert viewer == viewer_rules()
    granted = _triples(viewer)
    assert {verb for _, _, verb in granted} == READ
    for what in (
        ("batch", "jobs"),
        ("jobset.x-k8s.io", "jobsets"),
        ("kueue.x-k8s.io", "workloads"),
        ("", "pods"),
        ("", "pods/log"),
    ):
        assert {(*what, v) for v in READ} <= granted


@pytest.mark.parametrize("role", [ENGINEER_ROLE, VIEWER_ROLE])
def test_both_roles_read_the_namespace_quota_and_limits(role: str) -> None:
    """So a team can see why a pod is refused or what defaults its containers get."""
    engineer, viewer = _roles(LAB, LAB.teams[0])
    granted = _triples(engineer if role == ENGINEER_ROLE else viewer)
    for resource in ("resourcequotas", "limitranges"):
        assert {("", resource, verb) for verb in READ} <= granted
        assert not {("", resource, v) for v in ("create", "update", "patch", "delete")} & granted


def test_the_viewer_reads_configmaps_and_only_engineers_change_them() -> None:
    engineer, viewer = _roles(LAB, LAB.teams[0])
    assert {("", "configmaps", verb) for verb in READ} <= _triples(viewer)
    writes = {("", "configmaps", v) for v in ("create", "update", "patch", "delete")}
    assert writes <= _triples(engineer)
    assert not writes & _triples(viewer)


def test_bindings_only_for_the_groups_that_are_set(lab_config: dict[str, Any]) -> None:
    lab_config["teams"][0]["viewer_groups"] = ["lab-vision-viewers", "lab-auditors"]
    lab_config["teams"][1]["groups"] = []
    lab_config["teams"][2]["groups"] = []
    lab_config["teams"][2]["viewer_groups"] = ["lab-auditors"]
    platform = load_platform(lab_config)
    vision, language, infra = (team_manifests(platform, t) for t in platform.teams)
    assert {"engineer-binding", "viewer-binding"} <= set(vision)
    assert not {"engineer-binding", "viewer-binding"} & set(language)
    assert "engineer-binding" not in infra and "viewer-binding" in infra
    # The Roles exist either way: the bindings are what the groups change.
    for manifests in (vision, language, infra):
        assert {"engineer-role", "viewer-role"} <= set(manifests)


@pytest.mark.parametrize(
    ("binding", "role", "groups"),
    [
        ("engineer-binding", ENGINEER_ROLE, ["lab-infra", "lab-admins"]),
        ("viewer-binding", VIEWER_ROLE, ["lab-auditors"]),
    ],
)
def test_bindings_bind_groups_to_the_namespaced_role(
    lab_config: dict[str, Any], binding: str, role: str, groups: list[str]
) -> None:
    lab_config["teams"][2]["viewer_groups"] = ["lab-auditors"]
    platform = load_platform(lab_config)
    manifests = team_manifests(platform, platform.teams[2])
    rb = manifests[binding]
    assert rb["kind"] == "RoleBinding"
    assert rb["metadata"]["namespace"] == "research-infra"
    assert rb["roleRef"] == {"apiGroup": RBAC, "kind": "Role", "name": role}
    target = manifests[binding.replace("binding", "role")]
    assert target["metadata"]["name"] == role
    assert target["metadata"]["namespace"] == rb["metadata"]["namespace"]
    assert rb["subjects"] == [{"apiGroup": RBAC, "kind": "Group", "name": g} for g in groups]


def test_extra_rules_are_appended_to_the_engineer_role(lab_config: dict[str, Any]) -> None:
    lab_config["teams"][0]["extra_rules"] = [
        {
            "api_groups": ["serving.kserve.io"],
            "resources": ["inferenceservices"],
            "verbs": ["get", "create"],
        },
        {"resources": ["persistentvolumeclaims"], "verbs": ["get", "list"]},
    ]
    platform = load_platform(lab_config)
    engineer, viewer = _roles(platform, platform.teams[0])
    base = engineer_rules()
    assert engineer[: len(base)] == base
    assert engineer[len(base) :] == [
        {
            "apiGroups": ["serving.kserve.io"],
            "resources": ["inferenceservices"],
            "verbs": ["get", "create"],
        },
        {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get", "list"]},
    ]
    assert viewer == viewer_rules()
    # Other teams keep the base role.
    assert _roles(platform, platform.teams[1])[0] == base
    assert engineer_rules((RbacRule(resources=("pods",), verbs=("get",)),))[-1] == {
        "apiGroups": [""],
        "resources": ["pods"],
        "verbs": ["get"],
    }


# --- NetworkPolicies --------------------------------------------------------------------------


def test_ingress_is_denied_by_default() -> None:
    deny = team_manifests(LAB, LAB.teams[0])["deny-ingress"]
    assert deny["kind"] == "NetworkPolicy"
    # An empty podSelector selects every pod; Ingress with no rules allows nothing in.
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}


@pytest.mark.parametrize("monitoring", [None, "observability"])
def test_ingress_is_allowed_from_the_namespace_and_the_monitoring_namespace(
    lab_config: dict[str, Any], monitoring: str | None
) -> None:
    if monitoring:
        lab_config["tenancy"] = {"monitoring_namespace": monitoring}
    platform = load_platform(lab_config)
    allow = team_manifests(platform, platform.teams[1])["allow-ingress"]
    spec = allow["spec"]
    assert spec["podSelector"] == {}
    assert spec["policyTypes"] == ["Ingress"]
    peers = [peer for rule in spec["ingress"] for peer in rule["from"]]
    assert all(set(rule) == {"from"} for rule in spec["ingress"])
    assert peers == [
        # A podSelector without a namespaceSelector: pods of this namespace only.
        {"podSelector": {}},
        {
            "namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": monitoring or "monitoring"}
            }
        },
    ]


def test_no_policy_restricts_egress() -> None:
    manifests = team_manifests(LAB, LAB.teams[0])
    for role in ("deny-ingress", "allow-ingress"):
        assert "Egress" not in manifests[role]["spec"]["policyTypes"]
        assert "egress" not in manifests[role]["spec"]
