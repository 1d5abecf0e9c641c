"""Kueue objects of policies.queues: valid against the real v1beta2 CRD schemas, strictly, and
built from the pools and quotas of the config.

Each ClusterQueue has two resource groups: CPU and memory on the label-less `default` flavor, at
the team's totals (once, so Kueue admits no more than the namespace ResourceQuota allows), and
GPUs on one flavor per GPU pool (the pools the team has quota in; with a cohort every GPU pool).
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
from crd_schema import (
    KINDS,
    KUEUE_API_VERSION,
    KueueValidationError,
    kueue_problems,
    raw_schema,
    strict_schema,
    validate_kueue,
)
from jsonschema import Draft4Validator
from jsonschema.exceptions import SchemaError

from mlstack.policies.queues import (
    PRIORITIES,
    cluster_queue_manifest,
    default_flavor_manifest,
    flavor_manifest,
    local_queue_manifest,
    priority_class_manifest,
    workload_priority_class_manifest,
)
from mlstack.policies.tenancy import resource_quota_manifest, team_gpu_ceiling
from mlstack.stacks.errors import ConfigError
from mlstack.stacks.names import (
    ALLOW_OVERCOMMIT_ANNOTATION,
    CAPACITY_LABEL,
    DEFAULT_FLAVOR,
    GPU_RESOURCE,
    LOCAL_QUEUE_NAME,
    MANAGED_BY,
    MAX_GPUS_ANNOTATION,
    POOL_LABEL,
    TEAM_LABEL,
)
from mlstack.stacks.schema import Platform, Team
from mlstack.stacks.stackfile import read_stack
from mlstack.stacks.validate import load_platform

LAB_RAW = read_stack("onprem-lab").platform
LAB = load_platform(LAB_RAW)
CPU_MEMORY = ["cpu", "memory"]
GPUS = [GPU_RESOURCE]


def _cohorts_config() -> dict[str, Any]:
    """The lab with cohorts: vision and language share (overcommit allowed, vision borrows at
    most 4 a100), research-infra and a quota-less team in a strict cohort, a team without GPUs
    or cohort (fractional CPU and memory), custom taints."""
    cfg = copy.deepcopy(LAB_RAW)
    cfg["tenancy"] = {"cohorts": [{"name": "shared", "allow_overcommit": True}, {"name": "strict"}]}
    vision, language, infra = cfg["teams"]
    vision["cohort"] = language["cohort"] = "shared"
    vision["quota"]["borrowing_limit_gpus"] = {"a100": 4}
    language["quota"]["borrowing_limit_gpus"] = {"a100": 0, "l40s": 2}
    infra["cohort"] = "strict"
    cfg["teams"].append({"name": "interns", "cohort": "strict"})
    cfg["teams"].append({"name": "analytics", "quota": {"cpu": 7.5, "memory_gib": 0.75}})
    cfg["node_pools"][2]["taints"] = [
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
        {"key": "lab.internal/maintenance", "effect": "PreferNoSchedule"},
    ]
    return cfg


COHORTS = load_platform(_cohorts_config())
PLATFORMS = {"lab": LAB, "cohorts": COHORTS}


def _team(platform: Platform, name: str) -> Team:
    return next(t for t in platform.teams if t.name == name)


def kueue_manifests(platform: Platform) -> list[dict[str, Any]]:
    """Every Kueue object policies.queues builds for `platform` (as policies.component declares
    them: a flavor per GPU pool plus the default one)."""
    return [
        default_flavor_manifest(),
        *(flavor_manifest(pool) for pool in platform.gpu_pools),
        *(cluster_queue_manifest(platform, team) for team in platform.teams),
        *(local_queue_manifest(team) for team in platform.teams),
        *(workload_priority_class_manifest(p) for p in PRIORITIES),
    ]


def _declared_flavors(platform: Platform) -> dict[str, dict[str, Any]]:
    return {
        m["metadata"]["name"]: m for m in kueue_manifests(platform) if m["kind"] == "ResourceFlavor"
    }


def _groups(cq: dict[str, Any]) -> list[dict[str, Any]]:
    return cq["spec"]["resourceGroups"]


def _gpu_flavors(cq: dict[str, Any]) -> list[dict[str, Any]]:
    """The flavors of the GPU group; none when the queue has no GPU group."""
    groups = [g for g in _groups(cq) if g["coveredResources"] == GPUS]
    assert len(groups) <= 1
    return groups[0]["flavors"] if groups else []


def _gpu_quota(cq: dict[str, Any]) -> dict[str, Any]:
    """GPU pool flavor -> the nominal GPU quota the queue holds on it, in the queue's order."""
    return {f["name"]: _resource(f, GPU_RESOURCE)["nominalQuota"] for f in _gpu_flavors(cq)}


