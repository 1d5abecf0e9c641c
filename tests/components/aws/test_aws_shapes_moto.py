"""The AWS documents the backend builds, sent to a real API implementation (moto's server).

The components fill ARNs in at deploy time; here the same pure builders get literal ARNs and
the documents go to IAM, S3, ECR and Auto Scaling on 127.0.0.1, with dummy credentials. What
moto checks, and so what these tests can catch:
- IAM identity policies (put_role_policy): full grammar (Version, Effect, Action prefixes,
  Resource present, Condition shape); trust policies only on update_assume_role_policy
  (sts actions only, no Resource), so roles are created and then given the trust under test.
- ECR lifecycle policies: validated against ECR's schema.
- S3 bucket policies and lifecycle rules: stored as given (no grammar check; moto also ignores
  Conditions when it evaluates a bucket policy, so TLS enforcement itself is not testable).
- Auto Scaling tags: stored and listed per group, as the cluster autoscaler reads them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from tests_support import moto_server

from mlstack.components.aws.iam import (
    autoscaler_policy,
    dumps,
    ecr_lifecycle_policy,
    node_template_tags,
    pod_identity_trust,
    service_trust,
    team_workload_policy,
    tls_only_bucket_policy,
)
from mlstack.components.aws.storage import lifecycle_rules
from mlstack.stacks.schema import BucketConfig

REGION = "us-east-1"
ACCOUNT = "123456789012"
CLUSTER_ARN = f"arn:aws:eks:{REGION}:{ACCOUNT}:cluster/ml-dev"
BUCKETS = {p: f"acme-ml-dev-{p}" for p in ("datasets", "checkpoints", "models")}
STORAGE_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
REPOSITORY_ARNS = [f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/ml/{r}" for r in ("train", "serve")]
TEMPLATE = "k8s.io/cluster-autoscaler/node-template"

Client = Callable[[str], Any]


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """moto's server on an ephemeral port, with dummy credentials in the environment."""
    with moto_server(REGION) as url:
        yield url


@pytest.fixture(scope="module")
def client(endpoint: str) -> Client:
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    cache: dict[str, Any] = {}

    def make(service: str) -> Any:
        if service not in cache:
            cache[service] = session.client(service, endpoint_url=endpoint)
        return cache[service]

    return make


def _error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response.get("Error", {}).get("Code"))


def _team_policy(team: str = "vision") -> dict[str, Any]:
    return team_workload_policy(
        prefix=team,
        buckets=BUCKETS,
        storage_key_arn=STORAGE_KEY,
        region=REGION,
        repository_arns=REPOSITORY_ARNS,
    )


def _role(client: Client, name: str) -> None:
    """A role to hang the document under test on (moto checks trust on update only)."""
    client("iam").create_role(
        RoleName=name, AssumeRolePolicyDocument=dumps(service_trust("ec2.amazonaws.com"))
    )


