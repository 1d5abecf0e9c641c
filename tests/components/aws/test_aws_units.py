"""The AWS backend's pure functions: subnet carving, kubeconfig, registry URL, node-template
tags, autoscaler values, the region catalog and the ASG lookup of a managed node group."""

from __future__ import annotations

import ipaddress
import itertools
import json
from types import SimpleNamespace

import pulumi_aws as aws
import pytest

from mlstack.components.aws.autoscaler import SERVICE_ACCOUNT, autoscaler_values
from mlstack.components.aws.backend import AwsBackend
from mlstack.components.aws.catalog import (
    REGIONS,
    default_zones,
    family,
    is_gpu_family,
    region_machine,
)
from mlstack.components.aws.cluster import kubeconfig
from mlstack.components.aws.iam import (
    AUTOSCALER_NODE_TEMPLATE,
    autoscaler_owner_tag,
    node_template_tags,
    pod_identity_trust,
)
from mlstack.components.aws.network import subnet_plan
from mlstack.components.aws.nodegroups import (
    AWS_ACCELERATOR_LABEL,
    LiveScaling,
    desired_size,
    first_asg_name,
    group_labels,
)
from mlstack.components.aws.registry import registry_url
from mlstack.stacks.catalog import ACCELERATORS
from mlstack.stacks.names import POOL_LABEL, SYSTEM_POOL
from mlstack.stacks.schema import SUPPORTED_KUBERNETES, NodePool, PoolKind
from mlstack.stacks.versions import TESTED

ZONES = [f"xx-test-1{letter}" for letter in "abcdefg"]

# --- subnet_plan ------------------------------------------------------------------------------


@pytest.mark.parametrize("vpc_cidr", ["10.0.0.0/16", "172.20.0.0/17", "192.168.0.0/19"])
@pytest.mark.parametrize("zones", [2, 3, 6, 7])
def test_subnets_are_disjoint_inside_the_vpc_and_public_ones_in_the_last_eighth(
    vpc_cidr: str, zones: int
) -> None:
    vpc = ipaddress.IPv4Network(vpc_cidr)
    last_eighth = list(vpc.subnets(prefixlen_diff=3))[-1]
    plan = subnet_plan(vpc_cidr, ZONES[:zones])
    assert [p.zone for p in plan] == ZONES[:zones]
    private = [ipaddress.IPv4Network(p.private_cidr) for p in plan]
    public = [ipaddress.IPv4Network(p.public_cidr) for p in plan]
    for net in private + public:
        assert net.subnet_of(vpc), net
    for a, b in itertools.combinations(private + public, 2):
        assert not a.overlaps(b), (a, b)
    assert all(net.subnet_of(last_eighth) for net in public)
    assert not any(net.overlaps(last_eighth) for net in private)
    # Nodes and pods take private addresses: those subnets are the large ones.
    assert {net.prefixlen for net in private} == {vpc.prefixlen + 3}
    assert {net.prefixlen for net in public} == {vpc.prefixlen + 6}


def test_the_default_vpc_is_carved_as_documented() -> None:
    plan = subnet_plan("10.0.0.0/16", ZONES[:3])
    assert [(p.private_cidr, p.public_cidr) for p in plan] == [
        ("10.0.0.0/19", "10.0.224.0/22"),
        ("10.0.32.0/19", "10.0.228.0/22"),
        ("10.0.64.0/19", "10.0.232.0/22"),
    ]


def test_too_many_zones_for_the_vpc_raise() -> None:
    with pytest.raises(ValueError, match="at most 7 zones"):
        subnet_plan("10.0.0.0/16", [f"xx-east-1{c}" for c in "abcdefgh"])


# --- kubeconfig -------------------------------------------------------------------------------