def _admits(cq: dict[str, Any], resource: str) -> list[tuple[str, dict[str, Any]]]:
    """(flavor, quota entry) for every place in the queue that holds quota of `resource`."""
    return [
        (flavor["name"], entry)
        for group in _groups(cq)
        for flavor in group["flavors"]
        for entry in flavor["resources"]
        if entry["name"] == resource
    ]


def _resource(flavor: dict[str, Any], name: str) -> dict[str, Any]:
    (resource,) = [r for r in flavor["resources"] if r["name"] == name]
    return resource


def webhook_problems(cq: dict[str, Any]) -> list[str]:
    """What Kueue's ClusterQueue admission webhook (validateResourceGroups) refuses beyond the
    CRD schema: a resource covered by two groups, a flavor in two groups, a flavor whose
    resources are not the group's coveredResources in order."""
    problems: list[str] = []
    seen_resources: set[str] = set()
    seen_flavors: set[str] = set()
    for i, group in enumerate(_groups(cq)):
        covered = group["coveredResources"]
        for name in covered:
            if name in seen_resources:
                problems.append(f"resourceGroups[{i}]: {name} is covered twice")
            seen_resources.add(name)
        for flavor in group["flavors"]:
            if flavor["name"] in seen_flavors:
                problems.append(f"resourceGroups[{i}]: flavor {flavor['name']} is listed twice")
            seen_flavors.add(flavor["name"])
            if [r["name"] for r in flavor["resources"]] != covered:
                problems.append(
                    f"resourceGroups[{i}].flavors[{flavor['name']}]: resources do not match "
                    "coveredResources"
                )
    return problems


# --- the validator itself ---------------------------------------------------------------------


def _valid_cluster_queue() -> dict[str, Any]:
    return {
        "apiVersion": KUEUE_API_VERSION,
        "kind": "ClusterQueue",
        "metadata": {"name": "team-a", "labels": {"example.com/team": "a"}},
        "spec": {
            "namespaceSelector": {},
            "resourceGroups": [
                {
                    "coveredResources": ["cpu", "memory"],
                    "flavors": [
                        {
                            "name": "default-flavor",
                            "resources": [
                                {"name": "cpu", "nominalQuota": 9},
                                {"name": "memory", "nominalQuota": "36Gi"},
                            ],
                        }
                    ],
                }
            ],
        },
    }


def test_the_validator_accepts_an_upstream_style_cluster_queue() -> None:
    assert kueue_problems(_valid_cluster_queue()) == []


def test_the_v1beta1_cohort_field_is_rejected_although_the_raw_schema_allows_it() -> None:
    cq = _valid_cluster_queue()
    cq["spec"]["cohort"] = "shared"
    schema = copy.deepcopy(raw_schema("ClusterQueue"))
    del schema["properties"]["status"]
    assert Draft4Validator(schema).is_valid(cq), "CRD schemas leave unknown fields open"
    with pytest.raises(KueueValidationError, match="'cohort' was unexpected"):
        validate_kueue(cq)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("spec", "queueingStrategy"), "FIFO", "is not one of"),
        (("spec", "preemption", "withinClusterQueue"), "Always", "is not one of"),
        (("spec", "stopPolicy"), "Stop", "is not one of"),
    ],
)
def test_a_wrong_enum_value_is_rejected(path: tuple[str, ...], value: str, message: str) -> None:
    cq = _valid_cluster_queue()
    node = cq
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    with pytest.raises(KueueValidationError, match=message):
        validate_kueue(cq)