# --- IAM trust policies -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "trust",
    [
        pytest.param(pod_identity_trust(CLUSTER_ARN, "ml", "workload"), id="pod-identity"),
        pytest.param(service_trust("eks.amazonaws.com"), id="eks"),
        pytest.param(service_trust("ec2.amazonaws.com"), id="ec2"),
    ],
)
def test_trust_policies_are_valid_trust_policies(
    client: Client, trust: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    name = f"trust-{request.node.callspec.id}"
    _role(client, name)
    client("iam").update_assume_role_policy(RoleName=name, PolicyDocument=dumps(trust))
    stored = client("iam").get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"]
    assert stored == trust


def test_a_malformed_trust_policy_is_rejected(client: Client) -> None:
    """The check above can fail: a trust statement may not name resources."""
    trust = pod_identity_trust(CLUSTER_ARN, "ml", "workload")
    trust["Statement"][0]["Resource"] = "*"
    _role(client, "trust-malformed")
    with pytest.raises(ClientError) as exc:
        client("iam").update_assume_role_policy(
            RoleName="trust-malformed", PolicyDocument=dumps(trust)
        )
    assert _error_code(exc) == "MalformedPolicyDocument"


# --- IAM identity policies --------------------------------------------------------------------


@pytest.mark.parametrize(
    "policy",
    [
        pytest.param(_team_policy(), id="team-workload"),
        pytest.param(autoscaler_policy("ml-dev"), id="cluster-autoscaler"),
    ],
)
def test_role_policies_are_accepted_and_stored_as_built(
    client: Client, policy: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    name = f"policy-{request.node.callspec.id}"
    _role(client, name)
    client("iam").put_role_policy(RoleName=name, PolicyName="inline", PolicyDocument=dumps(policy))
    stored = client("iam").get_role_policy(RoleName=name, PolicyName="inline")["PolicyDocument"]
    assert stored == policy


def _without_resource(doc: dict[str, Any]) -> None:
    del doc["Statement"][0]["Resource"]


def _bad_effect(doc: dict[str, Any]) -> None:
    doc["Statement"][0]["Effect"] = "Permit"


def _action_without_service(doc: dict[str, Any]) -> None:
    doc["Statement"][0]["Action"] = "GetBucketLocation"


def _condition_not_a_map(doc: dict[str, Any]) -> None:
    doc["Statement"][3]["Condition"] = {"StringLike": "vision/*"}


def _unknown_version(doc: dict[str, Any]) -> None:
    doc["Version"] = "2012-10-18"


@pytest.mark.parametrize(
    "break_it",
    [
        _without_resource,
        _bad_effect,
        _action_without_service,
        _condition_not_a_map,
        _unknown_version,
    ],
    ids=["no-resource", "bad-effect", "action-without-service", "bad-condition", "bad-version"],
)
def test_a_malformed_policy_is_rejected(
    client: Client, break_it: Callable[[dict[str, Any]], None], request: pytest.FixtureRequest
) -> None:
    """The check above can fail: the team policy, broken one way at a time."""
    policy = _team_policy()
    break_it(policy)
    name = f"malformed-{request.node.callspec.id}"
    _role(client, name)
    with pytest.raises(ClientError) as exc:
        client("iam").put_role_policy(
            RoleName=name, PolicyName="inline", PolicyDocument=dumps(policy)
        )
    assert _error_code(exc) == "MalformedPolicyDocument"


# --- S3 ---------------------------------------------------------------------------------------


def test_tls_only_bucket_policy_is_accepted_and_read_back(client: Client) -> None:
    s3 = client("s3")
    bucket = BUCKETS["datasets"]
    s3.create_bucket(Bucket=bucket)
    policy = tls_only_bucket_policy(bucket)
    s3.put_bucket_policy(Bucket=bucket, Policy=dumps(policy))
    assert json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"]) == policy


def _s3_shape(value: Any) -> Any:
    """Pulumi input args (snake_case attributes) as the S3 API's PascalCase structure."""
    if isinstance(value, list):
        return [_s3_shape(v) for v in value]
    if hasattr(value, "__dict__"):
        return {
            ("ID" if k == "id" else "".join(p.capitalize() for p in k.split("_"))): _s3_shape(v)
            for k, v in vars(value).items()
            if v is not None
        }
    return value


def test_lifecycle_rules_are_accepted_by_s3(client: Client) -> None:
    s3 = client("s3")
    bucket = BUCKETS["checkpoints"]
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    rules = _s3_shape(
        lifecycle_rules(BucketConfig(noncurrent_version_days=14, archive_after_days=60))
    )
    assert rules == [
        {
            "ID": "noncurrent-versions",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "NoncurrentVersionExpiration": {"NoncurrentDays": 14},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
        },
        {
            "ID": "archive",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "Transitions": [{"Days": 60, "StorageClass": "STANDARD_IA"}],
        },
    ]
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})
    stored = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert {r["ID"]: r for r in stored} == {r["ID"]: r for r in rules}


# --- ECR --------------------------------------------------------------------------------------