def test_kubeconfig_authenticates_with_aws_eks_get_token_and_holds_no_secret() -> None:
    text = kubeconfig("ml-prod", "https://ABC.gr7.us-west-2.eks.amazonaws.com", "Q0E=", "us-west-2")
    config = json.loads(text)
    assert (config["apiVersion"], config["kind"]) == ("v1", "Config")
    assert config["current-context"] == "ml-prod"
    [cluster] = config["clusters"]
    assert cluster == {
        "name": "ml-prod",
        "cluster": {
            "server": "https://ABC.gr7.us-west-2.eks.amazonaws.com",
            "certificate-authority-data": "Q0E=",
        },
    }
    [context] = config["contexts"]
    assert context == {"name": "ml-prod", "context": {"cluster": "ml-prod", "user": "ml-prod"}}
    [user] = config["users"]
    assert user["name"] == "ml-prod"
    assert set(user["user"]) == {"exec"}, "no token, password or client key"
    exec_ = user["user"]["exec"]
    assert exec_["apiVersion"] == "client.authentication.k8s.io/v1beta1"
    assert exec_["command"] == "aws"
    assert exec_["args"] == [
        "eks",
        "get-token",
        "--cluster-name",
        "ml-prod",
        "--region",
        "us-west-2",
    ]
    assert exec_["interactiveMode"] == "Never"
    for word in ("token", "password", "client-key-data", "client-certificate-data", "secret"):
        assert f'"{word}"' not in text


# --- registry_url -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("repository_url", "prefix", "expected"),
    [
        (
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/train",
            "ml",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/ml",
        ),
        (
            "210987654321.dkr.ecr.us-west-2.amazonaws.com/platform/serve",
            "platform",
            "210987654321.dkr.ecr.us-west-2.amazonaws.com/platform",
        ),
    ],
)
def test_registry_url_is_the_host_and_prefix(
    repository_url: str, prefix: str, expected: str
) -> None:
    assert registry_url(repository_url, prefix) == expected


# --- node_template_tags -----------------------------------------------------------------------


def test_node_template_tags_of_a_gpu_pool() -> None:
    tags = node_template_tags(
        {POOL_LABEL: "h100", "mlstack.dev/accelerator": "h100-80gb"},
        [("nvidia.com/gpu", "present", "NoSchedule")],
        8,
        200,
    )
    t = AUTOSCALER_NODE_TEMPLATE
    assert t == "k8s.io/cluster-autoscaler/node-template"
    assert tags == {
        f"{t}/label/mlstack.dev/pool": "h100",
        f"{t}/label/mlstack.dev/accelerator": "h100-80gb",
        f"{t}/taint/nvidia.com/gpu": "present:NoSchedule",
        f"{t}/resources/nvidia.com/gpu": "8",
        f"{t}/resources/ephemeral-storage": "179Gi",
    }


def test_node_template_tags_of_a_cpu_pool_name_no_gpu_and_no_taint() -> None:
    tags = node_template_tags({POOL_LABEL: "cpu"}, [], 0, 100)
    assert tags == {
        f"{AUTOSCALER_NODE_TEMPLATE}/label/mlstack.dev/pool": "cpu",
        f"{AUTOSCALER_NODE_TEMPLATE}/resources/ephemeral-storage": "89Gi",
    }


@pytest.mark.parametrize(("disk", "allocatable"), [(20, 17), (50, 44), (100, 89), (1000, 899)])
def test_the_node_template_offers_what_the_kubelet_allocates_not_the_disk(
    disk: int, allocatable: int
) -> None:
    """Issue 16, item 13: the tag claimed the whole disk. The EKS AL2023 kubelet keeps 1Gi
    (kubeReserved) and the 10% nodefs eviction threshold (nodeadm kubelet config.go)."""
    tags = node_template_tags({}, [], 0, disk)
    assert tags[f"{AUTOSCALER_NODE_TEMPLATE}/resources/ephemeral-storage"] == f"{allocatable}Gi"


def test_a_taint_without_value_is_tagged_with_its_effect_only() -> None:
    tags = node_template_tags({}, [("example.com/dedicated", "", "NoExecute")], 0, 50)
    assert tags[f"{AUTOSCALER_NODE_TEMPLATE}/taint/example.com/dedicated"] == ":NoExecute"


# --- autoscaler_values ------------------------------------------------------------------------


def test_every_supported_kubernetes_version_has_an_autoscaler_image() -> None:
    assert set(TESTED) == set(SUPPORTED_KUBERNETES)


