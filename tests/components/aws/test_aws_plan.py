"""The offline plan of the shipped AWS stacks (aws-dev, aws-prod): the inputs that matter.

Each stack is planned once per module. Resources are found by type and logical name, never by
position; ARNs and IDs the cloud computes are the offline placeholders (account 000000000000,
`<name>-id` for IDs). Resource options (protect, retainOnDelete, ignoreChanges, dependencies)
are not part of `PlannedResource`, so the plan here runs with a RecordingMonitor subclass that
also keeps them from each registration request. That every Kubernetes object of these plans is
schema-valid is tests/stacks/test_render.py's job (it covers every shipped stack).
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests_support import PlanWithOptions, plan_with_options

from mlstack.components.aws.backend import AwsBackend
from mlstack.components.aws.offline import ACCOUNT
from mlstack.components.kubernetes.addons import CLUSTER_AUTOSCALER
from mlstack.stacks.names import SERVICE_ACCOUNT_NAME
from mlstack.stacks.plan import PlannedResource, is_secret, mask_secrets
from mlstack.stacks.schema import PoolKind
from mlstack.stacks.stackfile import read_stack
from mlstack.stacks.validate import load_platform
from mlstack.stacks.versions import version_set

AWS_STACKS = ("aws-dev", "aws-prod")
REPO = Path(__file__).resolve().parents[3]

VPC = "aws:ec2/vpc:Vpc"
SUBNET = "aws:ec2/subnet:Subnet"
NAT = "aws:ec2/natGateway:NatGateway"
EIP = "aws:ec2/eip:Eip"
IGW = "aws:ec2/internetGateway:InternetGateway"
ROUTE_TABLE = "aws:ec2/routeTable:RouteTable"
ROUTE_ASSOC = "aws:ec2/routeTableAssociation:RouteTableAssociation"
CLUSTER = "aws:eks/cluster:Cluster"
ACCESS_ENTRY = "aws:eks/accessEntry:AccessEntry"
ACCESS_POLICY = "aws:eks/accessPolicyAssociation:AccessPolicyAssociation"
ADDON = "aws:eks/addon:Addon"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
ASG_TAG = "aws:autoscaling/tag:Tag"
SG_INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
KMS_KEY = "aws:kms/key:Key"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ROLE_ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
POD_IDENTITY = "aws:eks/podIdentityAssociation:PodIdentityAssociation"
BUCKET = "aws:s3/bucket:Bucket"
PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
OWNERSHIP = "aws:s3/bucketOwnershipControls:BucketOwnershipControls"
SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
VERSIONING = "aws:s3/bucketVersioning:BucketVersioning"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
LIFECYCLE = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
REPOSITORY = "aws:ecr/repository:Repository"
ECR_LIFECYCLE = "aws:ecr/lifecyclePolicy:LifecyclePolicy"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
JOBSET = "kubernetes:jobset.x-k8s.io/v1alpha2:JobSet"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
PURPOSES = ("datasets", "checkpoints", "models")
TEMPLATE = "k8s.io/cluster-autoscaler/node-template"


@dataclass(frozen=True)
class Pool:
    """What a node group is expected to be created with."""

    instance_type: str
    ami: str
    capacity: str
    min_size: int
    max_size: int
    gpus: int = 0


@dataclass(frozen=True)
class Expected:
    """Literal expectations per shipped stack: the config and the catalogs resolve to these."""

    cluster: str
    region: str
    zones: tuple[str, ...]
    nat_zones: tuple[str, ...]
    public_access_cidrs: tuple[str, ...]
    admins: tuple[str, ...]
    access_groups: Mapping[str, tuple[str, ...]]
    pools: Mapping[str, Pool]
    teams: tuple[str, ...]
    bucket_prefix: str
    noncurrent_days: Mapping[str, int]
    archive_days: Mapping[str, int]
    keep_last_images: int
    prod: bool


GPU_AMI, CPU_AMI = "AL2023_x86_64_NVIDIA", "AL2023_x86_64_STANDARD"
EXPECTED = {
    "aws-dev": Expected(
        cluster="ml-dev",
        region="us-east-1",
        zones=("us-east-1a", "us-east-1b"),
        nat_zones=("us-east-1a",),
        public_access_cidrs=("203.0.113.0/24",),
        admins=("arn:aws:iam::123456789012:role/platform-admins",),
        access_groups={"arn:aws:iam::123456789012:role/ml-engineers": ("ml-engineers",)},
        pools={
            "system": Pool("m6i.large", CPU_AMI, "ON_DEMAND", 1, 2),
            "cpu": Pool("m6i.2xlarge", CPU_AMI, "ON_DEMAND", 0, 4),
            "l4": Pool("g6.xlarge", GPU_AMI, "SPOT", 0, 4, gpus=1),
        },
        teams=("ml",),
        bucket_prefix="acme-ml-dev",
        noncurrent_days={"datasets": 30, "checkpoints": 7, "models": 30},
        archive_days={"checkpoints": 30},
        keep_last_images=20,
        prod=False,
    ),
    "aws-prod": Expected(
        cluster="ml-prod",
        region="us-west-2",
        zones=("us-west-2a", "us-west-2b", "us-west-2c"),
        nat_zones=("us-west-2a", "us-west-2b", "us-west-2c"),
        public_access_cidrs=(),
        admins=("arn:aws:iam::210987654321:role/platform-admins",),
        access_groups={
            "arn:aws:iam::210987654321:role/vision-engineers": ("vision-engineers",),
            "arn:aws:iam::210987654321:role/language-engineers": ("language-engineers",),
            "arn:aws:iam::210987654321:role/ml-auditors": ("ml-auditors",),
        },
        pools={
            "system": Pool("m6i.xlarge", CPU_AMI, "ON_DEMAND", 2, 4),
            "cpu": Pool("m6i.4xlarge", CPU_AMI, "ON_DEMAND", 1, 20),
            "h100": Pool("p5.48xlarge", GPU_AMI, "ON_DEMAND", 0, 4, gpus=8),
            "a100": Pool("p4d.24xlarge", GPU_AMI, "ON_DEMAND", 0, 2, gpus=8),
            "l4-spot": Pool("g6.12xlarge", GPU_AMI, "SPOT", 0, 8, gpus=4),
        },
        teams=("vision", "language"),
        bucket_prefix="acme-ml-prod",
        noncurrent_days={"datasets": 30, "checkpoints": 14, "models": 90},
        archive_days={"checkpoints": 60},
        keep_last_images=100,
        prod=True,
    ),
}


# --- planning with resource options -----------------------------------------------------------


@dataclass(frozen=True)
class Planned(PlanWithOptions):
    @property
    def expected(self) -> Expected:
        return EXPECTED[self.stack]


@pytest.fixture(scope="module")
def planned() -> dict[str, Planned]:
    return {stack: Planned(stack, *plan_with_options(stack)) for stack in AWS_STACKS}


@pytest.fixture(params=AWS_STACKS)
def aws(request: pytest.FixtureRequest, planned: dict[str, Planned]) -> Planned:
    return planned[request.param]


def _id(resource: PlannedResource) -> str:
    """The mock ID of a resource, as other resources' inputs refer to it."""
    return f"{resource.name}-id"