def test_unknown_fields_are_rejected_at_every_depth() -> None:
    cq = _valid_cluster_queue()
    cq["extra"] = 1
    cq["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]["limit"] = 3
    problems = kueue_problems(cq)
    assert any("'extra' was unexpected" in p for p in problems)
    assert any(
        p.startswith("spec.resourceGroups[0].flavors[0].resources[0]") and "'limit'" in p
        for p in problems
    )


def test_the_strict_schemas_close_every_object_with_properties_and_keep_spec() -> None:
    def open_objects(schema: Any, path: str) -> list[str]:
        if not isinstance(schema, dict):
            return []
        found = [path] if "properties" in schema and "additionalProperties" not in schema else []
        for name, sub in schema.get("properties", {}).items():
            found += open_objects(sub, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            found += open_objects(schema.get(key), f"{path}[{key}]")
        return found

    for kind in KINDS:
        schema = strict_schema(kind)
        assert open_objects(schema, kind) == []
        assert "status" not in schema["properties"]
        assert schema["properties"].keys() - {"metadata"} <= raw_schema(kind)["properties"].keys()
    assert "spec" in strict_schema("ClusterQueue")["properties"]
    assert "value" in strict_schema("WorkloadPriorityClass")["properties"]


def test_the_upstream_status_pattern_is_why_status_is_dropped() -> None:
    with pytest.raises(SchemaError, match="regex"):
        Draft4Validator.check_schema(raw_schema("ClusterQueue"))
    Draft4Validator.check_schema(strict_schema("ClusterQueue"))


def test_the_validator_checks_metadata_like_the_api_server() -> None:
    lq = local_queue_manifest(LAB.teams[0])
    assert kueue_problems(lq) == []
    del lq["metadata"]["namespace"]
    lq["metadata"]["name"] = "Default_Queue"
    lq["metadata"]["labels"] = {"example.com/n": 1, "bad key!": "x"}
    lq["metadata"]["annotations"] = {"note": ["not", "a", "string"]}
    lq["metadata"]["owner"] = "me"
    problems = "\n".join(kueue_problems(lq))
    for expected in (
        "metadata.owner: unknown field",
        "not a DNS-1123 subdomain",
        "a namespaced kind needs one",
        "1 is not a string",
        "key 'bad key!'",
        "metadata.annotations[note]",
    ):
        assert expected in problems
    cq = cluster_queue_manifest(LAB, LAB.teams[0])
    cq["metadata"]["namespace"] = "vision"
    assert kueue_problems(cq) == ["metadata.namespace: the kind is cluster-scoped"]


def test_the_validator_checks_int32_api_version_kind_and_cel_rules() -> None:
    wpc = workload_priority_class_manifest(PRIORITIES[0])
    wpc["value"] = 2**31
    assert any("int32" in p for p in kueue_problems(wpc))
    wpc["value"] = 1000.0
    assert any("is not of type 'integer'" in p for p in kueue_problems(wpc))
    old = _valid_cluster_queue()
    old["apiVersion"] = "kueue.x-k8s.io/v1beta1"
    assert kueue_problems(old) == [
        "apiVersion: 'kueue.x-k8s.io/v1beta1' is not kueue.x-k8s.io/v1beta2"
    ]
    assert kueue_problems({**old, "kind": "Workload"})[0].startswith("kind: 'Workload'")
    borrowing = _valid_cluster_queue()
    borrowing["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]["borrowingLimit"] = 2
    assert kueue_problems(borrowing) == ["spec: borrowingLimit must be nil when cohort is empty"]
    borrowing["spec"]["cohortName"] = "shared"
    assert kueue_problems(borrowing) == []
    short = _valid_cluster_queue()
    short["spec"]["resourceGroups"][0]["flavors"][0]["resources"].pop()
    assert "same number of resources" in kueue_problems(short)[0]


# --- every object is valid --------------------------------------------------------------------


@pytest.mark.parametrize("config", PLATFORMS)
def test_every_kueue_object_is_valid_against_the_v1beta2_crd(config: str) -> None:
    manifests = kueue_manifests(PLATFORMS[config])
    assert {m["kind"] for m in manifests} == {
        "ResourceFlavor",
        "ClusterQueue",
        "LocalQueue",
        "WorkloadPriorityClass",
    }
    for manifest in manifests:
        assert manifest["apiVersion"] == KUEUE_API_VERSION
        validate_kueue(manifest)


@pytest.mark.parametrize("config", PLATFORMS)
def test_every_cluster_queue_passes_the_kueue_webhook(config: str) -> None:
    """Kueue's webhook: a resource and a flavor belong to one group, and each flavor lists
    exactly the group's coveredResources, in their order."""
    platform = PLATFORMS[config]
    for team in platform.teams:
        cq = cluster_queue_manifest(platform, team)
        assert webhook_problems(cq) == [], team.name
        covered = [g["coveredResources"] for g in _groups(cq)]
        assert covered in ([CPU_MEMORY, GPUS], [CPU_MEMORY]), team.name


def test_the_webhook_check_catches_what_kueue_refuses() -> None:
    cq = cluster_queue_manifest(LAB, _team(LAB, "vision"))
    assert webhook_problems(cq) == []
    cpu, gpu = _groups(cq)
    gpu["coveredResources"].append("cpu")
    gpu["flavors"][0]["resources"].append({"name": "cpu", "nominalQuota": 1})
    gpu["flavors"].append(copy.deepcopy(cpu["flavors"][0]))
    cpu["flavors"][0]["resources"].reverse()
    problems = "\n".join(webhook_problems(cq))
    assert "cpu is covered twice" in problems
    assert "flavor default is listed twice" in problems
    assert "flavors[default]: resources do not match" in problems


def test_priority_classes_are_valid_kubernetes_objects() -> None:
    for p in PRIORITIES:
        manifest = priority_class_manifest(p)
        kubernetes_validate.validate(manifest, "1.33.0", strict=True)
        assert manifest["globalDefault"] is False
        assert manifest["preemptionPolicy"] == "PreemptLowerPriority"
        # User-defined PriorityClasses may not exceed one billion.
        assert 0 < manifest["value"] <= 1_000_000_000


# --- ResourceFlavors --------------------------------------------------------------------------


@pytest.mark.parametrize("config", PLATFORMS)
def test_a_flavor_per_gpu_pool_and_the_default_one_and_none_for_cpu_pools(config: str) -> None:
    platform = PLATFORMS[config]
    assert list(_declared_flavors(platform)) == [
        DEFAULT_FLAVOR,
        *(p.name for p in platform.gpu_pools),
    ]
    assert "cpu" not in _declared_flavors(platform)


def test_the_default_flavor_selects_no_nodes() -> None:
    assert DEFAULT_FLAVOR == "default"
    flavor = default_flavor_manifest()
    assert flavor == {
        "apiVersion": KUEUE_API_VERSION,
        "kind": "ResourceFlavor",
        "metadata": {"name": "default", "labels": MANAGED_BY},
        "spec": {},
    }
    validate_kueue(flavor)


@pytest.mark.parametrize("config", PLATFORMS)
def test_flavors_select_the_pool_nodes_and_carry_its_taints(config: str) -> None:
    platform = PLATFORMS[config]
    for pool in platform.gpu_pools:
        flavor = flavor_manifest(pool)
        assert flavor["metadata"]["name"] == pool.name
        assert flavor["metadata"]["labels"] == MANAGED_BY
        spec = flavor["spec"]
        assert spec["nodeLabels"] == {
            POOL_LABEL: pool.name,
            CAPACITY_LABEL: pool.capacity.value,
        }
        assert spec["nodeLabels"].items() <= pool.node_labels.items()
        taints = [
            {"key": t.key, "value": t.value, "effect": t.effect.value}
            for t in pool.effective_taints
        ]
        assert spec.get("nodeTaints", []) == taints
        assert "tolerations" not in spec


def test_lab_flavors_in_detail() -> None:
    flavors = _declared_flavors(LAB)
    assert flavors["a100"]["spec"] == {
        "nodeLabels": {POOL_LABEL: "a100", CAPACITY_LABEL: "on-demand"},
        "nodeTaints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
    }
    assert flavors["a100"]["metadata"]["annotations"] == {MAX_GPUS_ANNOTATION: "16"}
    assert flavors["l40s"]["spec"]["nodeLabels"] == {
        POOL_LABEL: "l40s",
        CAPACITY_LABEL: "on-demand",
    }
    assert flavors["l40s"]["metadata"]["annotations"] == {MAX_GPUS_ANNOTATION: "12"}


def test_custom_taints_replace_the_gpu_default_on_the_flavor() -> None:
    l40s = flavor_manifest(COHORTS.pool("l40s"))
    assert l40s["spec"]["nodeTaints"] == [
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
        {"key": "lab.internal/maintenance", "value": "", "effect": "PreferNoSchedule"},
    ]
    validate_kueue(l40s)


@pytest.mark.parametrize("config", PLATFORMS)
def test_gpu_flavors_carry_the_pool_maximum(config: str) -> None:
    platform = PLATFORMS[config]
    flavors = _declared_flavors(platform)
    for pool in platform.gpu_pools:
        assert flavors[pool.name]["metadata"]["annotations"] == {
            MAX_GPUS_ANNOTATION: str(pool.max_gpus)
        }
        assert pool.max_gpus == pool.gpus * pool.max_nodes > 0
    assert "annotations" not in flavors[DEFAULT_FLAVOR]["metadata"]


@pytest.mark.parametrize("index", [0, 1])
def test_a_pool_named_default_is_refused(lab_config: dict[str, Any], index: int) -> None:
    """`default` is the CPU and memory flavor: a pool of that name would clash with it."""
    old = lab_config["node_pools"][index]["name"]
    lab_config["node_pools"][index]["name"] = "default"
    for team in lab_config["teams"]:
        gpus = team["quota"]["gpus"]
        if old in gpus:
            gpus["default"] = gpus.pop(old)
    del lab_config["workloads"]  # its job names the pool too
    with pytest.raises(ConfigError) as exc:
        load_platform(lab_config)
    assert [p.path for p in exc.value.problems] == [f"platform.node_pools[{index}].name"]
    assert "Kueue flavor" in str(exc.value)


def test_a_platform_without_pools_is_refused(lab_config: dict[str, Any]) -> None:
    lab_config["node_pools"] = []
    lab_config["teams"] = [{"name": "solo"}]
    with pytest.raises(ConfigError) as exc:
        load_platform(lab_config)
    assert [p.path for p in exc.value.problems] == ["platform.node_pools"]


# --- ClusterQueues ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("team", "gpus"),
    [
        ("vision", {"a100": 8, "l40s": 4}),
        ("language", {"a100": 8}),
        ("research-infra", {"l40s": 8}),
    ],
)
def test_a_lab_queue_has_cpu_memory_on_default_and_gpus_on_the_pools_with_quota(
    team: str, gpus: dict[str, int]
) -> None:
    cq = cluster_queue_manifest(LAB, _team(LAB, team))
    cpu_memory, _ = _groups(cq)
    assert [f["name"] for f in cpu_memory["flavors"]] == [DEFAULT_FLAVOR]
    assert _gpu_quota(cq) == gpus


@pytest.mark.parametrize("config", PLATFORMS)
def test_cpu_and_memory_are_admitted_once_at_the_namespace_quota(config: str) -> None:
    """CPU and memory sit on one flavor only, at the ResourceQuota's requests: Kueue counts
    quota per flavor, so a second flavor holding them would admit the team's total twice."""
    platform = PLATFORMS[config]
    for team in platform.teams:
        cq = cluster_queue_manifest(platform, team)
        hard = resource_quota_manifest(platform, team)["spec"]["hard"]
        for resource in CPU_MEMORY:
            ((flavor, entry),) = _admits(cq, resource)
            assert flavor == DEFAULT_FLAVOR, team.name
            assert entry["nominalQuota"] == hard[f"requests.{resource}"], team.name


def test_fractional_cpu_and_memory_match_the_namespace_quota() -> None:
    cq = cluster_queue_manifest(COHORTS, _team(COHORTS, "analytics"))
    (cpu_memory,) = _groups(cq)
    assert cpu_memory["flavors"] == [
        {
            "name": DEFAULT_FLAVOR,
            "resources": [
                {"name": "cpu", "nominalQuota": "7500m"},
                {"name": "memory", "nominalQuota": "768Mi"},
            ],
        }
    ]


@pytest.mark.parametrize("config", PLATFORMS)
def test_gpus_are_held_only_on_gpu_pool_flavors(config: str) -> None:
    platform = PLATFORMS[config]
    gpu_pools = [p.name for p in platform.gpu_pools]
    for team in platform.teams:
        cq = cluster_queue_manifest(platform, team)
        flavors = [flavor for flavor, _ in _admits(cq, GPU_RESOURCE)]
        assert flavors == [p for p in gpu_pools if p in flavors], team.name
        assert DEFAULT_FLAVOR not in flavors


def test_a_team_without_gpu_quota_or_cohort_has_only_the_cpu_memory_group() -> None:
    team = _team(COHORTS, "analytics")
    assert not team.quota.gpus and team.cohort is None
    cq = cluster_queue_manifest(COHORTS, team)
    assert [g["coveredResources"] for g in _groups(cq)] == [CPU_MEMORY]
    assert _admits(cq, GPU_RESOURCE) == []
    assert resource_quota_manifest(COHORTS, team)["spec"]["hard"][f"requests.{GPU_RESOURCE}"] == (
        "0"
    )
    validate_kueue(cq)


def test_a_cohort_queue_may_admit_to_every_gpu_pool() -> None:
    expected = {
        "vision": {"a100": 8, "l40s": 4},
        "language": {"a100": 8, "l40s": 0},
        "research-infra": {"a100": 0, "l40s": 8},
        "interns": {"a100": 0, "l40s": 0},
        "analytics": {},
    }
    assert {t.name: _gpu_quota(cluster_queue_manifest(COHORTS, t)) for t in COHORTS.teams} == (
        expected
    )
    for team in COHORTS.teams:
        if team.cohort is not None:
            assert list(_gpu_quota(cluster_queue_manifest(COHORTS, team))) == [
                p.name for p in COHORTS.gpu_pools
            ]


def test_a_platform_with_only_cpu_pools_queues_cpu_and_memory(lab_config: dict[str, Any]) -> None:
    lab_config["node_pools"] = lab_config["node_pools"][:1]
    lab_config["tenancy"] = {"cohorts": [{"name": "shared"}]}
    lab_config["teams"] = [{"name": "solo"}, {"name": "pair", "cohort": "shared"}]
    del lab_config["workloads"]
    platform = load_platform(lab_config)
    assert list(_declared_flavors(platform)) == [DEFAULT_FLAVOR]
    for team in platform.teams:
        cq = cluster_queue_manifest(platform, team)
        assert [g["coveredResources"] for g in _groups(cq)] == [CPU_MEMORY], team.name
        validate_kueue(cq)
        assert webhook_problems(cq) == []
    for manifest in kueue_manifests(platform):
        validate_kueue(manifest)


@pytest.mark.parametrize("config", PLATFORMS)
def test_each_gpu_flavor_has_the_team_nominal_quota(config: str) -> None:
    platform = PLATFORMS[config]
    for team in platform.teams:
        quota = _gpu_quota(cluster_queue_manifest(platform, team))
        listed = [p.name for p in platform.gpu_pools if team.quota.gpus.get(p.name) or team.cohort]
        assert list(quota) == listed, team.name
        for pool, nominal in quota.items():
            assert nominal == team.quota.gpus.get(pool, 0)
            assert isinstance(nominal, int)


def test_lab_vision_queue_in_detail() -> None:
    cq = cluster_queue_manifest(LAB, _team(LAB, "vision"))
    assert cq["metadata"] == {
        "name": "vision",
        "labels": {**MANAGED_BY, TEAM_LABEL: "vision"},
    }
    assert cq["spec"] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "vision"}},
        "queueingStrategy": "BestEffortFIFO",
        "preemption": {"withinClusterQueue": "LowerPriority", "reclaimWithinCohort": "Any"},
        "resourceGroups": [
            {
                "coveredResources": ["cpu", "memory"],
                "flavors": [
                    {
                        "name": "default",
                        "resources": [
                            {"name": "cpu", "nominalQuota": "64"},
                            {"name": "memory", "nominalQuota": "512Gi"},
                        ],
                    }
                ],
            },
            {
                "coveredResources": [GPU_RESOURCE],
                "flavors": [
                    {"name": "a100", "resources": [{"name": GPU_RESOURCE, "nominalQuota": 8}]},
                    {"name": "l40s", "resources": [{"name": GPU_RESOURCE, "nominalQuota": 4}]},
                ],
            },
        ],
    }