def test_ecr_repository_and_lifecycle_policy(client: Client) -> None:
    ecr = client("ecr")
    ecr.create_repository(
        repositoryName="ml/train",
        imageTagMutability="IMMUTABLE",
        imageScanningConfiguration={"scanOnPush": True},
        encryptionConfiguration={"encryptionType": "KMS"},
    )
    policy = ecr_lifecycle_policy(20)
    ecr.put_lifecycle_policy(repositoryName="ml/train", lifecyclePolicyText=dumps(policy))
    stored = ecr.get_lifecycle_policy(repositoryName="ml/train")["lifecyclePolicyText"]
    assert json.loads(stored) == policy
    [repo] = ecr.describe_repositories(repositoryNames=["ml/train"])["repositories"]
    assert repo["imageTagMutability"] == "IMMUTABLE"
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}


def test_an_ecr_lifecycle_policy_that_keeps_deployed_tags_is_accepted(client: Client) -> None:
    ecr = client("ecr")
    ecr.create_repository(repositoryName="ml/keep", imageTagMutability="IMMUTABLE")
    policy = ecr_lifecycle_policy(20, ["0.2.0", "0.1.0", "0.1.0"])
    assert [rule["selection"].get("tagPatternList") for rule in policy["rules"]] == [
        ["0.1.0"],
        ["0.2.0"],
        None,
    ]
    ecr.put_lifecycle_policy(repositoryName="ml/keep", lifecyclePolicyText=dumps(policy))
    stored = ecr.get_lifecycle_policy(repositoryName="ml/keep")["lifecyclePolicyText"]
    assert json.loads(stored) == policy


def test_a_malformed_ecr_lifecycle_policy_is_rejected(client: Client) -> None:
    ecr = client("ecr")
    ecr.create_repository(repositoryName="ml/serve")
    policy = ecr_lifecycle_policy(20)
    policy["rules"][0]["action"]["type"] = "archive"
    with pytest.raises(ClientError) as exc:
        ecr.put_lifecycle_policy(repositoryName="ml/serve", lifecyclePolicyText=dumps(policy))
    assert _error_code(exc) == "InvalidParameterException"


# --- Auto Scaling node-template tags ----------------------------------------------------------


def test_node_template_tags_on_an_asg_are_what_the_cluster_autoscaler_reads(
    client: Client,
) -> None:
    client("ec2").create_launch_template(
        LaunchTemplateName="eks-gpu-template",
        LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "p5.48xlarge"},
    )
    asg = client("autoscaling")
    group = "eks-aws-nodes-h100-0cc7a8e1"
    asg.create_auto_scaling_group(
        AutoScalingGroupName=group,
        LaunchTemplate={"LaunchTemplateName": "eks-gpu-template", "Version": "$Latest"},
        MinSize=0,
        MaxSize=4,
        DesiredCapacity=0,
        AvailabilityZones=[f"{REGION}a", f"{REGION}b"],
    )
    labels = {
        "mlstack.dev/pool": "h100",
        "mlstack.dev/pool-kind": "gpu",
        "mlstack.dev/accelerator": "h100-80gb",
    }
    tags = node_template_tags(labels, [("nvidia.com/gpu", "present", "NoSchedule")], 8, 200)
    asg.create_or_update_tags(
        Tags=[
            {
                "ResourceId": group,
                "ResourceType": "auto-scaling-group",
                "Key": key,
                "Value": value,
                "PropagateAtLaunch": False,
            }
            for key, value in tags.items()
        ]
    )
    described = asg.describe_tags(Filters=[{"Name": "auto-scaling-group", "Values": [group]}])
    read = {t["Key"]: t["Value"] for t in described["Tags"]}
    assert not [t for t in described["Tags"] if t["PropagateAtLaunch"]]
    for key, value in labels.items():
        assert read[f"{TEMPLATE}/label/{key}"] == value
    assert read[f"{TEMPLATE}/taint/nvidia.com/gpu"] == "present:NoSchedule"
    assert read[f"{TEMPLATE}/resources/nvidia.com/gpu"] == "8"
    assert (
        read[f"{TEMPLATE}/resources/ephemeral-storage"] == "179Gi"
    )  # the kubelet allocatable of a 200 GiB disk
    # The group as the autoscaler lists it carries them too.
    [described_group] = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])[
        "AutoScalingGroups"
    ]
    assert {t["Key"] for t in described_group["Tags"]} >= set(tags)
