"""The tenancy components through the offline plan: what a team in the config becomes."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from crd_schema import validate_kueue
from tests_support import wire_ints

from mlstack.components.kubernetes.addons import KUEUE
from mlstack.components.onprem.pools import parse_taints
from mlstack.policies.queues import KUEUE_API
from mlstack.stacks.names import (
    CAPACITY_LABEL,
    DEFAULT_FLAVOR,
    GPU_RESOURCE,
    KUEUE_NAMESPACE,
    OBJECT_STORE_SECRET,
    POOL_LABEL,
    POOL_TAINTS_ANNOTATION,
    REGISTRY_PULL_SECRET,
)
from mlstack.stacks.offline import SECRET_PLACEHOLDER, run_plan
from mlstack.stacks.plan import Plan, PlannedResource, is_secret
from mlstack.stacks.stackfile import StackFile

MakeStack = Callable[..., StackFile]

TEAM_TENANCY = "mlstack:policies:TeamTenancy"
TENANCY = "mlstack:policies:Tenancy"
KUEUE_COMPONENT = "mlstack:kubernetes:Kueue"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
SECRET = "kubernetes:core/v1:Secret"
SERVICE_ACCOUNT = "kubernetes:core/v1:ServiceAccount"
CLUSTER_QUEUE = f"kubernetes:{KUEUE_API}:ClusterQueue"
LOCAL_QUEUE = f"kubernetes:{KUEUE_API}:LocalQueue"
FLAVOR = f"kubernetes:{KUEUE_API}:ResourceFlavor"
WORKLOAD_PRIORITY = f"kubernetes:{KUEUE_API}:WorkloadPriorityClass"
NODE_PATCH = "kubernetes:core/v1:NodePatch"

NEW_TEAM = {"name": "speech", "groups": ["lab-speech"], "quota": {"gpus": {"l40s": 4}}}
#: What a new team gets, by type token and resource name (`team-<team>-<role>`).
TEAM_RESOURCES = {
    ("kubernetes:core/v1:Namespace", "team-speech-namespace"),
    ("kubernetes:core/v1:ResourceQuota", "team-speech-quota"),
    ("kubernetes:core/v1:LimitRange", "team-speech-limits"),
    (SERVICE_ACCOUNT, "team-speech-service-account"),
    ("kubernetes:rbac.authorization.k8s.io/v1:Role", "team-speech-engineer-role"),
    ("kubernetes:rbac.authorization.k8s.io/v1:Role", "team-speech-viewer-role"),
    ("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding", "team-speech-engineer-binding"),
    ("kubernetes:networking.k8s.io/v1:NetworkPolicy", "team-speech-deny-ingress"),
    ("kubernetes:networking.k8s.io/v1:NetworkPolicy", "team-speech-allow-ingress"),
    (SECRET, "team-speech-object-store-credentials"),
    (CLUSTER_QUEUE, "team-speech-cluster-queue"),
    (LOCAL_QUEUE, "team-speech-local-queue"),
}
PULL_SECRET = (SECRET, "team-speech-registry-pull")


@pytest.fixture
def with_team(lab_config: dict[str, Any], make_stack: MakeStack) -> Plan:
    """The lab plus one team, nothing else edited; the registry has pull credentials."""
    config = copy.deepcopy(lab_config)
    config["teams"].append(NEW_TEAM)
    return run_plan(
        make_stack(config, name="team"),
        secrets={"registryUsername": "robot", "registryPassword": "pw"},
    )


def _children(plan: Plan, parent: PlannedResource) -> set[tuple[str, str]]:
    return {(r.type, r.name) for r in plan.resources if r.parent == parent.urn}


def test_a_new_team_gets_its_whole_tenancy_with_no_other_edit(with_team: Plan) -> None:
    team = with_team.get(TEAM_TENANCY, "team-speech")
    assert team.parent == with_team.get(TENANCY, "tenancy").urn
    assert _children(with_team, team) == {*TEAM_RESOURCES, PULL_SECRET}
    for type_, name in {*TEAM_RESOURCES, PULL_SECRET}:
        r = with_team.get(type_, name)
        assert r.custom
        metadata = r.inputs["metadata"]
        if type_.endswith(":Namespace") or type_ == CLUSTER_QUEUE:
            assert metadata["name"] == "speech"
            assert "namespace" not in metadata
        else:
            assert metadata["namespace"] == "speech"


def test_the_new_team_changes_nothing_else(
    lab_config: dict[str, Any], make_stack: MakeStack, with_team: Plan
) -> None:
    before = run_plan(
        make_stack(lab_config, name="team"),
        secrets={"registryUsername": "robot", "registryPassword": "pw"},
    )

    def view(plan: Plan) -> dict[tuple[str, str], str]:
        return {
            (r.type, r.name): json.dumps(r.to_json(), sort_keys=True)
            for r in plan.resources
            if not r.name.startswith("team-speech")
        }

    assert view(with_team) == view(before)
    assert with_team.outputs["team_namespaces"] == [*before.outputs["team_namespaces"], "speech"]


def test_the_service_account_pulls_with_the_registry_secret_of_the_namespace(
    with_team: Plan,
) -> None:
    sa = with_team.get(SERVICE_ACCOUNT, "team-speech-service-account").inputs
    assert sa["imagePullSecrets"] == [{"name": REGISTRY_PULL_SECRET}]
    assert sa["automountServiceAccountToken"] is False
    pull = with_team.get(*PULL_SECRET).inputs
    assert pull["metadata"]["name"] == REGISTRY_PULL_SECRET
    assert pull["metadata"]["namespace"] == "speech"
    assert pull["type"] == "kubernetes.io/dockerconfigjson"
    assert is_secret(pull["stringData"])
    document = json.loads(pull["stringData"]["value"][".dockerconfigjson"])
    assert list(document["auths"]) == ["harbor.lab.internal"]


def test_without_registry_credentials_there_is_no_pull_secret(
    lab_config: dict[str, Any], make_stack: MakeStack
) -> None:
    lab_config["teams"].append(NEW_TEAM)
    plan = run_plan(make_stack(lab_config))
    team = plan.get(TEAM_TENANCY, "team-speech")
    assert _children(plan, team) == TEAM_RESOURCES
    assert "imagePullSecrets" not in plan.get(SERVICE_ACCOUNT, "team-speech-service-account").inputs


def test_the_object_store_credentials_are_copied_into_the_namespace(with_team: Plan) -> None:
    copied = with_team.get(SECRET, "team-speech-object-store-credentials").inputs
    system = with_team.get(SECRET, "system-object-store-credentials").inputs
    assert copied["metadata"]["name"] == system["metadata"]["name"] == OBJECT_STORE_SECRET
    assert copied["metadata"]["namespace"] == "speech"
    assert copied["type"] == "Opaque"
    assert is_secret(copied["stringData"])
    assert copied["stringData"] == system["stringData"]
    assert copied["stringData"]["value"] == {
        "AWS_ACCESS_KEY_ID": SECRET_PLACEHOLDER,
        "AWS_SECRET_ACCESS_KEY": SECRET_PLACEHOLDER,
    }


def test_the_new_team_queues(with_team: Plan) -> None:
    cq = wire_ints(with_team.get(CLUSTER_QUEUE, "team-speech-cluster-queue").inputs)
    lq = wire_ints(with_team.get(LOCAL_QUEUE, "team-speech-local-queue").inputs)
    validate_kueue(cq)
    validate_kueue(lq)
    # CPU and memory (the defaults: 16 cores, 64 GiB) once, on the default flavor; GPUs on the
    # one pool the team has quota in.
    assert cq["spec"]["resourceGroups"] == [
        {
            "coveredResources": ["cpu", "memory"],
            "flavors": [
                {
                    "name": DEFAULT_FLAVOR,
                    "resources": [
                        {"name": "cpu", "nominalQuota": "16"},
                        {"name": "memory", "nominalQuota": "64Gi"},
                    ],
                }
            ],
        },
        {
            "coveredResources": [GPU_RESOURCE],
            "flavors": [{"name": "l40s", "resources": [{"name": GPU_RESOURCE, "nominalQuota": 4}]}],
        },
    ]
    assert lq["metadata"] == {
        "name": "default",
        "namespace": "speech",
        "labels": {"app.kubernetes.io/managed-by": "mlstack", "mlstack.dev/team": "speech"},
    }
    assert lq["spec"] == {"clusterQueue": "speech"}
    quota = with_team.get("kubernetes:core/v1:ResourceQuota", "team-speech-quota").inputs
    assert quota["spec"]["hard"]["requests.nvidia.com/gpu"] == "4"
    # Kueue admits exactly the CPU and memory the namespace may run.
    assert quota["spec"]["hard"]["requests.cpu"] == "16"
    assert quota["spec"]["hard"]["requests.memory"] == "64Gi"


def test_kueue_is_the_pinned_oci_chart(lab_plan: Plan) -> None:
    release = lab_plan.get(HELM_RELEASE, "kueue-release")
    assert release.parent == lab_plan.get(KUEUE_COMPONENT, "kueue").urn
    inputs = release.inputs
    assert inputs["chart"] == KUEUE.chart == "oci://registry.k8s.io/kueue/charts/kueue"
    assert inputs["version"] == KUEUE.version == "0.20.0"
    assert KUEUE.repo == ""
    assert "repositoryOpts" not in inputs
    assert inputs["namespace"] == KUEUE_NAMESPACE == "kueue-system"
    # Declared by mlstack at restricted, not created unlabeled by Helm (issue 17, theme 4).
    assert not inputs.get("createNamespace")
    namespace = lab_plan.get("kubernetes:core/v1:Namespace", "kueue-namespace")
    assert namespace.inputs["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == (
        "restricted"
    )


def test_kueue_objects_go_to_the_cluster_of_the_kueue_release(lab_plan: Plan) -> None:
    provider = lab_plan.get(HELM_RELEASE, "kueue-release").provider
    assert provider
    tenancy = lab_plan.get(TENANCY, "tenancy")
    kueue_objects = [r for r in lab_plan.resources if r.type.startswith(f"kubernetes:{KUEUE_API}")]
    assert {r.type for r in kueue_objects} == {
        FLAVOR,
        WORKLOAD_PRIORITY,
        CLUSTER_QUEUE,
        LOCAL_QUEUE,
    }
    teams = {r.urn for r in lab_plan.of_type(TEAM_TENANCY)}
    for r in kueue_objects:
        assert r.provider == provider, r.name
        if r.type in (FLAVOR, WORKLOAD_PRIORITY):
            assert r.parent == tenancy.urn
        else:
            assert r.parent in teams
        validate_kueue(wire_ints(r.inputs))


def _flavor_resources(plan: Plan) -> dict[str, PlannedResource]:
    """ResourceFlavor name -> its resource, each looked up by its logical name: one per GPU
    pool and the default one, none for CPU pools."""
    names = {pool.name: f"tenancy-flavor-{pool.name}" for pool in plan.platform.gpu_pools}
    names[DEFAULT_FLAVOR] = "tenancy-default-flavor"
    return {flavor: plan.get(FLAVOR, name) for flavor, name in names.items()}


def test_a_flavor_per_gpu_pool_and_the_default_one(lab_plan: Plan) -> None:
    flavors = _flavor_resources(lab_plan)
    assert sorted(flavors) == ["a100", "default", "l40s"]
    assert len(lab_plan.of_type(FLAVOR)) == len(flavors)
    for name, r in flavors.items():
        assert r.inputs["metadata"]["name"] == name
    with pytest.raises(KeyError):
        lab_plan.get(FLAVOR, "tenancy-flavor-cpu")
    default = flavors[DEFAULT_FLAVOR].inputs
    assert default["spec"] == {}
    assert "annotations" not in default["metadata"]


def test_every_queue_flavor_exists_in_the_plan(with_team: Plan) -> None:
    flavors = set(_flavor_resources(with_team))
    for team in with_team.platform.teams:
        cq = with_team.get(CLUSTER_QUEUE, f"team-{team.name}-cluster-queue")
        groups = cq.inputs["spec"]["resourceGroups"]
        for group in groups:
            assert {f["name"] for f in group["flavors"]} <= flavors, cq.name
        assert [f["name"] for f in groups[0]["flavors"]] == [DEFAULT_FLAVOR]
        lq = with_team.get(LOCAL_QUEUE, f"team-{team.name}-local-queue")
        assert lq.inputs["spec"]["clusterQueue"] == cq.inputs["metadata"]["name"]


def test_flavors_select_the_labels_and_taints_the_node_patches_declare(lab_plan: Plan) -> None:
    flavors = _flavor_resources(lab_plan)
    for pool in lab_plan.platform.gpu_pools:
        spec = flavors[pool.name].inputs["spec"]
        patches = [
            r
            for r in lab_plan.of_type(NODE_PATCH)
            if r.name.startswith(f"onprem-pool-{pool.name}_")
        ]
        assert len(patches) == pool.max_nodes
        assert spec["nodeLabels"][POOL_LABEL] == pool.name
        for patch in patches:
            assert spec["nodeLabels"].items() <= patch.inputs["metadata"]["labels"].items()
            assert (
                spec["nodeLabels"][CAPACITY_LABEL]
                == patch.inputs["metadata"]["labels"][CAPACITY_LABEL]
            )
            # The operator sets the taints; the patch names them in an annotation.
            declared = patch.inputs["metadata"].get("annotations", {})
            assert spec.get("nodeTaints", []) == list(
                parse_taints(declared.get(POOL_TAINTS_ANNOTATION, ""))
            )
    # The default flavor selects no nodes and tolerates no taints: CPU and memory quota only.
    assert "nodeLabels" not in flavors[DEFAULT_FLAVOR].inputs["spec"]
    assert "nodeTaints" not in flavors[DEFAULT_FLAVOR].inputs["spec"]