def test_without_a_cohort_there_is_no_cohort_borrowing_or_overcommit() -> None:
    teams = [*LAB.teams, _team(COHORTS, "analytics")]
    for team in teams:
        platform = LAB if team in LAB.teams else COHORTS
        cq = cluster_queue_manifest(platform, team)
        assert "cohortName" not in cq["spec"]
        assert "annotations" not in cq["metadata"]
        for group in _groups(cq):
            for flavor in group["flavors"]:
                for resource in flavor["resources"]:
                    assert "borrowingLimit" not in resource
                    assert "lendingLimit" not in resource


def test_cohort_name_and_borrowing_limits_come_from_the_config() -> None:
    queues = {t.name: cluster_queue_manifest(COHORTS, t) for t in COHORTS.teams}
    assert {n: q["spec"].get("cohortName") for n, q in queues.items()} == {
        "vision": "shared",
        "language": "shared",
        "research-infra": "strict",
        "interns": "strict",
        "analytics": None,
    }
    limits = {
        name: {
            f["name"]: _resource(f, GPU_RESOURCE)["borrowingLimit"]
            for f in _gpu_flavors(q)
            if "borrowingLimit" in _resource(f, GPU_RESOURCE)
        }
        for name, q in queues.items()
    }
    assert limits == {
        "vision": {"a100": 4},
        "language": {"a100": 0, "l40s": 2},
        "research-infra": {},
        "interns": {},
        "analytics": {},
    }