def _role_arn(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:role/{name}-offline"


def _cluster_arn(e: Expected) -> str:
    return f"arn:aws:eks:{e.region}:{ACCOUNT}:cluster/{e.cluster}"


def _key_arn(e: Expected, name: str) -> str:
    return f"arn:aws:kms:{e.region}:{ACCOUNT}:key/{name}-offline"


def _doc(resource: PlannedResource, field: str) -> dict[str, Any]:
    text = resource.inputs[field]
    assert isinstance(text, str), f"{resource.name}.{field} is a JSON document"
    return json.loads(text)


def _images(aws: Planned) -> set[str]:
    """Every container image of the plan's JobSets and Deployments."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("image"), str) and "name" in value:
                found.add(value["image"])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for type_ in (JOBSET, DEPLOYMENT):
        for resource in aws.of_type(type_):
            walk(dict(resource.inputs))
    return found


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _allows(document: Mapping[str, Any], action: str, resource: str) -> bool:
    """Whether an Allow statement matches action and resource (conditions not evaluated)."""
    return any(
        s["Effect"] == "Allow"
        and any(fnmatch.fnmatchcase(action, a) for a in _as_list(s["Action"]))
        and any(fnmatch.fnmatchcase(resource, r) for r in _as_list(s["Resource"]))
        for s in document["Statement"]
    )


def _statement(document: Mapping[str, Any], sid: str) -> dict[str, Any]:
    [found] = [s for s in document["Statement"] if s.get("Sid") == sid]
    return found


# --- no static credentials, one explicit provider ---------------------------------------------


def test_no_iam_user_or_access_key_anywhere(aws: Planned) -> None:
    types = {r.type for r in aws.plan.resources}
    assert not {t for t in types if t.startswith(("aws:iam/user", "aws:iam/accessKey"))}
    assert "aws:iam/accessKey:AccessKey" not in types
    assert "aws:iam/user:User" not in types


def test_every_aws_resource_uses_the_stacks_explicit_provider(aws: Planned) -> None:
    e = aws.expected
    provider = aws.get("pulumi:providers:aws", "aws")
    assert provider.inputs["region"] == e.region
    default_tags = json.loads(provider.inputs["defaultTags"])["tags"]
    assert default_tags["mlstack.dev/cluster"] == e.cluster
    assert default_tags["mlstack.dev/environment"] == aws.plan.platform.environment
    ref = f"{provider.urn}::{_id(provider)}"
    custom = [r for r in aws.plan.resources if r.custom and r.type.startswith("aws:")]
    assert custom
    assert {r.provider for r in custom} == {ref}


# --- network ----------------------------------------------------------------------------------


def test_vpc(aws: Planned) -> None:
    vpc = aws.get(VPC, "aws-network-vpc")
    assert vpc.inputs["cidrBlock"] == "10.0.0.0/16"
    assert vpc.inputs["enableDnsHostnames"] is True
    assert vpc.inputs["enableDnsSupport"] is True


def test_one_private_and_one_public_subnet_per_zone_with_the_elb_tags(aws: Planned) -> None:
    e = aws.expected
    owned = f"kubernetes.io/cluster/{e.cluster}"
    subnets = {s.name: s for s in aws.of_type(SUBNET)}
    assert set(subnets) == {
        f"aws-network-{kind}-{zone}" for zone in e.zones for kind in ("private", "public")
    }
    for zone in e.zones:
        private = subnets[f"aws-network-private-{zone}"]
        public = subnets[f"aws-network-public-{zone}"]
        for subnet in (private, public):
            assert subnet.inputs["availabilityZone"] == zone
            assert subnet.inputs["vpcId"] == "aws-network-vpc-id"
            assert subnet.inputs["tags"][owned] == "shared"
        assert private.inputs["tags"]["kubernetes.io/role/internal-elb"] == "1"
        assert "kubernetes.io/role/elb" not in private.inputs["tags"]
        assert public.inputs["tags"]["kubernetes.io/role/elb"] == "1"
        assert "kubernetes.io/role/internal-elb" not in public.inputs["tags"]
        # Nodes never live in public subnets; load balancers get their own addresses.
        assert public.inputs["mapPublicIpOnLaunch"] is False


def test_nat_gateways_and_every_private_route_table_routes_to_a_nat(aws: Planned) -> None:
    e = aws.expected
    nats = {n.name: n for n in aws.of_type(NAT)}
    assert set(nats) == {f"aws-network-nat-{zone}" for zone in e.nat_zones}
    eips = {_id(x) for x in aws.of_type(EIP)}
    assert len(eips) == len(nats)
    igw = aws.get(IGW, "aws-network-igw")
    for zone in e.nat_zones:
        nat = nats[f"aws-network-nat-{zone}"]
        assert nat.inputs["subnetId"] == f"aws-network-public-{zone}-id"
        assert nat.inputs["allocationId"] in eips
        assert igw.urn in aws.opts(nat).dependencies, "a NAT gateway needs the IGW first"
    nat_ids = {_id(n) for n in nats.values()}
    associations = {
        a.inputs["subnetId"]: a.inputs["routeTableId"] for a in aws.of_type(ROUTE_ASSOC)
    }
    for zone in e.zones:
        table = aws.get(ROUTE_TABLE, f"aws-network-private-{zone}")
        [route] = table.inputs["routes"]
        assert route["cidrBlock"] == "0.0.0.0/0"
        assert route["natGatewayId"] in nat_ids
        if len(nat_ids) > 1:  # per-az: each zone egresses through its own NAT
            assert route["natGatewayId"] == f"aws-network-nat-{zone}-id"
        assert "gatewayId" not in route
        assert associations[f"aws-network-private-{zone}-id"] == _id(table)
        assert associations[f"aws-network-public-{zone}-id"] == "aws-network-public-id"
    public = aws.get(ROUTE_TABLE, "aws-network-public")
    assert public.inputs["routes"] == [{"cidrBlock": "0.0.0.0/0", "gatewayId": _id(igw)}]


def test_dev_has_one_nat_gateway_and_prod_one_per_zone(planned: dict[str, Planned]) -> None:
    assert len(planned["aws-dev"].of_type(NAT)) == 1
    assert len(planned["aws-prod"].of_type(NAT)) == 3
    assert len(planned["aws-dev"].plan.outputs["availability_zones"]) == 2
    assert len(planned["aws-prod"].plan.outputs["availability_zones"]) == 3


# --- the EKS control plane --------------------------------------------------------------------


def test_eks_cluster(aws: Planned) -> None:
    e = aws.expected
    cluster = aws.get(CLUSTER, "aws-cluster")
    i = cluster.inputs
    assert i["name"] == e.cluster
    assert i["version"] == aws.plan.platform.cluster.kubernetes_version == "1.35"
    vpc = i["vpcConfig"]
    assert vpc["endpointPrivateAccess"] is True
    assert vpc["subnetIds"] == [f"aws-network-private-{zone}-id" for zone in e.zones]
    if e.public_access_cidrs:
        assert vpc["endpointPublicAccess"] is True
        assert vpc["publicAccessCidrs"] == list(e.public_access_cidrs)
    else:
        assert vpc["endpointPublicAccess"] is False
        assert not vpc.get("publicAccessCidrs")
    assert i["encryptionConfig"] == {
        "provider": {"keyArn": _key_arn(e, "aws-cluster-secrets-key")},
        "resources": ["secrets"],
    }
    assert sorted(i["enabledClusterLogTypes"]) == sorted(
        ["api", "audit", "authenticator", "controllerManager", "scheduler"]
    )
    assert i["accessConfig"]["authenticationMode"] == "API"
    assert i["roleArn"] == _role_arn("aws-cluster-role")
    key = aws.get(KMS_KEY, "aws-cluster-secrets-key")
    assert key.inputs["enableKeyRotation"] is True
    logs = aws.get(LOG_GROUP, "aws-cluster-logs")
    assert logs.inputs["name"] == f"/aws/eks/{e.cluster}/cluster"
    assert logs.inputs["retentionInDays"] == 90
    assert logs.urn in aws.opts(cluster).dependencies, "EKS would create the log group itself"


def test_prod_api_endpoint_is_private_only(planned: dict[str, Planned]) -> None:
    vpc = planned["aws-prod"].get(CLUSTER, "aws-cluster").inputs["vpcConfig"]
    assert vpc["endpointPublicAccess"] is False
    assert vpc["endpointPrivateAccess"] is True


def test_the_private_endpoint_admits_the_api_access_cidrs_on_443(aws: Planned) -> None:
    """EKS user guide, cluster-endpoint.html: the cluster security group must allow 443 from the
    connected network (VPN, bastion, CI runner); aws-prod's VPN range gets one rule."""
    cluster = aws.get(CLUSTER, "aws-cluster")
    rules = aws.children(aws.get("mlstack:aws:EksCluster", "aws-cluster"), SG_INGRESS)
    cidrs = aws.plan.platform.aws.api_access_cidrs if aws.plan.platform.aws else ()
    assert [r.inputs["cidrIpv4"] for r in rules] == list(cidrs)
    assert bool(rules) == (aws.stack == "aws-prod")
    for r in rules:
        assert r.inputs == {
            "securityGroupId": "sg-aws-cluster-offline",  # the cluster's own security group
            "ipProtocol": "tcp",
            "fromPort": 443,
            "toPort": 443,
            "cidrIpv4": r.inputs["cidrIpv4"],
            "description": f"EKS API private endpoint from {r.inputs['cidrIpv4']}",
        }
        assert cluster.urn in aws.opts(r).dependencies


def test_control_plane_role_trusts_eks(aws: Planned) -> None:
    role = aws.get(ROLE, "aws-cluster-role")
    [statement] = _doc(role, "assumeRolePolicy")["Statement"]
    assert statement["Principal"] == {"Service": "eks.amazonaws.com"}
    attachment = aws.get(ROLE_ATTACHMENT, "aws-cluster-role-policy")
    assert attachment.inputs["policyArn"] == "arn:aws:iam::aws:policy/AmazonEKSClusterPolicy"


def test_admins_get_the_cluster_admin_policy_at_cluster_scope(aws: Planned) -> None:
    e = aws.expected
    entries = {r.inputs["principalArn"]: r for r in aws.of_type(ACCESS_ENTRY)}
    policies = {r.inputs["principalArn"]: r for r in aws.of_type(ACCESS_POLICY)}
    assert set(policies) == set(e.admins), "only admins get an access policy"
    for arn in e.admins:
        assert entries[arn].inputs["clusterName"] == e.cluster
        assert not entries[arn].inputs.get("kubernetesGroups")
        assert policies[arn].inputs["policyArn"] == (
            "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
        )
        assert policies[arn].inputs["accessScope"] == {"type": "cluster"}
        assert entries[arn].urn in aws.opts(policies[arn]).dependencies


def test_team_access_entries_map_principals_to_kubernetes_groups(aws: Planned) -> None:
    e = aws.expected
    entries = {r.inputs["principalArn"]: r for r in aws.of_type(ACCESS_ENTRY)}
    assert set(entries) == set(e.admins) | set(e.access_groups)
    team_groups = {g for t in aws.plan.platform.teams for g in (*t.groups, *t.viewer_groups)}
    for arn, groups in e.access_groups.items():
        assert tuple(entries[arn].inputs["kubernetesGroups"]) == groups
        assert set(groups) <= team_groups, "each group is bound by a team's RoleBinding"


def test_pod_identity_agent_addon_waits_for_the_system_nodes(aws: Planned) -> None:
    addon = aws.get(ADDON, "aws-cluster-pod-identity")
    assert addon.inputs["addonName"] == "eks-pod-identity-agent"
    assert addon.inputs["clusterName"] == aws.expected.cluster
    system = aws.get(NODE_GROUP, "aws-nodes-system")
    assert system.urn in aws.opts(addon).dependencies


def test_the_kubernetes_provider_gets_the_kubeconfig_as_a_secret(aws: Planned) -> None:
    provider = aws.get("pulumi:providers:kubernetes", "aws-kubernetes")
    assert is_secret(provider.inputs["kubeconfig"])


# --- node groups ------------------------------------------------------------------------------


def test_one_node_group_per_pool_plus_the_system_group(aws: Planned) -> None:
    e = aws.expected
    groups = {g.name.removeprefix("aws-nodes-"): g for g in aws.of_type(NODE_GROUP)}
    assert set(groups) == set(e.pools)
    assert set(e.pools) - {"system"} == {p.name for p in aws.plan.platform.node_pools}
    for name, pool in e.pools.items():
        i = groups[name].inputs
        assert i["instanceTypes"] == [pool.instance_type], name
        assert i["amiType"] == pool.ami, name
        assert i["capacityType"] == pool.capacity, name
        assert i["scalingConfig"] == {
            "minSize": pool.min_size,
            "maxSize": pool.max_size,
            "desiredSize": pool.min_size,
        }, name
        assert i["clusterName"] == e.cluster
        assert i["subnetIds"] == [f"aws-network-private-{zone}-id" for zone in e.zones]
        assert i["nodeRoleArn"] == _role_arn("aws-nodes-role")
        assert i["labels"]["mlstack.dev/pool"] == name
        options = aws.opts(groups[name])
        # The autoscaler owns the size once the group exists.
        assert "scalingConfig.desiredSize" in options.ignore_changes
        assert aws.get(CLUSTER, "aws-cluster").urn in options.dependencies


def test_gpu_groups_are_tainted_and_labelled_and_cpu_groups_are_not(aws: Planned) -> None:
    for pool in aws.plan.platform.node_pools:
        group = aws.get(NODE_GROUP, f"aws-nodes-{pool.name}")
        i = group.inputs
        if pool.kind is PoolKind.GPU:
            # The autoscaler's GPU label (its AWS README, "Special note on GPU instances").
            assert i["labels"] == {
                **pool.node_labels,
                "k8s.amazonaws.com/accelerator": f"nvidia-{pool.accelerator}",
            }
            assert i["taints"] == [
                {"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}
            ]
            assert i["labels"]["mlstack.dev/pool-kind"] == "gpu"
            assert i["labels"]["mlstack.dev/accelerator"] == pool.accelerator
        else:
            assert i["labels"] == pool.node_labels
            assert i["taints"] == []
            assert "mlstack.dev/accelerator" not in i["labels"]
        assert i["labels"]["mlstack.dev/capacity"] == pool.capacity.value
    system = aws.get(NODE_GROUP, "aws-nodes-system")
    assert system.inputs["taints"] == []


def test_node_role_trusts_ec2_and_has_the_worker_policies(aws: Planned) -> None:
    role = aws.get(ROLE, "aws-nodes-role")
    [statement] = _doc(role, "assumeRolePolicy")["Statement"]
    assert statement["Principal"] == {"Service": "ec2.amazonaws.com"}
    attached = {
        r.inputs["policyArn"]
        for r in aws.of_type(ROLE_ATTACHMENT)
        if r.name.startswith("aws-nodes-role-")
    }
    assert attached == {
        "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
        "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
        "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPullOnly",
    }


def test_each_pools_asg_carries_the_node_template_tags(aws: Planned) -> None:
    """What lets the cluster autoscaler build a node of an empty group: its labels, taints
    and GPUs, tagged on the group's ASG (not propagated to instances)."""
    for name, pool in aws.expected.pools.items():
        group = aws.get(NODE_GROUP, f"aws-nodes-{name}")
        tags = aws.children(group, ASG_TAG)
        if name == "system":
            assert tags == [], "the system group never rests at zero"
            continue
        by_key = {t.inputs["tag"]["key"]: t for t in tags}
        assert len(by_key) == len(tags)
        for t in tags:
            assert t.inputs["autoscalingGroupName"] == f"eks-aws-nodes-{name}-offline"
            assert t.inputs["tag"]["propagateAtLaunch"] is False
            key = t.inputs["tag"]["key"]
            assert t.name == f"aws-nodes-{name}-{key.removeprefix(TEMPLATE + '/')}"
        values = {k: t.inputs["tag"]["value"] for k, t in by_key.items()}
        labels = group.inputs["labels"]
        assert {k for k in values if k.startswith(f"{TEMPLATE}/label/")} == {
            f"{TEMPLATE}/label/{k}" for k in labels
        }
        for k, v in labels.items():
            assert values[f"{TEMPLATE}/label/{k}"] == v
        # The kubelet allocatable of the default 200 GiB disk, not the disk (issue 16, item 13).
        assert values[f"{TEMPLATE}/resources/ephemeral-storage"] == "179Gi"
        if pool.gpus:
            # Scale-from-zero sees the GPU label too, not only a node that already joined.
            assert values[f"{TEMPLATE}/label/k8s.amazonaws.com/accelerator"].startswith("nvidia-")
            assert values[f"{TEMPLATE}/taint/nvidia.com/gpu"] == "present:NoSchedule"
            assert values[f"{TEMPLATE}/resources/nvidia.com/gpu"] == str(pool.gpus)
        else:
            assert not [k for k in values if "/taint/" in k or "nvidia.com/gpu" in k]


# --- S3 ---------------------------------------------------------------------------------------


def test_three_private_encrypted_versioned_buckets(aws: Planned) -> None:
    e = aws.expected
    buckets = {b.name: b for b in aws.of_type(BUCKET)}
    assert set(buckets) == {f"aws-storage-{p}" for p in PURPOSES}
    storage_key = _key_arn(e, "aws-storage-key")
    assert storage_key != _key_arn(e, "aws-cluster-secrets-key")
    for purpose in PURPOSES:
        res = f"aws-storage-{purpose}"
        bucket = buckets[res]
        name = f"{e.bucket_prefix}-{purpose}"
        assert bucket.inputs["bucket"] == name
        assert bucket.inputs["forceDestroy"] is False
        settings = {
            t: aws.get(t, res)
            for t in (PUBLIC_ACCESS_BLOCK, OWNERSHIP, SSE, VERSIONING, BUCKET_POLICY, LIFECYCLE)
        }
        for setting in settings.values():
            assert setting.parent == bucket.urn
            assert setting.inputs["bucket"] == name
        pab = settings[PUBLIC_ACCESS_BLOCK].inputs
        for flag in (
            "blockPublicAcls",
            "blockPublicPolicy",
            "ignorePublicAcls",
            "restrictPublicBuckets",
        ):
            assert pab[flag] is True, flag
        assert settings[OWNERSHIP].inputs["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
        [rule] = settings[SSE].inputs["rules"]
        assert rule == {
            "applyServerSideEncryptionByDefault": {
                "sseAlgorithm": "aws:kms",
                "kmsMasterKeyId": storage_key,
            },
            "bucketKeyEnabled": True,
        }
        versioning = settings[VERSIONING]
        assert versioning.inputs["versioningConfiguration"] == {"status": "Enabled"}
        # S3 rejects noncurrent-version rules until versioning is on.
        assert versioning.urn in aws.opts(settings[LIFECYCLE]).dependencies


def test_bucket_policies_deny_everything_but_tls(aws: Planned) -> None:
    for purpose in PURPOSES:
        policy = aws.get(BUCKET_POLICY, f"aws-storage-{purpose}")
        arn = f"arn:aws:s3:::{policy.inputs['bucket']}"
        document = _doc(policy, "policy")
        assert document["Version"] == "2012-10-17"
        [statement] = document["Statement"]
        assert statement["Effect"] == "Deny"
        assert statement["Principal"] == "*"
        assert statement["Action"] == "s3:*"
        assert sorted(statement["Resource"]) == sorted([arn, f"{arn}/*"])
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_bucket_lifecycle_rules(aws: Planned) -> None:
    e = aws.expected
    for purpose in PURPOSES:
        rules = {r["id"]: r for r in aws.get(LIFECYCLE, f"aws-storage-{purpose}").inputs["rules"]}
        noncurrent = rules.pop("noncurrent-versions")
        assert noncurrent["status"] == "Enabled"
        assert noncurrent["filter"] == {"prefix": ""}
        assert noncurrent["noncurrentVersionExpiration"] == {
            "noncurrentDays": e.noncurrent_days[purpose]
        }
        assert noncurrent["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 7}
        if purpose in e.archive_days:
            archive = rules.pop("archive")
            assert archive["status"] == "Enabled"
            assert archive["filter"] == {"prefix": ""}
            assert archive["transitions"] == [
                {"days": e.archive_days[purpose], "storageClass": "STANDARD_IA"}
            ]
        assert rules == {}, f"unexpected rules on {purpose}: {sorted(rules)}"


# --- ECR --------------------------------------------------------------------------------------


def test_repositories_are_immutable_scanned_and_bounded(aws: Planned) -> None:
    e = aws.expected
    repositories = {r.name: r for r in aws.of_type(REPOSITORY)}
    assert set(repositories) == {"aws-registry-train", "aws-registry-serve"}
    for repo in ("train", "serve"):
        r = repositories[f"aws-registry-{repo}"]
        assert r.inputs["name"] == f"ml/{repo}"
        assert r.inputs["imageTagMutability"] == "IMMUTABLE"
        assert r.inputs["imageScanningConfiguration"] == {"scanOnPush": True}
        assert r.inputs["encryptionConfigurations"] == [{"encryptionType": "KMS"}]
        assert r.inputs["forceDelete"] is False
        [lifecycle] = aws.children(r, ECR_LIFECYCLE)
        assert lifecycle.inputs["repository"] == f"ml/{repo}"
        *keep, rule = _doc(lifecycle, "policy")["rules"]
        assert rule["selection"] == {
            "tagStatus": "any",
            "countType": "imageCountMoreThan",
            "countNumber": e.keep_last_images,
        }
        assert rule["action"] == {"type": "expire"}
        assert [k["rulePriority"] for k in [*keep, rule]] == list(range(1, len(keep) + 2))
        # Every tag the plan's pods pull from this repository is kept by a rule before the
        # keep-last-N one, which would otherwise expire it once N newer images are pushed.
        pulled = {image.rpartition(":")[2] for image in _images(aws) if f"/ml/{repo}:" in image}
        assert {tuple(k["selection"]["tagPatternList"]) for k in keep} == {(t,) for t in pulled}
        for k in keep:
            assert k["selection"]["tagStatus"] == "tagged"
            assert k["selection"]["countType"] == "imageCountMoreThan"
            assert k["selection"]["countNumber"] == 1


# --- what prod keeps --------------------------------------------------------------------------


def test_prod_protects_and_retains_buckets_key_and_repositories(
    planned: dict[str, Planned],
) -> None:
    prod = planned["aws-prod"]
    stateful = [
        *prod.of_type(BUCKET),
        *prod.of_type(REPOSITORY),
        prod.get(KMS_KEY, "aws-storage-key"),
        # Losing the cluster's secrets key makes every Secret in etcd unreadable.
        prod.get(KMS_KEY, "aws-cluster-secrets-key"),
    ]
    assert len(stateful) == 7
    for r in stateful:
        assert prod.opts(r).protect, r.name
        assert prod.opts(r).retain_on_delete, r.name
    retained = {r.urn for r in prod.plan.resources if prod.opts(r).retain_on_delete}
    assert retained == {r.urn for r in stateful}
    # The settings of a protected bucket are protected with it (Pulumi inherits protect).
    for purpose in PURPOSES:
        assert prod.opts(prod.get(BUCKET_POLICY, f"aws-storage-{purpose}")).protect


def test_dev_protects_and_retains_nothing(planned: dict[str, Planned]) -> None:
    dev = planned["aws-dev"]
    assert not [r.name for r in dev.plan.resources if dev.opts(r).protect]
    assert not [r.name for r in dev.plan.resources if dev.opts(r).retain_on_delete]


# --- workload identity ------------------------------------------------------------------------


def _check_pod_identity_trust(
    aws: Planned, role: PlannedResource, namespace: str, service_account: str
) -> None:
    """Only the Pod Identity of this cluster, for this ServiceAccount, by the session tags it
    sends (EKS user guide, pod-id-role.html); no aws:SourceArn (that is the association)."""
    [statement] = _doc(role, "assumeRolePolicy")["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert sorted(statement["Action"]) == ["sts:AssumeRole", "sts:TagSession"]
    assert statement["Condition"] == {
        "StringEquals": {
            "aws:SourceAccount": ACCOUNT,
            "aws:RequestTag/eks-cluster-arn": _cluster_arn(aws.expected),
            "aws:RequestTag/kubernetes-namespace": namespace,
            "aws:RequestTag/kubernetes-service-account": service_account,
        }
    }


def test_each_team_has_a_role_only_its_clusters_pod_identity_can_assume(aws: Planned) -> None:
    e = aws.expected
    assert tuple(t.name for t in aws.plan.platform.teams) == e.teams
    for team in e.teams:
        role = aws.get(ROLE, f"aws-team-{team}-role")
        _check_pod_identity_trust(aws, role, team, "workload")
        association = aws.get(POD_IDENTITY, f"aws-team-{team}")
        assert association.inputs == {
            "clusterName": e.cluster,
            "namespace": team,
            "serviceAccount": "workload",
            "roleArn": _role_arn(f"aws-team-{team}-role"),
        }
        assert SERVICE_ACCOUNT_NAME == "workload"
        # The ServiceAccount it names exists in the team's namespace.
        account = aws.get("kubernetes:core/v1:ServiceAccount", f"team-{team}-service-account")
        assert account.inputs["metadata"]["name"] == "workload"
        assert account.inputs["metadata"]["namespace"] == team
        assert aws.plan.outputs["team_role_arns"][team] == _role_arn(f"aws-team-{team}-role")


def test_team_policy_is_least_privilege(aws: Planned) -> None:
    e = aws.expected
    ds, ck, md = (f"arn:aws:s3:::{e.bucket_prefix}-{p}" for p in PURPOSES)
    repositories = [
        f"arn:aws:ecr:{e.region}:{ACCOUNT}:repository/ml/{r}" for r in ("train", "serve")
    ]
    for team in e.teams:
        policy = aws.get(ROLE_POLICY, f"aws-team-{team}-policy")
        assert policy.inputs["role"] == f"aws-team-{team}-role-id"
        doc = _doc(policy, "policy")
        others = [t for t in (*e.teams, "other") if t != team]
        # Datasets: read-only.
        assert _allows(doc, "s3:GetObject", f"{ds}/images/0001.jpg")
        assert _allows(doc, "s3:ListBucket", ds)
        for write in ("s3:PutObject", "s3:DeleteObject"):
            assert not _allows(doc, write, f"{ds}/images/0001.jpg")
            assert not _allows(doc, write, f"{ds}/{team}/x")
        # Checkpoints and models: read-write under <team>/ only.
        for bucket in (ck, md):
            for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
                assert _allows(doc, action, f"{bucket}/{team}/run-1/step-100")
                assert not _allows(doc, action, f"{bucket}/{team}x/run-1")
                assert not _allows(doc, action, f"{bucket}/top-level-object")
                for other in others:
                    assert not _allows(doc, action, f"{bucket}/{other}/run-1")
        listing = _statement(doc, "ListOwnPrefixes")
        assert sorted(listing["Resource"]) == sorted([ck, md])
        assert listing["Condition"] == {"StringLike": {"s3:prefix": [team, f"{team}/*"]}}
        # The storage key only through S3 in this region.
        kms = _statement(doc, "UseStorageKeyThroughS3")
        assert kms["Resource"] == _key_arn(e, "aws-storage-key")
        assert kms["Condition"] == {
            "StringEquals": {"kms:ViaService": f"s3.{e.region}.amazonaws.com"}
        }
        # Pull the platform's images; pushing is CI's job.
        for repository in repositories:
            assert _allows(doc, "ecr:BatchGetImage", repository)
            assert _allows(doc, "ecr:GetDownloadUrlForLayer", repository)
            assert not _allows(doc, "ecr:PutImage", repository)
        assert _statement(doc, "PullPlatformImages")["Resource"] == repositories
        assert _statement(doc, "RegistryLogin")["Resource"] == "*"
        # No wildcard actions; "*" resources only where AWS has no resource-level permission.
        for s in doc["Statement"]:
            assert s["Effect"] == "Allow"
            assert not [a for a in _as_list(s["Action"]) if a.endswith("*")], s
            if s["Resource"] == "*":
                assert s["Action"] == "ecr:GetAuthorizationToken"


# --- add-ons ----------------------------------------------------------------------------------


def test_cluster_autoscaler_release_and_its_identity(aws: Planned) -> None:
    e = aws.expected
    version = aws.plan.platform.cluster.kubernetes_version
    release = aws.get(HELM_RELEASE, "aws-autoscaler-release")
    i = release.inputs
    assert i["chart"] == "cluster-autoscaler"
    assert i["version"] == CLUSTER_AUTOSCALER.version
    assert re.fullmatch(r"\d+\.\d+\.\d+", i["version"]), "pinned, not a range"
    assert i["repositoryOpts"] == {"repo": "https://kubernetes.github.io/autoscaler"}
    assert i["namespace"] == "kube-system"
    values = i["values"]
    assert values["autoDiscovery"] == {"clusterName": e.cluster}
    assert values["awsRegion"] == e.region
    assert values["image"]["tag"] == version_set(version).cluster_autoscaler_image
    assert values["image"]["tag"].startswith(f"v{version}.")
    assert values["nodeSelector"] == {"mlstack.dev/pool": "system"}
    association = aws.get(POD_IDENTITY, "aws-autoscaler-identity")
    assert association.inputs["namespace"] == "kube-system"
    assert association.inputs["serviceAccount"] == values["rbac"]["serviceAccount"]["name"]
    assert association.inputs["serviceAccount"] == "cluster-autoscaler"
    assert association.inputs["roleArn"] == _role_arn("aws-autoscaler-identity-role")
    _check_pod_identity_trust(
        aws, aws.get(ROLE, "aws-autoscaler-identity-role"), "kube-system", "cluster-autoscaler"
    )
    policy = _doc(aws.get(ROLE_POLICY, "aws-autoscaler-identity-policy"), "policy")
    resize = _statement(policy, "ResizeOwnGroups")
    assert resize["Condition"] == {
        "StringEquals": {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{e.cluster}": "owned"}
    }
    # It starts once its role is bound, the Pod Identity agent runs and every group exists.
    waits_for = aws.opts(release).dependencies
    assert association.urn in waits_for
    assert aws.get(ROLE_POLICY, "aws-autoscaler-identity-policy").urn in waits_for
    assert aws.get(ADDON, "aws-cluster-pod-identity").urn in waits_for
    assert {g.urn for g in aws.of_type(NODE_GROUP)} <= waits_for


def test_nvidia_device_plugin_release(aws: Planned) -> None:
    release = aws.get(HELM_RELEASE, "nvidia-device-plugin-release")
    assert release.inputs["chart"] == "nvidia-device-plugin"
    assert release.inputs["namespace"] == "kube-system"
    assert {"key": "nvidia.com/gpu", "operator": "Exists"} in release.inputs["values"][
        "tolerations"
    ]


# --- outputs ----------------------------------------------------------------------------------


def test_outputs(aws: Planned) -> None:
    e = aws.expected
    outputs = aws.plan.outputs
    assert outputs["region"] == e.region
    assert outputs["availability_zones"] == list(e.zones)
    assert outputs["bucket_names"] == {p: f"{e.bucket_prefix}-{p}" for p in PURPOSES}
    host = f"{ACCOUNT}.dkr.ecr.{e.region}.amazonaws.com"
    assert outputs["registry_urls"] == {r: f"{host}/ml/{r}" for r in ("train", "serve")}
    assert set(outputs["team_role_arns"]) == set(e.teams)
    assert outputs["autoscaler_role_arn"] == _role_arn("aws-autoscaler-identity-role")
    assert outputs["node_role_arn"] == _role_arn("aws-nodes-role")


def test_kubeconfig_output_is_a_secret_and_masked_in_json(aws: Planned) -> None:
    e = aws.expected
    kubeconfig = aws.plan.outputs["kubeconfig"]
    assert is_secret(kubeconfig)
    config = json.loads(kubeconfig["value"])
    [cluster] = config["clusters"]
    assert cluster["cluster"]["server"] == aws.plan.outputs["cluster_endpoint"]
    [user] = config["users"]
    assert user["user"]["exec"]["args"] == [
        "eks",
        "get-token",
        "--cluster-name",
        e.cluster,
        "--region",
        e.region,
    ]
    masked = mask_secrets(aws.plan.outputs)["kubeconfig"]
    assert masked["value"] == "[secret]"
    assert "get-token" not in json.dumps(aws.plan.to_json()["outputs"])
    # Nothing else the stack exports is secret.
    assert [k for k, v in aws.plan.outputs.items() if is_secret(v)] == ["kubeconfig"]


# --- day 2: resizing a group the autoscaler owns ----------------------------------------------


DESIRED = "scalingConfig.desiredSize"


def _day_two(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    live: Mapping[str, tuple[int, int, int]],
    l4: Mapping[str, int],
) -> PlanWithOptions:
    """aws-dev planned against a live cluster whose groups have `live` (min, max, desired),
    with the l4 pool's sizes changed to `l4`."""
    raw = yaml.safe_load((REPO / "stacks" / "Pulumi.aws-dev.yaml").read_text())
    platform = raw["config"]["mlstack:platform"]
    [pool] = [p for p in platform["node_pools"] if p["name"] == "l4"]
    pool.update(l4)
    path = tmp_path / "Pulumi.aws-dev.yaml"
    path.write_text(yaml.safe_dump(raw))

    def call(platform: Any, token: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        if token == "aws:eks/getClusters:getClusters":
            return {"names": ["ml-dev", "someone-elses"]}
        if token == "aws:eks/getNodeGroups:getNodeGroups":
            assert args["clusterName"] == "ml-dev"
            return {"names": [f"aws-nodes-{g}-0a1b2c3" for g in live] + ["hand-made"]}
        if token == "aws:eks/getNodeGroup:getNodeGroup":
            low, high, desired = live[args["nodeGroupName"].removeprefix("aws-nodes-")[:-8]]
            return {"scalingConfigs": [{"minSize": low, "maxSize": high, "desiredSize": desired}]}
        return {}

    monkeypatch.setattr(AwsBackend, "offline_call", staticmethod(call))
    plan, options = plan_with_options(str(path))
    return PlanWithOptions("aws-dev", plan, options)


def _sent(aws: PlanWithOptions, group: str, old_input: int) -> dict[str, int]:
    """The scaling config the provider sends EKS: the engine replaces an ignored desiredSize
    with the old input (the value the group was created with), whatever the program says."""
    resource = aws.get(NODE_GROUP, f"aws-nodes-{group}")
    sent = dict(resource.inputs["scalingConfig"])
    if DESIRED in aws.opts(resource).ignore_changes:
        sent["desiredSize"] = old_input
    return sent


def test_raising_min_nodes_also_raises_desired_so_eks_accepts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: l4 created at 0..4 (desired 0) and idle; raising min_nodes to 2 used to send
    desired 0 (ignored, so the old input) and EKS refused: "Minimum capacity 2 can't be greater
    than desired size 0" (terraform-aws-modules/terraform-aws-eks#748, #3306)."""
    live = {"l4": (0, 4, 0), "cpu": (0, 4, 0), "system": (1, 2, 1)}
    aws = _day_two(tmp_path, monkeypatch, live, {"min_nodes": 2})
    sent = _sent(aws, "l4", old_input=0)
    assert sent == {"minSize": 2, "maxSize": 4, "desiredSize": 2}
    assert sent["minSize"] <= sent["desiredSize"] <= sent["maxSize"]
    # Groups whose sizes did not change stay the autoscaler's.
    for group in ("cpu", "system"):
        assert DESIRED in aws.opts(aws.get(NODE_GROUP, f"aws-nodes-{group}")).ignore_changes


@pytest.mark.parametrize(
    ("l4", "expected"),
    [
        # Nothing changes: the autoscaler's 3 is left alone (ignored, not reset to 0).
        ({}, None),
        # A new max: the update carries the autoscaler's 3, not the stale 0 (which would
        # scale the group in).
        ({"max_nodes": 8}, {"minSize": 0, "maxSize": 8, "desiredSize": 3}),
        # A min below the live size: still 3, nothing is scaled in.
        ({"min_nodes": 1}, {"minSize": 1, "maxSize": 4, "desiredSize": 3}),
    ],
)
def test_resizing_keeps_the_autoscalers_desired_size_within_the_new_bounds(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    l4: Mapping[str, int],
    expected: dict[str, int] | None,
) -> None:
    aws = _day_two(tmp_path, monkeypatch, {"l4": (0, 4, 3)}, l4)
    group = aws.get(NODE_GROUP, "aws-nodes-l4")
    if expected is None:
        assert DESIRED in aws.opts(group).ignore_changes
    else:
        assert DESIRED not in aws.opts(group).ignore_changes
        assert group.inputs["scalingConfig"] == expected


def test_a_digest_pinned_image_on_aws_gets_a_note_that_ecr_may_expire_it() -> None:
    """ECR lifecycle rules select by tag: a digest pin cannot be kept by a rule of its own."""
    config = copy.deepcopy(dict(read_stack("aws-dev").config))
    platform = config["mlstack:platform"]
    assert AwsBackend.notes(load_platform(platform)) == []
    platform["workloads"]["training_jobs"][0]["image"] = "sha256:" + "ab" * 32
    [note] = AwsBackend.notes(load_platform(platform))
    assert note.startswith("platform.workloads.training_jobs[0].image is a digest")
    assert note.endswith("; pin a tag")
