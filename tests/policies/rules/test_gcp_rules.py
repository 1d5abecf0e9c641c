"""GCP rules (policies/rules/gcp.py) and GKE node pools as pools, on real props.

Cases start from the wire-form inputs of the shipped gcp-dev stack's offline plan (deep copies,
so a test changes only what it breaks), found by type and by their own props rather than by
logical name, and call the rule as the engine does: resource rules per resource, stack rules
once with every resource. Types the backend never declares (bindings, policies, keys, ...) are
built by hand in the same wire shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi_gcp
import pytest
from pulumi_policy import StackValidationPolicy
from pulumi_policy.proxy import UNKNOWN_ARRAY_VALUE, UNKNOWN_STRING_VALUE
from rule_args import (
    Item,
    PlanCopy,
    check,
    fails,
    messages,
    resource_args,
    stack_args,
    violations,
    wire,
)

from mlstack.policies.check import check_plan
from mlstack.policies.rules import gcp, pools, tenancy
from mlstack.stacks.names import (
    CAPACITY_LABEL,
    CHECKPOINTS_ANNOTATION,
    GPU_TAINT_KEY,
    POOL_KIND_LABEL,
    POOL_LABEL,
)
from mlstack.stacks.offline import run_plan
from mlstack.stacks.plan import Plan
from mlstack.stacks.stackfile import read_stack

BUCKET = "gcp:storage/bucket:Bucket"
BUCKET_MEMBER = "gcp:storage/bucketIAMMember:BucketIAMMember"
BUCKET_BINDING = "gcp:storage/bucketIAMBinding:BucketIAMBinding"
BUCKET_POLICY = "gcp:storage/bucketIAMPolicy:BucketIAMPolicy"
FOLDER_MEMBER = "gcp:storage/managedFolderIamMember:ManagedFolderIamMember"
PROJECT_MEMBER = "gcp:projects/iAMMember:IAMMember"
PROJECT_BINDING = "gcp:projects/iAMBinding:IAMBinding"
PROJECT_POLICY = "gcp:projects/iAMPolicy:IAMPolicy"
REPOSITORY = "gcp:artifactregistry/repository:Repository"
CLUSTER = "gcp:container/cluster:Cluster"
NODE_POOL = "gcp:container/nodePool:NodePool"
FIREWALL = "gcp:compute/firewall:Firewall"
JOB = "kubernetes:batch/v1:Job"
FLAVOR = "kubernetes:kueue.x-k8s.io/v1beta2:ResourceFlavor"

CHECKPOINTS_BUCKET = "acme-ml-dev-checkpoints"
GPU_TAINT = (GPU_TAINT_KEY, "present", "NoSchedule")
IAM_TYPES = tuple(gcp.IAM_GRANTS)


@pytest.fixture(scope="module")
def dev_plan() -> Plan:
    return run_plan(read_stack("gcp-dev"))


@pytest.fixture(scope="module")
def prod_plan() -> Plan:
    return run_plan(read_stack("gcp-prod"))


class Stack(PlanCopy):
    def pool(self, pool: str) -> Item:
        return self.find(NODE_POOL, name=pool)

    def cluster(self) -> Item:
        return self.find(CLUSTER)


@pytest.fixture
def dev(dev_plan: Plan) -> Stack:
    return Stack.of(dev_plan)


def policy_data(*bindings: tuple[str, list[str]]) -> str:
    return json.dumps({"bindings": [{"role": r, "members": m} for r, m in bindings]})


# --- the catalog and the shipped stacks ---------------------------------------------------------


@pytest.mark.parametrize("plan_fixture", ["dev_plan", "prod_plan"])
def test_the_shipped_gcp_stacks_pass_every_rule(
    plan_fixture: str, request: pytest.FixtureRequest
) -> None:
    plan: Plan = request.getfixturevalue(plan_fixture)
    report = check_plan(plan)
    assert report.violations == []
    assert report.diagnostics == [] and report.not_applicable == []
    # ... and the rules had something to look at.
    for type_ in (BUCKET, BUCKET_MEMBER, PROJECT_MEMBER, REPOSITORY, CLUSTER, FIREWALL):
        assert plan.of_type(type_), type_
    assert len(plan.of_type(BUCKET)) == 3  # datasets, checkpoints, models
    assert len(plan.of_type(NODE_POOL)) == len(plan.platform.node_pools) + 1  # + system


@pytest.mark.parametrize("policy", gcp.POLICIES, ids=lambda p: p.name)
def test_an_empty_stack_and_unrelated_resources_pass(policy: Any) -> None:
    rule: Any = policy.validate
    if isinstance(policy, StackValidationPolicy):
        assert violations(rule, stack_args([])).reported == []
    else:
        ns = {"metadata": {"name": "ml", "namespace": "kube-system"}}
        assert check(rule, "kubernetes:core/v1:Secret", ns) == []
        assert check(rule, "gcp:compute/network:Network", {"name": "ml"}) == []


# --- Cloud Storage ------------------------------------------------------------------------------

GCS_RULES = (gcp.gcs_uniform_access, gcp.gcs_public_access_prevented, gcp.gcs_versioned)


def checkpoints(stack: Stack) -> dict[str, Any]:
    return stack.find(BUCKET, name=CHECKPOINTS_BUCKET).inputs


def test_the_shipped_buckets_and_bucket_grants_pass(dev_plan: Plan, prod_plan: Plan) -> None:
    seen = 0
    for plan in (dev_plan, prod_plan):
        for r in [*plan.of_type(BUCKET), *plan.of_type(BUCKET_MEMBER)]:
            seen += 1
            for rule in GCS_RULES:
                assert check(rule, r.type, dict(r.inputs)) == [], (rule.__name__, r.name)
    assert seen >= 20


@fails("gcp-gcs-uniform-access")
@pytest.mark.parametrize("uniform", [False, None])
def test_a_bucket_without_uniform_access_is_reported(dev: Stack, uniform: Any) -> None:
    checkpoints(dev)["uniformBucketLevelAccess"] = uniform
    [message] = check(gcp.gcs_uniform_access, BUCKET, checkpoints(dev))
    assert message.startswith(f"GCS bucket {CHECKPOINTS_BUCKET!r} does not have uniform")
    assert message.endswith("set uniformBucketLevelAccess: true")


@fails("gcp-gcs-public-access-prevented")
@pytest.mark.parametrize(
    ("prevention", "said"), [("inherited", "inherited"), (None, "inherited (the default)")]
)
def test_a_bucket_without_public_access_prevention_is_reported(
    dev: Stack, prevention: Any, said: str
) -> None:
    checkpoints(dev)["publicAccessPrevention"] = prevention
    [message] = check(gcp.gcs_public_access_prevented, BUCKET, checkpoints(dev))
    assert message.startswith(
        f"GCS bucket {CHECKPOINTS_BUCKET!r} has public access prevention {said}, so"
    )
    assert message.endswith("set publicAccessPrevention: enforced")


@fails("gcp-gcs-versioned")
@pytest.mark.parametrize("versioning", [{"enabled": False}, {}, None])
def test_a_bucket_without_versioning_is_reported(dev: Stack, versioning: Any) -> None:
    checkpoints(dev)["versioning"] = versioning
    [message] = check(gcp.gcs_versioned, BUCKET, checkpoints(dev))
    assert message.startswith(f"GCS bucket {CHECKPOINTS_BUCKET!r} is not versioned")
    assert message.endswith("set versioning.enabled: true")


def test_a_bucket_with_a_generated_name_is_named_by_its_resource(dev: Stack) -> None:
    inputs = checkpoints(dev)
    del inputs["name"]
    inputs["versioning"] = None
    [message] = check(gcp.gcs_versioned, BUCKET, inputs)
    assert message.startswith("GCS bucket res is not versioned")


@pytest.mark.parametrize(
    "change",
    [
        {"uniformBucketLevelAccess": UNKNOWN_STRING_VALUE},
        {"publicAccessPrevention": UNKNOWN_STRING_VALUE},
        {"versioning": UNKNOWN_STRING_VALUE},
        {"versioning": {"enabled": UNKNOWN_STRING_VALUE}},
        {"publicAccessPrevention": "Enforced"},
    ],
)
def test_bucket_settings_not_known_yet_pass(dev: Stack, change: dict) -> None:
    checkpoints(dev).update(change)
    for rule in GCS_RULES:
        assert check(rule, BUCKET, checkpoints(dev)) == [], rule.__name__


@fails("gcp-gcs-public-access-prevented")
@pytest.mark.parametrize("member", ["allUsers", "allAuthenticatedUsers"])
def test_a_bucket_grant_to_everyone_is_reported(dev: Stack, member: str) -> None:
    grant = next(i for i in dev.items if i.type == BUCKET_MEMBER)
    grant.inputs["member"] = member
    [message] = check(gcp.gcs_public_access_prevented, BUCKET_MEMBER, grant.inputs)
    bucket = grant.inputs["bucket"]
    assert message.startswith(
        f"bucket IAM member res on bucket {bucket!r} grants {grant.inputs['role']} to {member}, "
        "which makes objects public"
    )
    assert "grant it to the service accounts or groups that need it" in message


@fails("gcp-gcs-public-access-prevented")
@pytest.mark.parametrize(
    ("type_", "inputs", "where"),
    [
        (
            BUCKET_BINDING,
            {
                "bucket": "b",
                "role": "roles/storage.objectViewer",
                "members": ["group:ml@acme.example", "allUsers"],
            },
            "bucket IAM binding res on bucket 'b'",
        ),
        (
            BUCKET_POLICY,
            {
                "bucket": "b",
                "policyData": policy_data(
                    ("roles/storage.admin", ["group:ops@acme.example"]),
                    ("roles/storage.objectViewer", ["allUsers"]),
                ),
            },
            "bucket IAM policy res on bucket 'b'",
        ),
        (
            FOLDER_MEMBER,
            {
                "bucket": "b",
                "managedFolder": "public/",
                "role": "roles/storage.objectViewer",
                "member": "allUsers",
            },
            "managed folder IAM member res on managed folder 'public/'",
        ),
    ],
)
def test_bindings_policies_and_folder_grants_to_everyone_are_reported(
    type_: str, inputs: dict, where: str
) -> None:
    [message] = check(gcp.gcs_public_access_prevented, type_, inputs)
    assert message.startswith(f"{where} grants roles/storage.objectViewer to allUsers")


@pytest.mark.parametrize(
    ("type_", "inputs"),
    [
        (BUCKET_MEMBER, {"bucket": "b", "role": "roles/storage.objectViewer", "member": None}),
        (BUCKET_MEMBER, {"role": "roles/x", "member": UNKNOWN_STRING_VALUE}),
        (BUCKET_BINDING, {"role": "roles/x", "members": UNKNOWN_ARRAY_VALUE}),
        (BUCKET_POLICY, {"policyData": UNKNOWN_STRING_VALUE}),
        (BUCKET_POLICY, {"policyData": "{not json"}),
        # allUsers may be granted on a project only where it means nothing to buckets.
        (PROJECT_MEMBER, {"project": "p", "role": "roles/x", "member": "allUsers"}),
    ],
)
def test_unknown_and_non_bucket_grants_are_not_judged_public(type_: str, inputs: dict) -> None:
    assert check(gcp.gcs_public_access_prevented, type_, inputs) == []


# --- Artifact Registry --------------------------------------------------------------------------


def registry(stack: Stack) -> dict[str, Any]:
    return stack.find(REPOSITORY).inputs


def test_the_shipped_repositories_pass(dev_plan: Plan, prod_plan: Plan) -> None:
    for plan in (dev_plan, prod_plan):
        [r] = plan.of_type(REPOSITORY)
        assert check(gcp.artifact_registry_immutable_tags, REPOSITORY, dict(r.inputs)) == []


@fails("gcp-artifact-registry-immutable-tags")
@pytest.mark.parametrize(
    "change",
    [
        {"dockerConfig": {"immutableTags": False}},
        {"dockerConfig": {}},
        {"dockerConfig": None},
        {"dockerConfig": None, "format": "docker", "mode": "STANDARD_REPOSITORY"},
    ],
)
def test_a_docker_repository_with_mutable_tags_is_reported(dev: Stack, change: dict) -> None:
    registry(dev).update(change)
    [message] = check(gcp.artifact_registry_immutable_tags, REPOSITORY, registry(dev))
    assert message.startswith("Artifact Registry repository 'ml' has mutable tags")
    assert message.endswith("set dockerConfig.immutableTags: true")


@pytest.mark.parametrize(
    "change",
    [
        {"format": "PYTHON"},
        {"format": UNKNOWN_STRING_VALUE},
        {"mode": "REMOTE_REPOSITORY"},
        {"dockerConfig": {"immutableTags": UNKNOWN_STRING_VALUE}},
    ],
)
def test_other_formats_proxies_and_unknown_settings_pass(dev: Stack, change: dict) -> None:
    registry(dev)["dockerConfig"] = None
    registry(dev).update(change)
    assert check(gcp.artifact_registry_immutable_tags, REPOSITORY, registry(dev)) == []


# --- GKE: private nodes -------------------------------------------------------------------------


def test_the_dev_nodes_are_private(dev: Stack) -> None:
    assert dev.run(gcp.gke_private_nodes) == []


@fails("gcp-gke-private-nodes")
@pytest.mark.parametrize("private", [False, None])
def test_a_cluster_with_public_nodes_is_reported_with_its_pools(dev: Stack, private: Any) -> None:
    dev.cluster().inputs["privateClusterConfig"]["enablePrivateNodes"] = private
    [(message, urn)] = dev.run(gcp.gke_private_nodes)
    assert urn == dev.cluster().urn
    assert message.startswith(
        "GKE cluster 'ml-dev' does not make its nodes private (privateClusterConfig."
        "enablePrivateNodes is not true), so nodes of node pools system, cpu, l4 get public IPs"
    )
    assert message.endswith("set privateClusterConfig.enablePrivateNodes: true")


def test_pools_that_all_opt_in_make_up_for_the_cluster(dev: Stack) -> None:
    dev.cluster().inputs["privateClusterConfig"] = None
    for pool in ("system", "cpu", "l4"):
        dev.pool(pool).inputs["networkConfig"] = {"enablePrivateNodes": True}
    assert dev.run(gcp.gke_private_nodes) == []
    # ... a pool naming the cluster by its id counts as its pool too.
    dev.pool("l4").inputs["networkConfig"] = None
    dev.pool("l4").inputs["cluster"] = "projects/acme-ml-dev/locations/us-central1/clusters/ml-dev"
    [(message, _)] = dev.run(gcp.gke_private_nodes)
    assert "so nodes of node pool l4 get public IPs" in message


@fails("gcp-gke-private-nodes")
def test_a_pool_opting_out_of_private_nodes_is_reported_on_the_pool(dev: Stack) -> None:
    dev.pool("l4").inputs["networkConfig"] = {"enablePrivateNodes": False}
    [(message, urn)] = dev.run(gcp.gke_private_nodes)
    assert urn == dev.pool("l4").urn
    assert message.startswith(
        "GKE node pool 'l4' of cluster 'ml-dev' sets networkConfig.enablePrivateNodes: false"
    )


@fails("gcp-gke-private-nodes")
def test_a_public_cluster_keeping_its_default_pool_is_reported() -> None:
    stack = Stack()
    cluster = stack.add(CLUSTER, "c", {"name": "solo", "initialNodeCount": 1})
    [(message, urn)] = stack.run(gcp.gke_private_nodes)
    assert urn == cluster.urn
    assert (
        "so nodes of the default node pool and any node pool that does not set "
        "networkConfig.enablePrivateNodes get public IPs" in message
    )


@fails("gcp-gke-private-nodes")
def test_inline_node_pools_are_judged_with_the_cluster() -> None:
    inline = [
        {"name": "a", "networkConfig": {"enablePrivateNodes": True}},
        {"name": "b"},
        {"name": "c", "networkConfig": {"enablePrivateNodes": False}},
    ]
    stack = Stack()
    stack.add(CLUSTER, "c", {"name": "solo", "nodePools": inline})
    found = [m for m, _ in stack.run(gcp.gke_private_nodes)]
    assert found == [
        "GKE cluster 'solo', node pool c sets networkConfig.enablePrivateNodes: false, so its "
        "nodes get public IPs; remove it (the cluster's private nodes apply) or set it to true",
        "GKE cluster 'solo' does not make its nodes private (privateClusterConfig."
        "enablePrivateNodes is not true), so nodes of node pool b get public IPs; set "
        "privateClusterConfig.enablePrivateNodes: true",
    ]


def test_private_node_settings_not_known_yet_pass(dev: Stack) -> None:
    dev.cluster().inputs["privateClusterConfig"]["enablePrivateNodes"] = UNKNOWN_STRING_VALUE
    dev.pool("l4").inputs["networkConfig"] = {"enablePrivateNodes": UNKNOWN_STRING_VALUE}
    assert dev.run(gcp.gke_private_nodes) == []


# --- GKE: the control-plane endpoint ------------------------------------------------------------


def cluster_of(stack: Stack) -> dict[str, Any]:
    return stack.cluster().inputs


GKE_CLUSTER_RULES = (
    gcp.gke_endpoint_restricted,
    gcp.gke_workload_identity,
    gcp.gke_no_legacy_auth,
    gcp.gke_live_vulnerability_mode,
    gcp.gke_node_auto_repair_upgrade,
)


@pytest.mark.parametrize("rule", GKE_CLUSTER_RULES, ids=lambda r: r.__name__)
def test_the_dev_and_prod_clusters_and_pools_pass(
    rule: Any, dev_plan: Plan, prod_plan: Plan
) -> None:
    for plan in (dev_plan, prod_plan):
        for r in [*plan.of_type(CLUSTER), *plan.of_type(NODE_POOL)]:
            assert check(rule, r.type, dict(r.inputs)) == [], r.name


def test_prod_has_a_private_endpoint_only(prod_plan: Plan) -> None:
    [r] = prod_plan.of_type(CLUSTER)
    assert r.inputs["privateClusterConfig"]["enablePrivateEndpoint"] is True
    assert r.inputs["masterAuthorizedNetworksConfig"]["cidrBlocks"] == []


@fails("gcp-gke-endpoint-restricted")
@pytest.mark.parametrize("cidrs", [["0.0.0.0/0"], ["203.0.113.0/24", "::/0"], [" 0.0.0.0/0"]])
def test_authorized_networks_open_to_everyone_are_reported(dev: Stack, cidrs: list[str]) -> None:
    blocks = [{"cidrBlock": c, "displayName": f"n{i}"} for i, c in enumerate(cidrs)]
    cluster_of(dev)["masterAuthorizedNetworksConfig"]["cidrBlocks"] = blocks
    [message] = check(gcp.gke_endpoint_restricted, CLUSTER, cluster_of(dev))
    assert message.startswith(f"GKE cluster 'ml-dev' lets {cidrs[-1]} (the whole internet)")
    assert "gcp.master_authorized_networks" in message


@fails("gcp-gke-endpoint-restricted")
def test_access_from_every_google_cloud_ip_is_reported(dev: Stack) -> None:
    cluster_of(dev)["masterAuthorizedNetworksConfig"]["gcpPublicCidrsAccessEnabled"] = True
    [message] = check(gcp.gke_endpoint_restricted, CLUSTER, cluster_of(dev))
    assert message.startswith("GKE cluster 'ml-dev' lets every Google Cloud public IP")
    assert message.endswith("gcpPublicCidrsAccessEnabled: false")


@fails("gcp-gke-endpoint-restricted")
@pytest.mark.parametrize("private_endpoint", [False, None])
def test_a_public_endpoint_without_authorized_networks_is_reported(
    dev: Stack, private_endpoint: Any
) -> None:
    cluster_of(dev)["masterAuthorizedNetworksConfig"] = None
    cluster_of(dev)["privateClusterConfig"]["enablePrivateEndpoint"] = private_endpoint
    [message] = check(gcp.gke_endpoint_restricted, CLUSTER, cluster_of(dev))
    assert message.startswith(
        "GKE cluster 'ml-dev' has a public control-plane endpoint without master authorized "
        "networks"
    )


@pytest.mark.parametrize(
    "change",
    [
        {"privateClusterConfig": {"enablePrivateNodes": True, "enablePrivateEndpoint": True}},
        {"controlPlaneEndpointsConfig": {"ipEndpointsConfig": {"enabled": False}}},
        {"privateClusterConfig": UNKNOWN_STRING_VALUE},
    ],
)
def test_no_authorized_networks_without_a_public_endpoint_pass(dev: Stack, change: dict) -> None:
    cluster_of(dev)["masterAuthorizedNetworksConfig"] = None
    cluster_of(dev).update(change)
    assert check(gcp.gke_endpoint_restricted, CLUSTER, cluster_of(dev)) == []


@pytest.mark.parametrize(
    "networks",
    [
        UNKNOWN_STRING_VALUE,
        {"cidrBlocks": UNKNOWN_ARRAY_VALUE},
        {"cidrBlocks": [{"cidrBlock": UNKNOWN_STRING_VALUE}]},
        {"cidrBlocks": []},  # authorized networks on, none listed: the private endpoint only
    ],
)
def test_authorized_networks_not_known_yet_or_empty_pass(dev: Stack, networks: Any) -> None:
    cluster_of(dev)["masterAuthorizedNetworksConfig"] = networks
    assert check(gcp.gke_endpoint_restricted, CLUSTER, cluster_of(dev)) == []


# --- GKE: Workload Identity ---------------------------------------------------------------------


@fails("gcp-gke-workload-identity")
@pytest.mark.parametrize(
    ("config", "have"),
    [
        (None, "has no Workload Identity"),
        ({}, "has no Workload Identity"),
        ({"workloadPool": "acme-ml-dev.example"}, "has workload pool 'acme-ml-dev.example'"),
    ],
)
def test_a_cluster_without_workload_identity_is_reported(
    dev: Stack, config: Any, have: str
) -> None:
    cluster_of(dev)["workloadIdentityConfig"] = config
    [message] = check(gcp.gke_workload_identity, CLUSTER, cluster_of(dev))
    assert message.startswith(f"GKE cluster 'ml-dev' {have}, so pods cannot act as their own")
    assert message.endswith("workloadIdentityConfig.workloadPool: <project>.svc.id.goog")


@pytest.mark.parametrize(
    "change",
    [
        {"workloadIdentityConfig": {"workloadPool": UNKNOWN_STRING_VALUE}},
        {"workloadIdentityConfig": None, "enableAutopilot": True},
        {"nodeConfig": None},
        {"nodeConfig": UNKNOWN_STRING_VALUE},
    ],
)
def test_autopilot_no_node_config_and_unknown_values_pass(dev: Stack, change: dict) -> None:
    cluster_of(dev).update(change)
    assert check(gcp.gke_workload_identity, CLUSTER, cluster_of(dev)) == []


@fails("gcp-gke-workload-identity")
@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ({"mode": "GCE_METADATA"}, "gives pods the GCE_METADATA metadata server"),
        ({"mode": "MODE_UNSPECIFIED"}, "gives pods the MODE_UNSPECIFIED metadata server"),
        (None, "sets no workloadMetadataConfig.mode"),
    ],
)
def test_a_node_pool_without_the_gke_metadata_server_is_reported(
    dev: Stack, metadata: Any, problem: str
) -> None:
    inputs = dev.pool("l4").inputs
    inputs["nodeConfig"]["workloadMetadataConfig"] = metadata
    [message] = check(gcp.gke_workload_identity, NODE_POOL, inputs)
    assert message.startswith(f"GKE node pool 'l4' of cluster 'ml-dev' {problem}")
    assert message.endswith("set nodeConfig.workloadMetadataConfig.mode: GKE_METADATA")


def test_a_node_pool_without_node_config_or_a_known_mode_passes(dev: Stack) -> None:
    inputs = dev.pool("cpu").inputs
    inputs["nodeConfig"]["workloadMetadataConfig"] = {"mode": UNKNOWN_STRING_VALUE}
    assert check(gcp.gke_workload_identity, NODE_POOL, inputs) == []
    del inputs["nodeConfig"]
    assert check(gcp.gke_workload_identity, NODE_POOL, inputs) == []


@fails("gcp-gke-workload-identity")
def test_the_clusters_own_node_configs_are_checked(dev: Stack) -> None:
    inputs = cluster_of(dev)
    inputs["nodeConfig"]["workloadMetadataConfig"]["mode"] = "GCE_METADATA"
    inputs["nodePools"] = [
        {"name": "ok", "nodeConfig": {"workloadMetadataConfig": {"mode": "GKE_METADATA"}}},
        {"name": "old", "nodeConfig": {"machineType": "e2-standard-4"}},
        {"name": "bare"},
    ]
    assert check(gcp.gke_workload_identity, CLUSTER, inputs) == [
        "GKE cluster 'ml-dev', default node pool, gives pods the GCE_METADATA metadata server, "
        "so every pod acts as the node's service account; set "
        "nodeConfig.workloadMetadataConfig.mode: GKE_METADATA",
        "GKE cluster 'ml-dev', node pool old sets no workloadMetadataConfig.mode; set "
        "nodeConfig.workloadMetadataConfig.mode: GKE_METADATA",
    ]


# --- GKE: legacy authentication and authorization -----------------------------------------------


@fails("gcp-gke-no-legacy-auth")
def test_legacy_abac_is_reported(dev: Stack) -> None:
    cluster_of(dev)["enableLegacyAbac"] = True
    [message] = check(gcp.gke_no_legacy_auth, CLUSTER, cluster_of(dev))
    assert message.startswith("GKE cluster 'ml-dev' has legacy ABAC on")
    assert message.endswith("set enableLegacyAbac: false")


@fails("gcp-gke-no-legacy-auth")
def test_client_certificates_are_reported(dev: Stack) -> None:
    cluster_of(dev)["masterAuth"]["clientCertificateConfig"]["issueClientCertificate"] = True
    [message] = check(gcp.gke_no_legacy_auth, CLUSTER, cluster_of(dev))
    assert message.startswith("GKE cluster 'ml-dev' issues a client certificate")
    assert message.endswith("issueClientCertificate: false")


def test_unset_and_unknown_legacy_auth_pass(dev: Stack) -> None:
    for change in (
        {"enableLegacyAbac": None, "masterAuth": None},
        {"enableLegacyAbac": UNKNOWN_STRING_VALUE, "masterAuth": UNKNOWN_STRING_VALUE},
    ):
        cluster_of(dev).update(change)
        assert check(gcp.gke_no_legacy_auth, CLUSTER, cluster_of(dev)) == []


# --- GKE: vulnerability scanning mode ----------------------------------------------------------


@fails("gcp-gke-live-vulnerability-mode")
@pytest.mark.parametrize(
    ("mode", "removed"),
    [("VULNERABILITY_BASIC", "2025-07-31"), ("VULNERABILITY_ENTERPRISE", "2026-06-16")],
)
def test_a_retired_vulnerability_mode_is_reported(dev: Stack, mode: str, removed: str) -> None:
    cluster_of(dev)["securityPostureConfig"]["vulnerabilityMode"] = mode
    [message] = check(gcp.gke_live_vulnerability_mode, CLUSTER, cluster_of(dev))
    assert message == (
        f"GKE cluster 'ml-dev' asks for workload vulnerability scanning mode {mode}, which GKE "
        f"removed on {removed}; set securityPostureConfig.vulnerabilityMode: "
        "VULNERABILITY_DISABLED"
    )


def test_a_live_unset_or_unknown_vulnerability_mode_passes(dev: Stack) -> None:
    assert cluster_of(dev)["securityPostureConfig"]["vulnerabilityMode"] == (
        "VULNERABILITY_DISABLED"
    )
    assert check(gcp.gke_live_vulnerability_mode, CLUSTER, cluster_of(dev)) == []
    for posture in ({}, None, {"vulnerabilityMode": UNKNOWN_STRING_VALUE}):
        cluster_of(dev)["securityPostureConfig"] = posture
        assert check(gcp.gke_live_vulnerability_mode, CLUSTER, cluster_of(dev)) == []


# --- GKE: node auto-repair and auto-upgrade -----------------------------------------------------


@fails("gcp-gke-node-auto-repair-upgrade")
@pytest.mark.parametrize(
    ("management", "off"),
    [
        ({"autoRepair": False, "autoUpgrade": True}, "autoRepair"),
        ({"autoUpgrade": False}, "autoUpgrade"),
        ({"autoRepair": False, "autoUpgrade": False}, "autoRepair and autoUpgrade"),
    ],
)
def test_a_pool_turning_auto_repair_or_upgrade_off_is_reported(
    dev: Stack, management: dict, off: str
) -> None:
    inputs = dev.pool("l4").inputs
    inputs["management"] = management
    [message] = check(gcp.gke_node_auto_repair_upgrade, NODE_POOL, inputs)
    assert message.startswith(f"GKE node pool 'l4' of cluster 'ml-dev' turns {off} off")
    assert "management.autoRepair: true" in message or "management.autoUpgrade: true" in message


@pytest.mark.parametrize(
    "management",
    [None, {}, {"autoRepair": None}, {"autoRepair": UNKNOWN_STRING_VALUE}, UNKNOWN_STRING_VALUE],
)
def test_unset_management_is_on_by_default(dev: Stack, management: Any) -> None:
    """The provider defaults both to true when `management` (or either field) is unset."""
    inputs = dev.pool("l4").inputs
    inputs["management"] = management
    assert check(gcp.gke_node_auto_repair_upgrade, NODE_POOL, inputs) == []


@fails("gcp-gke-node-auto-repair-upgrade")
def test_inline_pools_turning_auto_upgrade_off_are_reported(dev: Stack) -> None:
    cluster_of(dev)["nodePools"] = [{"name": "a", "management": {"autoUpgrade": False}}, {}]
    [message] = check(gcp.gke_node_auto_repair_upgrade, CLUSTER, cluster_of(dev))
    assert message.startswith("GKE cluster 'ml-dev', node pool a turns autoUpgrade off")


# --- IAM ----------------------------------------------------------------------------------------


def test_the_dev_and_prod_iam_grants_pass(dev_plan: Plan, prod_plan: Plan) -> None:
    seen = 0
    for plan in (dev_plan, prod_plan):
        for r in plan.resources:
            if r.type in IAM_TYPES:
                seen += 1
                assert check(gcp.iam_no_primitive_roles, r.type, dict(r.inputs)) == []
                assert check(gcp.iam_no_service_account_keys, r.type, dict(r.inputs)) == []
    assert seen >= 10


def test_the_iam_types_are_pulumi_gcp_resources() -> None:
    """Each token names a resource class of the installed pulumi-gcp, so none is misspelt."""
    package = Path(pulumi_gcp.__file__).parent
    for type_ in gcp.IAM_GRANTS:
        module = type_.split(":")[1].split("/")[0]
        sources = "".join(f.read_text() for f in (package / module).glob("*.py"))
        assert f"'{type_}'" in sources, type_
    assert len(gcp.IAM_GRANTS) == 27


@fails("gcp-iam-no-primitive-roles")
@pytest.mark.parametrize(
    ("type_", "inputs", "message"),
    [
        (
            PROJECT_MEMBER,
            {"project": "acme", "role": "roles/editor", "member": "group:ml@acme.example"},
            "project IAM member res on project 'acme' grants roles/editor to group:ml@acme.example",
        ),
        (
            PROJECT_BINDING,
            {"project": "acme", "role": "roles/owner", "members": ["user:a@x.io", "user:b@x.io"]},
            "project IAM binding res on project 'acme' grants roles/owner to user:a@x.io, "
            "user:b@x.io",
        ),
        (
            PROJECT_POLICY,
            {
                "project": "acme",
                "policyData": policy_data(
                    ("roles/storage.admin", ["group:ops@acme.example"]),
                    ("roles/viewer", ["group:all@acme.example"]),
                ),
            },
            "project IAM policy res on project 'acme' grants roles/viewer to "
            "group:all@acme.example",
        ),
        (
            "gcp:folder/iAMMember:IAMMember",
            {"folder": "folders/123", "role": "roles/owner", "member": "user:a@x.io"},
            "folder IAM member res on folder 'folders/123' grants roles/owner to user:a@x.io",
        ),
        (
            "gcp:organizations/iAMBinding:IAMBinding",
            {"orgId": "42", "role": "roles/editor", "members": UNKNOWN_ARRAY_VALUE},
            "organization IAM binding res on organization '42' grants roles/editor to members "
            "not known yet",
        ),
        (
            BUCKET_MEMBER,
            {"bucket": "b", "role": "roles/editor", "member": UNKNOWN_STRING_VALUE},
            "bucket IAM member res on bucket 'b' grants roles/editor to members not known yet",
        ),
    ],
)
def test_a_basic_role_grant_is_reported(type_: str, inputs: dict, message: str) -> None:
    [found] = check(gcp.iam_no_primitive_roles, type_, inputs)
    assert found == (
        f"{message}, a basic role that spans every service; grant predefined or custom roles "
        "with only the permissions needed"
    )


@pytest.mark.parametrize(
    ("type_", "inputs"),
    [
        (PROJECT_MEMBER, {"role": UNKNOWN_STRING_VALUE, "member": "user:a@x.io"}),
        (PROJECT_MEMBER, {"role": "roles/editorial", "member": "user:a@x.io"}),
        (PROJECT_POLICY, {"policyData": UNKNOWN_STRING_VALUE}),
        (PROJECT_POLICY, {"policyData": "[1, 2]"}),
        (PROJECT_POLICY, {"policyData": json.dumps({"bindings": "roles/owner"})}),
        ("gcp:serviceaccount/key:Key", {"role": "roles/owner"}),
    ],
)
def test_unknown_narrow_invalid_and_other_grants_pass(type_: str, inputs: dict) -> None:
    assert check(gcp.iam_no_primitive_roles, type_, inputs) == []


@fails("gcp-iam-no-primitive-roles")
def test_forbidden_roles_come_from_config() -> None:
    admin = {"project": "p", "role": "roles/iam.securityAdmin", "member": "user:a@x.io"}
    viewer = {"project": "p", "role": "roles/viewer", "member": "user:a@x.io"}
    assert check(gcp.iam_no_primitive_roles, PROJECT_MEMBER, admin) == []
    config = {"forbiddenRoles": ["roles/owner", "roles/iam.securityAdmin"]}
    [message] = check(gcp.iam_no_primitive_roles, PROJECT_MEMBER, admin, **config)
    assert "grants roles/iam.securityAdmin" in message
    assert check(gcp.iam_no_primitive_roles, PROJECT_MEMBER, viewer, **config) == []


@fails("gcp-iam-no-service-account-keys")
@pytest.mark.parametrize(
    ("type_", "inputs", "start"),
    [
        (
            "gcp:serviceaccount/key:Key",
            {"serviceAccountId": "projects/p/serviceAccounts/ci@p.iam.gserviceaccount.com"},
            "service account key res of ci@p.iam.gserviceaccount.com is a long-lived credential",
        ),
        ("gcp:serviceaccount/key:Key", {}, "service account key res is a long-lived credential"),
        (
            "gcp:storage/hmacKey:HmacKey",
            {"serviceAccountEmail": "ci@p.iam.gserviceaccount.com"},
            "HMAC key res of ci@p.iam.gserviceaccount.com is a long-lived credential",
        ),
    ],
)
def test_service_account_keys_are_reported(type_: str, inputs: dict, start: str) -> None:
    [message] = check(gcp.iam_no_service_account_keys, type_, inputs)
    assert message.startswith(start)
    assert "Workload Identity" in message


def test_service_accounts_themselves_pass(dev_plan: Plan) -> None:
    accounts = dev_plan.of_type("gcp:serviceaccount/account:Account")
    assert len(accounts) == 2  # the nodes' and the team's
    for r in accounts:
        assert check(gcp.iam_no_service_account_keys, r.type, dict(r.inputs)) == []


# --- VPC firewall -------------------------------------------------------------------------------


def firewall(stack: Stack) -> dict[str, Any]:
    return stack.find(FIREWALL).inputs


def test_the_shipped_firewall_rules_pass(dev_plan: Plan, prod_plan: Plan) -> None:
    for plan in (dev_plan, prod_plan):
        for r in plan.of_type(FIREWALL):
            assert check(gcp.firewall_no_open_ingress, FIREWALL, dict(r.inputs)) == []


@fails("gcp-firewall-no-open-ingress")
@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"sourceRanges": ["10.0.0.0/8", "0.0.0.0/0"]}, "from 0.0.0.0/0 (the whole internet)"),
        ({"sourceRanges": ["::/0"], "direction": None}, "from ::/0 (the whole internet)"),
        ({"sourceRanges": None}, "with no source, which GCP reads as 0.0.0.0/0"),
        ({"sourceRanges": [""]}, "with no source, which GCP reads as 0.0.0.0/0"),
        ({"sourceRanges": [], "sourceTags": []}, "with no source, which GCP reads as 0.0.0.0/0"),
    ],
)
def test_ingress_from_everyone_is_reported(dev: Stack, change: dict, said: str) -> None:
    firewall(dev).update(change)
    [message] = check(gcp.firewall_no_open_ingress, FIREWALL, firewall(dev))
    where = "Firewall rule 'ml-dev-control-plane-webhooks'"
    assert message.startswith(f"{where} allows ingress {said}")
    assert message.endswith("list the ranges that need it in sourceRanges, or use sourceTags")


@pytest.mark.parametrize(
    "change",
    [
        {"direction": "EGRESS", "destinationRanges": ["0.0.0.0/0"]},
        {"allows": None, "denies": [{"protocol": "all"}]},
        {"disabled": True},
        {"sourceRanges": None, "sourceTags": ["bastion"]},
        {"sourceRanges": None, "sourceServiceAccounts": ["ci@p.iam.gserviceaccount.com"]},
        {"sourceRanges": UNKNOWN_ARRAY_VALUE},
        {"sourceRanges": [UNKNOWN_STRING_VALUE]},
        {"allows": UNKNOWN_ARRAY_VALUE},
    ],
)
def test_egress_denies_disabled_tagged_and_unknown_rules_pass(dev: Stack, change: dict) -> None:
    firewall(dev)["sourceRanges"] = ["0.0.0.0/0"]
    firewall(dev).update(change)
    assert check(gcp.firewall_no_open_ingress, FIREWALL, firewall(dev)) == []


# --- GKE node pools as pools --------------------------------------------------------------------


def _read(inputs: dict[str, Any]) -> pools.PoolNodes | None:
    return pools.pool_of(NODE_POOL, wire(inputs))


def test_a_gpu_node_pool_is_read_as_its_pool(dev: Stack) -> None:
    assert _read(dev.pool("l4").inputs) == pools.PoolNodes(
        pool="l4", kind="gpu", capacity="spot", taints=(GPU_TAINT,)
    )
    assert _read(dev.pool("system").inputs) == pools.PoolNodes(
        pool="system", kind="cpu", capacity="on-demand", taints=()
    )


def test_the_prod_pools_are_read_as_configured(prod_plan: Plan) -> None:
    found = {}
    for r in prod_plan.of_type(NODE_POOL):
        nodes = pools.pool_of(NODE_POOL, wire(dict(r.inputs)))
        assert nodes is not None
        found[nodes.pool] = (nodes.kind, nodes.capacity)
    assert found == {
        "system": ("cpu", "on-demand"),
        "cpu": ("cpu", "on-demand"),
        "h100": ("gpu", "on-demand"),
        "h100-spot": ("gpu", "spot"),
        "l4-spot": ("gpu", "spot"),
    }


@pytest.mark.parametrize(
    ("effect", "expected"),
    [
        ("NO_SCHEDULE", "NoSchedule"),
        ("PREFER_NO_SCHEDULE", "PreferNoSchedule"),
        ("NO_EXECUTE", "NoExecute"),
    ],
)
def test_gke_taint_effects_read_as_kubernetes_spells_them(
    dev: Stack, effect: str, expected: str
) -> None:
    inputs = dev.pool("l4").inputs
    inputs["nodeConfig"]["taints"] = [{"key": "dedicated", "value": "ml", "effect": effect}]
    found = _read(inputs)
    assert found is not None and found.taints == (("dedicated", "ml", expected),)


@pytest.mark.parametrize(
    ("label", "spot", "preemptible", "expected"),
    [
        (None, True, None, "spot"),
        (None, False, None, "on-demand"),
        (None, None, True, "spot"),
        ("on-demand", True, None, "spot"),  # Compute Engine runs spot VMs, whatever the label
        ("spot", False, None, "spot"),
        ("reserved", False, False, "reserved"),
    ],
)
def test_a_node_pools_capacity(
    dev: Stack, label: str | None, spot: Any, preemptible: Any, expected: str
) -> None:
    config = dev.pool("l4").inputs["nodeConfig"]
    config["labels"].pop(CAPACITY_LABEL)
    if label:
        config["labels"][CAPACITY_LABEL] = label
    config["spot"] = spot
    config["preemptible"] = preemptible
    found = _read(dev.pool("l4").inputs)
    assert found is not None and found.capacity == expected


@pytest.mark.parametrize(
    "change",
    [
        {"guestAccelerators": [{"type": "nvidia-tesla-t4", "count": 1}]},
        {"machineType": "a3-highgpu-8g"},
        {"machineType": "g2-standard-8"},
    ],
)
def test_a_node_pool_with_gpus_is_a_gpu_pool_whatever_its_labels(dev: Stack, change: dict) -> None:
    inputs = dev.pool("cpu").inputs
    before = _read(inputs)
    assert before is not None and before.kind == "cpu"
    inputs["nodeConfig"].update(change)
    found = _read(inputs)
    assert found is not None and (found.pool, found.kind) == ("cpu", "gpu")
    [message] = messages(pools.gpu_pools_tainted, resource_args(NODE_POOL, inputs, name="cpu"))
    assert message.startswith("GPU pool 'cpu' is not tainted")


def test_node_pools_without_a_pool_label_or_known_config_are_not_pools(dev: Stack) -> None:
    inputs = dev.pool("l4").inputs
    config = inputs["nodeConfig"]
    config["labels"] = {POOL_KIND_LABEL: "gpu"}
    assert _read(inputs) is None
    config["labels"] = UNKNOWN_STRING_VALUE
    assert _read(inputs) is None
    config["labels"] = {POOL_LABEL: "l4", POOL_KIND_LABEL: "gpu"}
    config["spot"] = UNKNOWN_STRING_VALUE
    assert _read(inputs) is None
    inputs["nodeConfig"] = UNKNOWN_STRING_VALUE
    assert _read(inputs) is None


def test_the_dev_node_pools_pass_the_pool_rule(dev_plan: Plan) -> None:
    for r in dev_plan.of_type(NODE_POOL):
        assert messages(pools.gpu_pools_tainted, resource_args(r.type, r.inputs, name=r.name)) == []


@fails("gpu-pools-tainted")
@pytest.mark.parametrize(
    "taints",
    [
        [],
        None,
        [{"key": GPU_TAINT_KEY, "value": "present", "effect": "PREFER_NO_SCHEDULE"}],
        [{"key": GPU_TAINT_KEY, "value": "", "effect": "NO_SCHEDULE"}],
    ],
)
def test_a_gpu_node_pool_without_the_gpu_taint_is_reported(dev: Stack, taints: Any) -> None:
    inputs = dev.pool("l4").inputs
    inputs["nodeConfig"]["taints"] = taints
    [message] = messages(pools.gpu_pools_tainted, resource_args(NODE_POOL, inputs, name="l4"))
    assert message.startswith(f"GPU pool 'l4' is not tainted {GPU_TAINT_KEY}=present:NoSchedule")


def test_node_pools_are_pools_of_the_stack_index(dev: Stack) -> None:
    objects = tenancy.Objects.of(dev.resources())
    assert sorted(objects.pools) == ["cpu", "l4", "system"]


@fails("spot-capacity-only-for-checkpointing-jobs")
def test_a_spot_node_pool_reaches_the_spot_rule_by_its_spot_setting(dev: Stack) -> None:
    """gcp-dev with no `capacity` label anywhere: only the l4 pool's `spot: true` says that its
    pool (and the flavor selecting it) is spot."""
    dev.pool("l4").inputs["nodeConfig"]["labels"].pop(CAPACITY_LABEL)
    [flavor] = [
        i
        for i in dev.items
        if i.type == FLAVOR and i.inputs["spec"].get("nodeLabels", {}).get(POOL_LABEL) == "l4"
    ]
    flavor.inputs["spec"]["nodeLabels"].pop(CAPACITY_LABEL)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "sweep",
            "namespace": "ml",
            "labels": {"kueue.x-k8s.io/queue-name": "default"},
            "annotations": {},
        },
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "main", "resources": {"limits": {"nvidia.com/gpu": 1}}}]
                }
            }
        },
    }
    added = dev.add(JOB, "sweep", job)
    [(message, urn)] = dev.run(tenancy.spot_capacity_only_for_checkpointing_jobs)
    assert urn == added.urn
    assert message.startswith("Job ml/sweep may run on spot capacity")
    dev.pool("l4").inputs["nodeConfig"]["spot"] = False
    assert dev.run(tenancy.spot_capacity_only_for_checkpointing_jobs) == []
    job["metadata"]["annotations"][CHECKPOINTS_ANNOTATION] = "true"
    dev.pool("l4").inputs["nodeConfig"]["spot"] = True
    assert dev.run(tenancy.spot_capacity_only_for_checkpointing_jobs) == []


# --- spot: pods stop within the reclaim notice ----------------------------------------------


@fails("spot-pods-stop-within-the-notice")
def test_spot_pods_are_held_to_the_node_pools_graceful_shutdown(dev: Stack) -> None:
    """gcp-dev's l4 pool is spot on 1.35: its kubelet has 120 s to shut down, 15 of them for
    critical pods, so the job (105 s, the default there) and the server (60 s) fit. Without
    that kubelet config GKE's default gives ordinary pods 15 s, and both are cut off."""
    kubelet = dev.pool("l4").inputs["nodeConfig"]["kubeletConfig"]
    assert (
        kubelet["shutdownGracePeriodSeconds"],
        kubelet["shutdownGracePeriodCriticalPodsSeconds"],
    ) == (120, 15)
    assert dev.run(tenancy.spot_pods_stop_within_the_notice) == []
    del dev.pool("l4").inputs["nodeConfig"]["kubeletConfig"]
    found = dev.run(tenancy.spot_pods_stop_within_the_notice)
    assert sorted(m.split(" may run")[0] for m, _ in found) == [
        "Deployment ml/lm-tiny-api",
        "JobSet ml/lm-tiny, replicatedJob workers",
    ]
    assert all("whose nodes give a pod 15 s from SIGTERM" in m for m, _ in found)
    # A critical share that leaves more for ordinary pods admits the server again.
    dev.pool("l4").inputs["nodeConfig"]["kubeletConfig"] = {
        "shutdownGracePeriodSeconds": 90,
        "shutdownGracePeriodCriticalPodsSeconds": 10,
    }
    [(message, _)] = dev.run(tenancy.spot_pods_stop_within_the_notice)
    assert message.startswith("JobSet ml/lm-tiny") and "give a pod 80 s" in message