def test_the_overcommit_annotation_only_where_the_cohort_allows_it() -> None:
    annotations = {
        t.name: cluster_queue_manifest(COHORTS, t)["metadata"].get("annotations")
        for t in COHORTS.teams
    }
    assert annotations == {
        "vision": {ALLOW_OVERCOMMIT_ANNOTATION: "true"},
        "language": {ALLOW_OVERCOMMIT_ANNOTATION: "true"},
        "research-infra": None,
        "interns": None,
        "analytics": None,
    }


@pytest.mark.parametrize("config", PLATFORMS)
def test_the_namespace_gpu_quota_is_what_the_queue_can_admit(config: str) -> None:
    """Kueue, not the ResourceQuota, decides GPU admission: the namespace ceiling equals the
    most the ClusterQueue can hold, nominal plus borrowing, capped at each pool."""
    platform = PLATFORMS[config]
    for team in platform.teams:
        most = 0
        for flavor in _gpu_flavors(cluster_queue_manifest(platform, team)):
            pool = platform.pool(flavor["name"])
            gpu = _resource(flavor, GPU_RESOURCE)
            if team.cohort is None:
                most += gpu["nominalQuota"]
            else:
                limit = gpu.get("borrowingLimit")
                most += (
                    pool.max_gpus
                    if limit is None
                    else min(pool.max_gpus, gpu["nominalQuota"] + limit)
                )
        assert team_gpu_ceiling(platform, team) == most, team.name
        hard = resource_quota_manifest(platform, team)["spec"]["hard"]
        assert hard[f"requests.{GPU_RESOURCE}"] == str(most), team.name


