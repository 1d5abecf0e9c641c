"""The offline plan of the shipped GCP stacks (gcp-dev, gcp-prod): the inputs that matter.

Each stack is planned once per module, with each registration's options (protect, retain,
dependencies). Resources are found by type and logical name, never by position; what GCP
computes (service account emails, ids of networks, keys and clusters) is the offline
placeholder of components/gcp/offline.py. That every Kubernetes object of these plans is
schema-valid is tests/stacks/test_render.py's job (it covers every shipped stack).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import pytest
from tests_support import PlanWithOptions, only_problem, plan_with_options

from mlstack.components.gcp.offline import PROJECT_NUMBER
from mlstack.policies.tenancy import ALLOW_INGRESS_POLICY
from mlstack.stacks.names import SERVICE_ACCOUNT_NAME
from mlstack.stacks.offline import run_plan
from mlstack.stacks.plan import PlannedResource, is_secret, mask_secrets
from mlstack.stacks.stackfile import read_stack

GCP_STACKS = ("gcp-dev", "gcp-prod")

PROVIDER = "pulumi:providers:gcp"
SERVICE = "gcp:projects/service:Service"
NETWORK = "gcp:compute/network:Network"
SUBNET = "gcp:compute/subnetwork:Subnetwork"
ROUTER = "gcp:compute/router:Router"
NAT = "gcp:compute/routerNat:RouterNat"
FIREWALL = "gcp:compute/firewall:Firewall"
CLUSTER = "gcp:container/cluster:Cluster"
NODE_POOL = "gcp:container/nodePool:NodePool"
ACCOUNT = "gcp:serviceaccount/account:Account"
ACCOUNT_KEY = "gcp:serviceaccount/key:Key"
ACCOUNT_IAM = "gcp:serviceaccount/iAMMember:IAMMember"
PROJECT_IAM = "gcp:projects/iAMMember:IAMMember"
CUSTOM_ROLE = "gcp:projects/iAMCustomRole:IAMCustomRole"
BUCKET = "gcp:storage/bucket:Bucket"
BUCKET_IAM = "gcp:storage/bucketIAMMember:BucketIAMMember"
REPOSITORY = "gcp:artifactregistry/repository:Repository"
REPOSITORY_IAM = "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember"
KEY_RING = "gcp:kms/keyRing:KeyRing"
CRYPTO_KEY = "gcp:kms/cryptoKey:CryptoKey"
KEY_IAM = "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember"
SERVICE_ACCOUNT = "kubernetes:core/v1:ServiceAccount"
K8S_PROVIDER = "pulumi:providers:kubernetes"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
PURPOSES = ("datasets", "checkpoints", "models")
PROD_ZONES = ("us-central1-a", "us-central1-b", "us-central1-c")
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}


@dataclass(frozen=True)
class Pool:
    """What a node pool is expected to be created with."""

    machine_type: str
    zones: tuple[str, ...]
    spot: bool
    sizes: tuple[int, int]
    accelerator: str | None = None
    gpus: int = 0


@dataclass(frozen=True)
class Expected:
    """Literal expectations per shipped stack: the config and the catalogs resolve to these."""

    project: str
    region: str
    cluster: str
    zones: tuple[str, ...]
    channel: str
    authorized: tuple[str, ...]
    cmek: bool
    teams: tuple[str, ...]
    bucket_prefix: str
    pools: dict[str, Pool]


EXPECTED = {
    "gcp-dev": Expected(
        project="acme-ml-dev",
        region="us-central1",
        cluster="ml-dev",
        zones=("us-central1-a", "us-central1-b"),
        channel="REGULAR",
        authorized=("203.0.113.0/24",),
        cmek=False,
        teams=("ml",),
        bucket_prefix="acme-ml-dev",
        pools={
            "system": Pool("e2-standard-4", ("us-central1-a", "us-central1-b"), False, (1, 2)),
            "cpu": Pool("n2-standard-8", ("us-central1-a", "us-central1-b"), False, (0, 4)),
            "l4": Pool(
                "g2-standard-4",
                ("us-central1-a", "us-central1-b"),
                True,
                (0, 4),
                "nvidia-l4",
                1,
            ),
        },
    ),
    "gcp-prod": Expected(
        project="acme-ml-prod",
        region="us-central1",
        cluster="ml-prod",
        zones=PROD_ZONES,
        channel="STABLE",
        authorized=(),
        cmek=True,
        teams=("vision", "language"),
        bucket_prefix="acme-ml-prod",
        pools={
            "system": Pool("e2-standard-8", PROD_ZONES, False, (3, 6)),
            "cpu": Pool(
                "n2-standard-16",
                PROD_ZONES,
                False,
                (1, 20),
            ),
            "h100": Pool(
                "a3-highgpu-8g",
                PROD_ZONES,
                False,
                (0, 4),
                "nvidia-h100-80gb",
                8,
            ),
            "h100-spot": Pool(
                "a3-highgpu-8g",
                PROD_ZONES,
                True,
                (0, 4),
                "nvidia-h100-80gb",
                8,
            ),
            "l4-spot": Pool(
                "g2-standard-48",
                PROD_ZONES,
                True,
                (0, 8),
                "nvidia-l4",
                4,
            ),
        },
    ),
}


@dataclass(frozen=True)
class Planned(PlanWithOptions):
    @property
    def expected(self) -> Expected:
        return EXPECTED[self.stack]


@pytest.fixture(scope="module")
def planned() -> dict[str, Planned]:
    return {stack: Planned(stack, *plan_with_options(stack)) for stack in GCP_STACKS}


@pytest.fixture(params=GCP_STACKS)
def gcp(request: pytest.FixtureRequest, planned: dict[str, Planned]) -> Planned:
    return planned[request.param]


def _email(e: Expected, account_id: str) -> str:
    return f"{account_id}@{e.project}.iam.gserviceaccount.com"


def _node_email(e: Expected) -> str:
    return _email(e, f"{e.cluster}-nodes")


def _bucket(e: Expected, purpose: str) -> str:
    return f"{e.bucket_prefix}-{purpose}"


def _key_id(e: Expected, purpose: str) -> str:
    return f"projects/{e.project}/locations/{e.region}/keyRings/{e.cluster}/cryptoKeys/{purpose}"


def _dependencies(gcp: Planned, resource: PlannedResource) -> set[str]:
    return set(gcp.opts(resource).dependencies)


# --- no static credentials, one explicit provider, the APIs ------------------------------------


def test_no_service_account_key_and_no_primitive_role_anywhere(gcp: Planned) -> None:
    assert gcp.of_type(ACCOUNT_KEY) == []
    roles = [
        r.inputs["role"]
        for r in gcp.plan.resources
        if r.type.startswith("gcp:") and "role" in r.inputs
    ]
    assert roles
    assert not {"roles/owner", "roles/editor", "roles/viewer"} & set(roles)
    # The only project-level grant is the nodes' minimal role.
    [project_grant] = gcp.of_type(PROJECT_IAM)
    assert project_grant.inputs["role"] == "roles/container.defaultNodeServiceAccount"
    assert project_grant.inputs["member"] == f"serviceAccount:{_node_email(gcp.expected)}"


def test_every_gcp_resource_uses_the_stacks_explicit_provider(gcp: Planned) -> None:
    e = gcp.expected
    provider = gcp.get(PROVIDER, "gcp")
    assert provider.inputs["project"] == e.project
    assert provider.inputs["region"] == e.region
    labels = json.loads(provider.inputs["defaultLabels"])
    assert labels["mlstack-cluster"] == e.cluster
    assert labels["mlstack-environment"] == gcp.plan.platform.environment
    ref = f"{provider.urn}::gcp-id"
    custom = [r for r in gcp.plan.resources if r.custom and r.type.startswith("gcp:")]
    assert len(custom) > 30
    assert {r.provider for r in custom} == {ref}


def test_the_apis_are_enabled_and_left_on_at_destroy(gcp: Planned) -> None:
    services = {r.inputs["service"]: r for r in gcp.of_type(SERVICE)}
    assert set(services) == {
        # Project lookups and project IAM go through Cloud Resource Manager, off in a new
        # project.
        "cloudresourcemanager.googleapis.com",
        "compute.googleapis.com",
        "container.googleapis.com",
        "storage.googleapis.com",
        "artifactregistry.googleapis.com",
        "iam.googleapis.com",
        "cloudkms.googleapis.com",
    }
    for s in services.values():
        assert s.inputs["disableOnDestroy"] is False
        assert s.inputs["project"] == gcp.expected.project
    # The cluster waits for every API (its component is declared after them).
    cluster = gcp.get(CLUSTER, "gcp-cluster")
    component = next(r for r in gcp.plan.resources if r.urn == cluster.parent)
    assert {s.urn for s in services.values()} <= _dependencies(gcp, component)


# --- network ----------------------------------------------------------------------------------


def test_vpc_subnet_and_nat(gcp: Planned) -> None:
    e = gcp.expected
    vpc = gcp.get(NETWORK, "gcp-network")
    assert vpc.inputs["name"] == e.cluster
    assert vpc.inputs["autoCreateSubnetworks"] is False
    subnet = gcp.get(SUBNET, "gcp-network-nodes")
    assert subnet.inputs["network"] == f"projects/{e.project}/global/networks/{e.cluster}"
    assert subnet.inputs["region"] == e.region
    assert subnet.inputs["ipCidrRange"] == "10.0.0.0/20"
    assert subnet.inputs["privateIpGoogleAccess"] is True
    assert {r["rangeName"]: r["ipCidrRange"] for r in subnet.inputs["secondaryIpRanges"]} == {
        "pods": "10.4.0.0/14",
        "services": "10.8.0.0/20",
    }
    assert subnet.inputs["logConfig"]["aggregationInterval"] == "INTERVAL_5_SEC"
    router = gcp.get(ROUTER, "gcp-network-router")
    nat = gcp.get(NAT, "gcp-network-nat")
    assert nat.inputs["router"] == router.inputs["name"]
    assert nat.inputs["sourceSubnetworkIpRangesToNat"] == "LIST_OF_SUBNETWORKS"
    [nat_subnet] = nat.inputs["subnetworks"]
    assert nat_subnet["name"] == (
        f"projects/{e.project}/regions/{e.region}/subnetworks/{e.cluster}-nodes"
    )


def test_the_one_firewall_rule_lets_only_the_control_plane_reach_webhooks(gcp: Planned) -> None:
    e = gcp.expected
    [rule] = gcp.of_type(FIREWALL)
    assert rule.inputs["direction"] == "INGRESS"
    assert rule.inputs["sourceRanges"] == ["172.16.0.0/28"]
    assert rule.inputs["targetTags"] == [f"mlstack-{e.cluster}-node"]
    assert rule.inputs["allows"] == [{"protocol": "tcp", "ports": ["8443", "9443"]}]
    # Every node carries the tag the rule targets.
    for pool in gcp.of_type(NODE_POOL):
        assert pool.inputs["nodeConfig"]["tags"] == [f"mlstack-{e.cluster}-node"]


# --- the cluster ------------------------------------------------------------------------------


def test_gke_cluster(gcp: Planned) -> None:
    e = gcp.expected
    c = gcp.get(CLUSTER, "gcp-cluster").inputs
    assert c["name"] == e.cluster
    assert c["location"] == e.region  # regional control plane
    assert c["nodeLocations"] == list(e.zones)
    assert c["minMasterVersion"] == "1.35"
    assert c["releaseChannel"] == {"channel": e.channel}
    assert c["networkingMode"] == "VPC_NATIVE"
    assert c["ipAllocationPolicy"] == {
        "clusterSecondaryRangeName": "pods",
        "servicesSecondaryRangeName": "services",
    }
    private = c["privateClusterConfig"]
    assert private["enablePrivateNodes"] is True
    assert private["masterIpv4CidrBlock"] == "172.16.0.0/28"
    assert c["workloadIdentityConfig"] == {"workloadPool": f"{e.project}.svc.id.goog"}
    assert c["datapathProvider"] == "ADVANCED_DATAPATH"
    assert c["enableShieldedNodes"] is True
    assert c["enableLegacyAbac"] is False
    assert c["masterAuth"]["clientCertificateConfig"] == {"issueClientCertificate": False}
    assert c["removeDefaultNodePool"] is True
    assert "WORKLOADS" in c["loggingConfig"]["enableComponents"]
    assert "APISERVER" in c["loggingConfig"]["enableComponents"]
    assert c["monitoringConfig"]["managedPrometheus"] == {"enabled": True}
    # Both workload vulnerability scanning tiers are removed; DISABLED is the live mode.
    assert c["securityPostureConfig"] == {
        "mode": "BASIC",
        "vulnerabilityMode": "VULNERABILITY_DISABLED",
    }
    # The default pool, while it exists, runs as the nodes' account behind the GKE metadata
    # server, not as the Compute Engine default service account.
    assert c["nodeConfig"]["serviceAccount"] == _node_email(e)
    assert c["nodeConfig"]["workloadMetadataConfig"] == {"mode": "GKE_METADATA"}
    assert c["deletionProtection"] is (gcp.plan.platform.environment == "prod")


def test_api_endpoint_dev_open_to_its_range_prod_private(planned: dict[str, Planned]) -> None:
    for stack, planned_stack in planned.items():
        e = planned_stack.expected
        c = planned_stack.get(CLUSTER, "gcp-cluster").inputs
        networks = c["masterAuthorizedNetworksConfig"]
        assert [b["cidrBlock"] for b in networks.get("cidrBlocks", [])] == list(e.authorized)
        assert networks["gcpPublicCidrsAccessEnabled"] is False, stack
        assert c["privateClusterConfig"]["enablePrivateEndpoint"] is (not e.authorized), stack
        # Global access keeps the private endpoint reachable from every region.
        assert c["privateClusterConfig"]["masterGlobalAccessConfig"] == {"enabled": True}


def test_a_private_control_plane_is_reached_through_its_dns_endpoint(
    planned: dict[str, Planned],
) -> None:
    # gcp-prod has no authorized networks: VPN, peered and CI networks reach its control plane
    # by the DNS-based endpoint (IAM-checked), not by the private IP in Google's network.
    prod = planned["gcp-prod"]
    c = prod.get(CLUSTER, "gcp-cluster").inputs
    assert c["controlPlaneEndpointsConfig"] == {"dnsEndpointConfig": {"allowExternalTraffic": True}}
    config = json.loads(prod.get(K8S_PROVIDER, "gcp-kubernetes").inputs["kubeconfig"]["value"])
    [cluster] = config["clusters"]
    assert cluster["cluster"] == {
        "server": f"https://gke-offline-{PROJECT_NUMBER}.{prod.expected.region}.gke.goog"
    }
    # gcp-dev's public endpoint is open to its listed range and stays the provider's server.
    dev = planned["gcp-dev"]
    assert "controlPlaneEndpointsConfig" not in dev.get(CLUSTER, "gcp-cluster").inputs
    config = json.loads(dev.get(K8S_PROVIDER, "gcp-kubernetes").inputs["kubeconfig"]["value"])
    [cluster] = config["clusters"]
    assert cluster["cluster"]["server"] == "https://OFFLINE.gke.internal"
    assert cluster["cluster"]["certificate-authority-data"]


def test_secrets_encryption_and_google_groups_only_where_configured(
    planned: dict[str, Planned],
) -> None:
    prod = planned["gcp-prod"].get(CLUSTER, "gcp-cluster").inputs
    assert prod["databaseEncryption"] == {
        "state": "ENCRYPTED",
        "keyName": _key_id(planned["gcp-prod"].expected, "secrets"),
    }
    assert prod["authenticatorGroupsConfig"] == {
        "securityGroup": "gke-security-groups@acme.example"
    }
    dev = planned["gcp-dev"].get(CLUSTER, "gcp-cluster").inputs
    assert "databaseEncryption" not in dev
    assert "authenticatorGroupsConfig" not in dev


def test_the_kubernetes_provider_gets_the_kubeconfig_as_a_secret(gcp: Planned) -> None:
    provider = gcp.get(K8S_PROVIDER, "gcp-kubernetes")
    assert is_secret(provider.inputs["kubeconfig"])
    kubeconfig = json.loads(provider.inputs["kubeconfig"]["value"])
    [user] = kubeconfig["users"]
    assert user["user"]["exec"]["command"] == "gke-gcloud-auth-plugin"
    # The runner has Application Default Credentials (README, CI's workload identity
    # federation), not necessarily a gcloud login.
    assert user["user"]["exec"]["args"] == ["--use_application_default_credentials"]
    assert "token" not in user["user"] and "client-key-data" not in user["user"]


# --- node pools -------------------------------------------------------------------------------


def test_one_node_pool_per_pool_plus_the_system_pool(gcp: Planned) -> None:
    e = gcp.expected
    pools = {r.inputs["name"]: r for r in gcp.of_type(NODE_POOL)}
    assert set(pools) == set(e.pools)
    for name, want in e.pools.items():
        p = pools[name].inputs
        node = p["nodeConfig"]
        assert p["cluster"] == e.cluster
        assert p["location"] == e.region
        assert p["nodeLocations"] == list(want.zones), name
        assert node["machineType"] == want.machine_type, name
        # None of the shipped machines is of a Hyperdisk-only series.
        assert node["diskType"] == "pd-balanced", name
        assert node["spot"] is want.spot, name
        low, high = want.sizes
        assert p["autoscaling"]["totalMinNodeCount"] == low, name
        assert p["autoscaling"]["totalMaxNodeCount"] == high, name
        assert p["management"] == {"autoRepair": True, "autoUpgrade": True}, name
        assert node["serviceAccount"] == _node_email(e)
        assert node["workloadMetadataConfig"] == {"mode": "GKE_METADATA"}
        assert node["shieldedInstanceConfig"] == {
            "enableSecureBoot": True,
            "enableIntegrityMonitoring": True,
        }
        assert node["metadata"] == {"disable-legacy-endpoints": "true"}
        assert node["labels"]["mlstack.dev/pool"] == name
        if want.accelerator is None:
            assert "guestAccelerators" not in node or not node["guestAccelerators"], name
            assert node.get("taints", []) == [], name
            assert node["labels"]["mlstack.dev/pool-kind"] == "cpu"
            continue
        [acc] = node["guestAccelerators"]
        assert acc["type"] == want.accelerator, name
        assert acc["count"] == want.gpus, name
        assert acc["gpuDriverInstallationConfig"] == {"gpuDriverVersion": "LATEST"}
        assert node["taints"] == [GPU_TAINT], name
        assert node["labels"]["mlstack.dev/pool-kind"] == "gpu"
        assert node["labels"]["mlstack.dev/capacity"] == ("spot" if want.spot else "on-demand")
        # GPUs come where there is capacity; one node at a time on upgrades (no surge quota).
        assert p["autoscaling"]["locationPolicy"] == "ANY"
        assert p["upgradeSettings"]["maxSurge"] == 0


def test_pools_scale_from_zero_and_the_autoscaler_owns_their_size(gcp: Planned) -> None:
    for pool in gcp.of_type(NODE_POOL):
        low = pool.inputs["autoscaling"]["totalMinNodeCount"]
        if low == 0:
            assert pool.inputs["initialNodeCount"] == 0, pool.name
        assert "initialNodeCount" in gcp.opts(pool).ignore_changes


def test_node_pools_wait_for_the_cluster_and_kubernetes_objects_for_the_pools(
    gcp: Planned,
) -> None:
    cluster = gcp.get(CLUSTER, "gcp-cluster")
    pools = gcp.of_type(NODE_POOL)
    component = next(r for r in gcp.plan.resources if r.urn == pools[0].parent)
    assert cluster.urn in _dependencies(gcp, component)
    # By name: registration order is not deterministic, and the first Namespace found may be a
    # team's, whose component does not list the pools itself.
    namespace = gcp.get("kubernetes:core/v1:Namespace", "system-namespace")
    parent = next(r for r in gcp.plan.resources if r.urn == namespace.parent)
    assert {p.urn for p in pools} <= _dependencies(gcp, parent)


def test_gke_runs_the_device_plugin_so_the_chart_is_not_installed(gcp: Planned) -> None:
    charts = {r.inputs.get("chart") for r in gcp.of_type(HELM_RELEASE)}
    assert "nvidia-device-plugin" not in charts
    assert any("kueue" in str(c) for c in charts)


# --- storage and registry ---------------------------------------------------------------------


def test_three_private_versioned_buckets(gcp: Planned) -> None:
    e = gcp.expected
    for purpose in PURPOSES:
        b = gcp.get(BUCKET, f"gcp-storage-{purpose}").inputs
        assert b["name"] == _bucket(e, purpose)
        assert b["location"] == e.region.upper()
        assert b["uniformBucketLevelAccess"] is True
        assert b["publicAccessPrevention"] == "enforced"
        assert b["versioning"] == {"enabled": True}
        assert b["forceDestroy"] is False
        if e.cmek:
            assert b["encryption"] == {"defaultKmsKeyName": _key_id(e, "storage")}
        else:
            assert "encryption" not in b


def test_cmek_buckets_wait_for_the_storage_agents_grant_on_their_key(
    planned: dict[str, Planned],
) -> None:
    # Naming the key is not enough: GCS refuses the bucket (403 "Permission denied on Cloud KMS
    # key") until its service agent may use the key (terraform-google-kms#39).
    prod = planned["gcp-prod"]
    grant = next(g for g in prod.of_type(KEY_IAM) if g.name == "gcp-keys-storage-gcs")
    assert grant.inputs["cryptoKeyId"] == _key_id(prod.expected, "storage")
    for purpose in PURPOSES:
        bucket = prod.get(BUCKET, f"gcp-storage-{purpose}")
        assert grant.urn in _dependencies(prod, bucket), purpose
    dev = planned["gcp-dev"]
    for bucket in dev.of_type(BUCKET):
        assert not {u for u in _dependencies(dev, bucket) if KEY_IAM in u}, bucket.name


def _rules(bucket: PlannedResource) -> dict[str, dict[str, Any]]:
    return {r["action"]["type"]: r for r in bucket.inputs["lifecycleRules"]}


def test_bucket_lifecycle_rules(planned: dict[str, Planned]) -> None:
    dev = planned["gcp-dev"]
    checkpoints = _rules(dev.get(BUCKET, "gcp-storage-checkpoints"))
    assert checkpoints["Delete"]["condition"] == {
        "withState": "ARCHIVED",
        "daysSinceNoncurrentTime": 7,
    }
    assert checkpoints["AbortIncompleteMultipartUpload"]["condition"] == {"age": 7}
    # Checkpoints go to a colder class after 30 days by default; the other buckets do not.
    assert checkpoints["SetStorageClass"]["action"]["storageClass"] == "NEARLINE"
    assert checkpoints["SetStorageClass"]["condition"]["age"] == 30
    assert checkpoints["SetStorageClass"]["condition"]["withState"] == "LIVE"
    assert "SetStorageClass" not in _rules(dev.get(BUCKET, "gcp-storage-datasets"))
    prod = planned["gcp-prod"]
    assert (
        _rules(prod.get(BUCKET, "gcp-storage-checkpoints"))["SetStorageClass"]["condition"]["age"]
        == 60
    )
    assert (
        _rules(prod.get(BUCKET, "gcp-storage-models"))["Delete"]["condition"][
            "daysSinceNoncurrentTime"
        ]
        == 90
    )


def test_registry_is_immutable_bounded_and_readable_by_the_nodes(gcp: Planned) -> None:
    e = gcp.expected
    repo = gcp.get(REPOSITORY, "gcp-registry").inputs
    assert repo["repositoryId"] == "ml"
    assert repo["format"] == "DOCKER"
    assert repo["location"] == e.region
    assert repo["dockerConfig"] == {"immutableTags": True}
    assert repo["cleanupPolicyDryRun"] is False
    policies = {p["id"]: p for p in repo["cleanupPolicies"]}
    keep = 20 if gcp.stack == "gcp-dev" else 100
    assert policies["keep-recent"]["action"] == "KEEP"
    assert policies["keep-recent"]["mostRecentVersions"] == {"keepCount": keep}
    assert policies["delete-old"]["action"] == "DELETE"
    # What the workloads pin is kept whatever its age or rank ("If an artifact version matches
    # criteria in both a delete policy and a keep policy, Artifact Registry applies the keep
    # policy"): delete-old would otherwise remove a 30-day-old image a job still pulls.
    workloads = gcp.plan.platform.workloads
    pinned = {w.image for w in (*workloads.training_jobs, *workloads.inference_services)}
    if pinned:
        assert policies["keep-deployed-tags"] == {
            "id": "keep-deployed-tags",
            "action": "KEEP",
            "condition": {"tagState": "TAGGED", "tagPrefixes": sorted(pinned)},
        }
    else:
        assert "keep-deployed-tags" not in policies
    [reader] = gcp.of_type(REPOSITORY_IAM)
    assert reader.inputs["role"] == "roles/artifactregistry.reader"
    assert reader.inputs["member"] == f"serviceAccount:{_node_email(e)}"
    assert reader.inputs["repository"] == "ml"
    assert gcp.plan.outputs["registry_url"] == f"{e.region}-docker.pkg.dev/{e.project}/ml"


# --- keys -------------------------------------------------------------------------------------


def test_cmek_keys_rotate_and_each_service_agent_uses_only_its_own(
    planned: dict[str, Planned],
) -> None:
    assert planned["gcp-dev"].of_type(CRYPTO_KEY) == []
    prod = planned["gcp-prod"]
    e = prod.expected
    [ring] = prod.of_type(KEY_RING)
    assert ring.inputs["name"] == e.cluster and ring.inputs["location"] == e.region
    keys = {k.inputs["name"]: k for k in prod.of_type(CRYPTO_KEY)}
    assert set(keys) == {"storage", "secrets"}
    for key in keys.values():
        assert key.inputs["rotationPeriod"] == "7776000s"
        assert key.inputs["purpose"] == "ENCRYPT_DECRYPT"
    grants = {g.inputs["cryptoKeyId"]: g.inputs for g in prod.of_type(KEY_IAM)}
    assert grants == {
        _key_id(e, "storage"): {
            "cryptoKeyId": _key_id(e, "storage"),
            "role": "roles/cloudkms.cryptoKeyEncrypterDecrypter",
            "member": f"serviceAccount:service-{PROJECT_NUMBER}"
            "@gs-project-accounts.iam.gserviceaccount.com",
        },
        _key_id(e, "secrets"): {
            "cryptoKeyId": _key_id(e, "secrets"),
            "role": "roles/cloudkms.cryptoKeyEncrypterDecrypter",
            "member": f"serviceAccount:service-{PROJECT_NUMBER}"
            "@container-engine-robot.iam.gserviceaccount.com",
        },
    }
    # GKE can encrypt secrets only once its agent may use the key.
    cluster = prod.get(CLUSTER, "gcp-cluster")
    component = next(r for r in prod.plan.resources if r.urn == cluster.parent)
    secrets_grant = next(g for g in prod.of_type(KEY_IAM) if g.name == "gcp-keys-secrets-gke")
    assert secrets_grant.urn in _dependencies(prod, component)


# --- protection -------------------------------------------------------------------------------


def test_prod_protects_and_retains_buckets_keys_and_the_repository(
    planned: dict[str, Planned],
) -> None:
    prod = planned["gcp-prod"]
    stateful = [*prod.of_type(BUCKET), *prod.of_type(REPOSITORY), *prod.of_type(CRYPTO_KEY)]
    assert len(stateful) == 6
    for r in stateful:
        assert prod.opts(r).protect, r.name
        assert prod.opts(r).retain_on_delete, r.name
    cluster = prod.get(CLUSTER, "gcp-cluster")
    assert prod.opts(cluster).protect
    # Key rings cannot be deleted in GCP: Pulumi forgets them rather than failing.
    [ring] = prod.of_type(KEY_RING)
    assert prod.opts(ring).retain_on_delete


def test_dev_protects_nothing(planned: dict[str, Planned]) -> None:
    dev = planned["gcp-dev"]
    assert not [r.name for r in dev.plan.resources if dev.opts(r).protect]
    assert not [r.name for r in dev.plan.resources if dev.opts(r).retain_on_delete]


# --- workload identity ------------------------------------------------------------------------


def test_each_team_has_a_service_account_only_its_workloads_can_use(gcp: Planned) -> None:
    e = gcp.expected
    for team in e.teams:
        account = gcp.get(ACCOUNT, f"gcp-team-{team}")
        assert account.inputs["accountId"] == f"{e.cluster}-{team}"
        [binding] = [
            b for b in gcp.of_type(ACCOUNT_IAM) if b.name == f"gcp-team-{team}-workload-identity"
        ]
        assert binding.inputs["serviceAccountId"] == (
            f"projects/{e.project}/serviceAccounts/{_email(e, f'{e.cluster}-{team}')}"
        )
        assert binding.inputs["role"] == "roles/iam.workloadIdentityUser"
        assert binding.inputs["member"] == (
            f"serviceAccount:{e.project}.svc.id.goog[{team}/{SERVICE_ACCOUNT_NAME}]"
        )
        [sa] = [
            r
            for r in gcp.of_type(SERVICE_ACCOUNT)
            if r.inputs["metadata"]["namespace"] == team
            and r.inputs["metadata"]["name"] == SERVICE_ACCOUNT_NAME
        ]
        assert sa.inputs["metadata"]["annotations"] == {
            "iam.gke.io/gcp-service-account": _email(e, f"{e.cluster}-{team}")
        }
    # A team with pipelines lets its pipeline runner act as the same account, and only then.
    with_pipelines = {p.team for p in gcp.plan.platform.workloads.pipelines}
    runners = [b for b in gcp.of_type(ACCOUNT_IAM) if b.name.endswith("-pipeline-runner")]
    assert sorted(b.inputs["member"] for b in runners) == sorted(
        f"serviceAccount:{e.project}.svc.id.goog[{team}/pipeline-runner]" for team in with_pipelines
    )
    assert len(gcp.of_type(ACCOUNT_IAM)) == len(e.teams) + len(with_pipelines)


def test_team_bucket_grants_are_least_privilege(gcp: Planned) -> None:
    e = gcp.expected
    [role] = gcp.of_type(CUSTOM_ROLE)
    assert sorted(role.inputs["permissions"]) == ["storage.buckets.get", "storage.objects.list"]
    reader = f"projects/{e.project}/roles/{role.inputs['roleId']}"
    for team in e.teams:
        member = f"serviceAccount:{_email(e, f'{e.cluster}-{team}')}"
        grants = [g.inputs for g in gcp.of_type(BUCKET_IAM) if g.inputs["member"] == member]
        by_bucket: dict[str, dict[str, Any]] = {}
        for g in grants:
            by_bucket.setdefault(g["bucket"], {})[g["role"]] = g.get("condition")
        assert by_bucket[_bucket(e, "datasets")] == {
            reader: None,
            "roles/storage.objectViewer": None,
        }
        for purpose in ("checkpoints", "models"):
            bucket = _bucket(e, purpose)
            condition = by_bucket[bucket]["roles/storage.objectUser"]
            assert condition["expression"] == (
                f'resource.name.startsWith("projects/_/buckets/{bucket}/objects/{team}/")'
            )
            assert by_bucket[bucket] == {reader: None, "roles/storage.objectUser": condition}
        assert len(grants) == 6


def test_outputs(gcp: Planned) -> None:
    e = gcp.expected
    out = gcp.plan.outputs
    assert out["cloud"] == "gcp"
    assert out["project"] == e.project
    assert out["zones"] == list(e.zones)
    assert out["bucket_urls"] == {p: f"gs://{_bucket(e, p)}" for p in PURPOSES}
    assert out["bucket_names"] == {p: _bucket(e, p) for p in PURPOSES}
    assert out["team_service_accounts"] == {t: _email(e, f"{e.cluster}-{t}") for t in e.teams}
    assert out["node_service_account"] == _node_email(e)
    assert (
        out["registry_repository"] == f"projects/{e.project}/locations/{e.region}/repositories/ml"
    )
    # GCS needs no region or endpoint in the workloads' environment.
    env = out["platform_env"]
    assert env["MLSTACK_CHECKPOINTS_URL"] == f"gs://{_bucket(e, 'checkpoints')}"
    assert "AWS_REGION" not in env and "AWS_ENDPOINT_URL_S3" not in env


def test_kubeconfig_output_is_a_secret_and_masked_in_json(gcp: Planned) -> None:
    assert is_secret(gcp.plan.outputs["kubeconfig"])
    masked = mask_secrets(gcp.plan.outputs)
    assert masked["kubeconfig"]["value"] == "[secret]"


# --- a stack created again after a destroy ----------------------------------------------------


def test_a_cmek_stack_created_again_after_a_destroy_names_a_new_key_ring() -> None:
    """GCP never deletes a key ring (pulumi-gcp kms.KeyRing: destroy "will remove it from
    state but will not delete the resource from the project"), so creating gcp-prod again
    under its cluster name answers 409 already exists; `gcp.kms_key_ring` names a new ring,
    and its keys are new keys under it."""
    stack = read_stack("gcp-prod")
    config = copy.deepcopy(dict(stack.config))
    config["mlstack:platform"]["gcp"]["kms_key_ring"] = "ml-prod-2"
    plan = run_plan(dataclasses.replace(stack, config=config))
    [ring] = plan.of_type(KEY_RING)
    assert ring.inputs["name"] == "ml-prod-2"
    ring_id = "projects/acme-ml-prod/locations/us-central1/keyRings/ml-prod-2"
    assert {k.inputs["keyRing"] for k in plan.of_type(CRYPTO_KEY)} == {ring_id}


def test_a_key_ring_name_without_cmek_is_refused() -> None:
    config = copy.deepcopy(dict(read_stack("gcp-dev").config))
    config["mlstack:platform"]["gcp"]["kms_key_ring"] = "ml-dev-2"
    p = only_problem(config["mlstack:platform"])
    assert p.path == "platform.gcp.kms_key_ring" and "gcp.cmek: true" in p.fix


# --- managed Prometheus: what it scrapes, and from where ----------------------------------------

POD_MONITORING = "kubernetes:monitoring.googleapis.com/v1:PodMonitoring"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"


def _reaches(gcp: Planned, start: PlannedResource, type_: str) -> bool:
    """Whether `start` waits, through dependencies and its provider, for a resource of `type_`."""
    by_urn = {r.urn: r for r in gcp.plan.resources}
    seen: set[str] = set()
    todo = [start.urn]
    while todo:
        urn = todo.pop()
        if urn in seen or urn not in by_urn:
            continue
        seen.add(urn)
        r = by_urn[urn]
        if r.type == type_:
            return True
        todo.extend(gcp.opts(r).dependencies)
        if r.provider:
            todo.append(
                r.provider.split("::")[0]
                if "::" not in r.provider
                else r.provider.rsplit("::", 1)[0]
            )
    return False


def test_every_inference_service_has_a_pod_monitoring_that_waits_for_the_cluster(
    gcp: Planned,
) -> None:
    """Issue 16, item 13: managed Prometheus scrapes only PodMonitoring targets; GKE installs
    the CRD with the cluster, so the object must come after it."""
    services = gcp.plan.platform.workloads.inference_services
    monitorings = gcp.of_type(POD_MONITORING)
    assert {
        (m.inputs["metadata"]["namespace"], m.inputs["metadata"]["name"]) for m in monitorings
    } == {(s.team, s.name) for s in services}
    for m in monitorings:
        assert _reaches(gcp, m, "gcp:container/cluster:Cluster"), m.name


def test_team_network_policies_admit_the_managed_prometheus_collectors(gcp: Planned) -> None:
    for team in gcp.plan.platform.teams:
        [allow] = [
            p
            for p in gcp.of_type(NETWORK_POLICY)
            if p.inputs["metadata"]["namespace"] == team.name
            and p.inputs["metadata"]["name"] == ALLOW_INGRESS_POLICY
        ]
        peers = [peer for rule in allow.inputs["spec"]["ingress"] for peer in rule["from"]]
        assert {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gmp-system"}}
        } in peers