@pytest.mark.parametrize("version", SUPPORTED_KUBERNETES)
def test_autoscaler_image_matches_the_control_plane_minor(version: str) -> None:
    values = autoscaler_values("ml-dev", "us-east-1", version)
    tag = values["image"]["tag"]
    assert tag.startswith(f"v{version}."), tag
    assert values["autoDiscovery"] == {"clusterName": "ml-dev"}
    assert (values["cloudProvider"], values["awsRegion"]) == ("aws", "us-east-1")
    # The ServiceAccount the Pod Identity association names.
    assert values["rbac"]["serviceAccount"] == {"create": True, "name": SERVICE_ACCOUNT}
    assert values["nodeSelector"] == {POOL_LABEL: SYSTEM_POOL}


def test_an_unsupported_version_has_no_autoscaler_image() -> None:
    with pytest.raises(KeyError):
        autoscaler_values("ml-dev", "us-east-1", "1.28")


# --- the region catalog -----------------------------------------------------------------------


@pytest.mark.parametrize("region", sorted(REGIONS))
def test_default_zones_are_two_in_dev_and_three_otherwise(region: str) -> None:
    zones = REGIONS[region].zones
    assert default_zones(region, "dev") == zones[:2]
    assert default_zones(region, "staging") == zones[:3]
    assert default_zones(region, "prod") == zones[:3]
    assert len(zones) >= 3, "prod needs three zones"
    assert all(z.startswith(region) and len(z) == len(region) + 1 for z in zones)


def test_default_zones_of_an_unknown_region_is_none() -> None:
    assert default_zones("ap-southeast-2", "dev") is None


def test_the_catalog_regions_offer_only_gpu_families_it_knows() -> None:
    for region in REGIONS.values():
        assert all(is_gpu_family(f) for f in region.gpu_families), region.name


def test_every_aws_machine_of_the_accelerator_catalog_is_a_gpu_family() -> None:
    """Else a CPU pool could name it, and no region could offer it."""
    for acc in ACCELERATORS.values():
        for instance_type in AwsBackend.gpu_machines(acc.name):
            assert is_gpu_family(family(instance_type)), (acc.name, instance_type)


@pytest.mark.parametrize(
    ("instance_type", "expected"),
    [("p5.48xlarge", "p5"), ("g6e.12xlarge", "g6e"), ("m6i.2xlarge", "m6i"), ("odd", "odd")],
)
def test_family(instance_type: str, expected: str) -> None:
    assert family(instance_type) == expected


@pytest.mark.parametrize("fam", ["p3", "p3dn", "p6-b200", "g4ad", "g5g", "gr6", "g6f"])
def test_gpu_families_outside_the_region_table_are_still_gpu_families(fam: str) -> None:
    assert is_gpu_family(fam)


@pytest.mark.parametrize("fam", ["m6i", "c7g", "r7iz", "t3", "inf2", "trn1"])
def test_cpu_families_are_not_gpu_families(fam: str) -> None:
    assert not is_gpu_family(fam)


def test_region_machine_picks_a_machine_of_the_gpu_count_the_region_offers() -> None:
    h200 = AwsBackend.gpu_machines("h200")
    assert region_machine(REGIONS["us-east-2"], h200, 8) == "p5en.48xlarge"
    assert region_machine(REGIONS["us-east-1"], h200, 8) == "p5e.48xlarge"
    assert region_machine(REGIONS["sa-east-1"], h200, 8) is None
    assert region_machine(REGIONS["us-east-1"], h200, 4) is None


# --- the ASG behind a managed node group -------------------------------------------------------


def test_first_asg_name_reads_the_node_groups_resources() -> None:
    resources = [
        aws.eks.outputs.NodeGroupResource(
            autoscaling_groups=[
                aws.eks.outputs.NodeGroupResourceAutoscalingGroup(name="eks-gpu-1a2b"),
                aws.eks.outputs.NodeGroupResourceAutoscalingGroup(name="eks-gpu-3c4d"),
            ]
        )
    ]
    assert first_asg_name(resources) == "eks-gpu-1a2b"