_UNITS = {"m": 1e-3, "Mi": 2**20, "Gi": 2**30}


def _amount(value: str | int) -> float:
    """A quantity of the forms quantity() writes ('7500m', '768Mi', '512Gi', '64') as a
    number: cores or bytes."""
    text = str(value)
    for suffix, factor in _UNITS.items():
        if text.endswith(suffix):
            return float(text.removesuffix(suffix)) * factor
    return float(text)


def _most_admitted(queues: dict[str, dict[str, Any]], team: str, resource: str) -> float:
    """The most of `resource` Kueue can admit for `team`: its nominal quota plus what it may
    borrow, which without a borrowingLimit is everything the rest of its cohort holds."""
    ((_, entry),) = _admits(queues[team], resource)
    cohort = queues[team]["spec"].get("cohortName")
    lent = sum(
        _amount(_admits(cq, resource)[0][1]["nominalQuota"])
        for name, cq in queues.items()
        if cohort is not None and name != team and cq["spec"].get("cohortName") == cohort
    )
    limit = entry.get("borrowingLimit")
    borrowable = lent if limit is None else min(lent, _amount(limit))
    return _amount(entry["nominalQuota"]) + borrowable


def test_amounts_parse_the_quantities_queues_carry() -> None:
    assert [_amount(v) for v in ("64", "7500m", "768Mi", "2Gi", 8)] == [
        64,
        7.5,
        768 * 2**20,
        2 * 2**30,
        8,
    ]


def test_kueue_never_admits_more_cpu_or_memory_than_the_namespace_may_run() -> None:
    """Teams outside cohorts: the most Kueue admits is the ResourceQuota's requests."""
    for platform in PLATFORMS.values():
        queues = {t.name: cluster_queue_manifest(platform, t) for t in platform.teams}
        for team in platform.teams:
            if team.cohort is not None:
                continue
            hard = resource_quota_manifest(platform, team)["spec"]["hard"]
            for resource in CPU_MEMORY:
                most = _most_admitted(queues, team.name, resource)
                assert most == _amount(hard[f"requests.{resource}"]), (team.name, resource)
    lab_queues = {t.name: cluster_queue_manifest(LAB, t) for t in LAB.teams}
    assert _most_admitted(lab_queues, "vision", "cpu") == 64


def test_a_cohort_team_is_not_admitted_cpu_or_memory_past_its_namespace_quota() -> None:
    queues = {t.name: cluster_queue_manifest(COHORTS, t) for t in COHORTS.teams}
    for team in COHORTS.teams:
        hard = resource_quota_manifest(COHORTS, team)["spec"]["hard"]
        for resource in CPU_MEMORY:
            most = _most_admitted(queues, team.name, resource)
            assert most <= _amount(hard[f"requests.{resource}"]), (team.name, resource)