@pytest.mark.parametrize(
    "resources",
    [
        None,
        [],
        [SimpleNamespace(autoscaling_groups=None)],
        [SimpleNamespace(autoscaling_groups=[])],
        [SimpleNamespace(autoscaling_groups=[SimpleNamespace(name=None)])],
    ],
    ids=["none", "empty", "no-groups", "empty-groups", "unnamed"],
)
def test_first_asg_name_without_a_group_raises(resources: object) -> None:
    with pytest.raises(ValueError, match="no autoscaling group"):
        first_asg_name(resources)


def test_gpu_groups_carry_the_autoscalers_accelerator_label_and_cpu_groups_do_not() -> None:
    """kubernetes/autoscaler cloudprovider/aws/README.md, "Special note on GPU instances":
    `k8s.amazonaws.com/accelerator=<gpu-type>` keeps the autoscaler from scaling out again
    while the device plugin starts; the name is the AWS provider's, not one of mlstack's."""
    gpu = NodePool(name="h100", kind=PoolKind.GPU, accelerator="h100-80gb", max_nodes=2)
    cpu = NodePool(name="cpu", kind=PoolKind.CPU, max_nodes=2)
    assert AWS_ACCELERATOR_LABEL == "k8s.amazonaws.com/accelerator"
    assert group_labels(gpu) == {**gpu.node_labels, AWS_ACCELERATOR_LABEL: "nvidia-h100-80gb"}
    assert group_labels(cpu) == cpu.node_labels
    tags = node_template_tags(group_labels(gpu), (), 8, 200)
    assert tags[f"k8s.io/cluster-autoscaler/node-template/label/{AWS_ACCELERATOR_LABEL}"] == (
        "nvidia-h100-80gb"
    )


@pytest.mark.parametrize(
    ("sizes", "live", "expected"),
    [
        ((0, 4), None, (0, True)),  # a new group starts at min; the autoscaler owns it after
        ((0, 4), LiveScaling(0, 4, 3), (3, True)),  # unchanged bounds: not fought
        ((2, 4), LiveScaling(0, 4, 0), (2, False)),  # min raised above live: desired follows
        ((1, 4), LiveScaling(0, 4, 3), (3, False)),  # min raised below live: no scale-in
        ((0, 2), LiveScaling(0, 4, 3), (2, False)),  # max lowered below live: clamped
        ((0, 8), LiveScaling(0, 4, 3), (3, False)),  # max raised: the live size, not a stale one
    ],
)
def test_desired_size_stays_within_bounds_eks_accepts(
    sizes: tuple[int, int], live: LiveScaling | None, expected: tuple[int, bool]
) -> None:
    """EKS refuses min > desired or desired > max in UpdateNodegroupConfig."""
    low, high = sizes
    desired, ignore = desired_size(low, high, live)
    assert (desired, ignore) == expected
    assert low <= desired <= high


# --- small IAM helpers ------------------------------------------------------------------------


def test_pod_identity_trust_is_scoped_by_the_session_tags_pod_identity_sends() -> None:
    """The documented scope (EKS user guide, pod-id-role.html): the request tags of the cluster,
    namespace and ServiceAccount. aws:SourceArn is the association's ARN, never the cluster's,
    so the old `ArnEquals aws:SourceArn = <cluster ARN>` denied every AssumeRole."""
    arn = "arn:aws:eks:eu-west-1:210987654321:cluster/ml"
    [statement] = pod_identity_trust(arn, "vision", "workload")["Statement"]
    assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert sorted(statement["Action"]) == ["sts:AssumeRole", "sts:TagSession"]
    assert statement["Condition"] == {
        "StringEquals": {
            "aws:SourceAccount": "210987654321",
            "aws:RequestTag/eks-cluster-arn": arn,
            "aws:RequestTag/kubernetes-namespace": "vision",
            "aws:RequestTag/kubernetes-service-account": "workload",
        }
    }


def test_autoscaler_owner_tag_is_the_one_eks_sets_on_node_group_asgs() -> None:
    assert autoscaler_owner_tag("ml-prod") == "k8s.io/cluster-autoscaler/ml-prod"