# --- LocalQueues and priorities ---------------------------------------------------------------


@pytest.mark.parametrize("config", PLATFORMS)
def test_the_local_queue_points_at_the_team_cluster_queue(config: str) -> None:
    platform = PLATFORMS[config]
    for team in platform.teams:
        lq = local_queue_manifest(team)
        cq = cluster_queue_manifest(platform, team)
        assert lq["metadata"]["name"] == LOCAL_QUEUE_NAME == "default"
        assert lq["metadata"]["namespace"] == team.name
        assert lq["metadata"]["labels"] == {**MANAGED_BY, TEAM_LABEL: team.name}
        assert lq["spec"] == {"clusterQueue": cq["metadata"]["name"]}
        # The ClusterQueue admits from exactly that namespace.
        assert cq["spec"]["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": lq["metadata"]["namespace"]
        }


@pytest.mark.parametrize("config", PLATFORMS)
def test_every_queue_flavor_is_a_declared_flavor(config: str) -> None:
    platform = PLATFORMS[config]
    declared = _declared_flavors(platform)
    for team in platform.teams:
        cq = cluster_queue_manifest(platform, team)
        for group in _groups(cq):
            for flavor in group["flavors"]:
                assert flavor["name"] in declared, (team.name, flavor["name"])
        for flavor in _gpu_flavors(cq):
            # A GPU flavor selects the nodes of the pool it is named after.
            assert declared[flavor["name"]]["spec"]["nodeLabels"][POOL_LABEL] == flavor["name"]


def test_priorities_order_serving_over_training_over_best_effort() -> None:
    names = ["mlstack-serving", "mlstack-training", "mlstack-best-effort"]
    assert [p.name for p in PRIORITIES] == names
    pod = {m["metadata"]["name"]: m["value"] for m in map(priority_class_manifest, PRIORITIES)}
    kueue = {
        m["metadata"]["name"]: m["value"] for m in map(workload_priority_class_manifest, PRIORITIES)
    }
    assert pod == kueue
    assert pod["mlstack-serving"] > pod["mlstack-training"] > pod["mlstack-best-effort"] > 0
    for m in map(workload_priority_class_manifest, PRIORITIES):
        assert m["description"]
        assert m["metadata"]["labels"] == MANAGED_BY
