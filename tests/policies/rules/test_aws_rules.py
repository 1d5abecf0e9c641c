"""AWS rules (policies/rules/aws.py) and EKS node groups as pools, on real props.

Every case starts from the wire-form inputs of the shipped aws-dev stack's offline plan (deep
copies, so a test changes only what it breaks) and calls the rule as the engine does: resource
rules per resource, stack rules once with every resource, parents linked.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pulumi_policy import StackValidationPolicy
from pulumi_policy.proxy import UNKNOWN_ARRAY_VALUE, UNKNOWN_STRING_VALUE
from rule_args import (
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
from mlstack.policies.rules import aws, pools, tenancy
from mlstack.policies.rules.objects import UNKNOWN, known, known_items
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

BUCKET = "aws:s3/bucket:Bucket"
SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
PAB = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
ACCOUNT_PAB = "aws:s3/accountPublicAccessBlock:AccountPublicAccessBlock"
VERSIONING = "aws:s3/bucketVersioning:BucketVersioning"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
OWNERSHIP = "aws:s3/bucketOwnershipControls:BucketOwnershipControls"
BUCKET_ACL = "aws:s3/bucketAcl:BucketAcl"
REPOSITORY = "aws:ecr/repository:Repository"
CLUSTER = "aws:eks/cluster:Cluster"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
KEY = "aws:kms/key:Key"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
JOB = "kubernetes:batch/v1:Job"
FLAVOR = "kubernetes:kueue.x-k8s.io/v1beta2:ResourceFlavor"

CHECKPOINTS = "aws-storage-checkpoints"  # the resource name of the bucket and its settings
CHECKPOINTS_BUCKET = "acme-ml-dev-checkpoints"
ADMIN = "arn:aws:iam::aws:policy/AdministratorAccess"
GPU_TAINT = (GPU_TAINT_KEY, "present", "NoSchedule")


@pytest.fixture(scope="module")
def dev_plan() -> Plan:
    return run_plan(read_stack("aws-dev"))


@pytest.fixture(scope="module")
def prod_plan() -> Plan:
    return run_plan(read_stack("aws-prod"))


Stack = PlanCopy


@pytest.fixture
def dev(dev_plan: Plan) -> Stack:
    return Stack.of(dev_plan)


def doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action: Any = "s3:GetObject", resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


# --- the catalog and the shipped stacks ----------------------------------------------------------


@pytest.mark.parametrize("plan_fixture", ["dev_plan", "prod_plan"])
def test_the_shipped_aws_stacks_pass_every_rule(
    plan_fixture: str, request: pytest.FixtureRequest
) -> None:
    plan: Plan = request.getfixturevalue(plan_fixture)
    report = check_plan(plan)
    assert report.violations == []
    assert report.diagnostics == [] and report.not_applicable == []
    # ... and the rules had something to look at.
    for type_ in (BUCKET, SSE, PAB, VERSIONING, BUCKET_POLICY, OWNERSHIP, REPOSITORY, CLUSTER):
        assert plan.of_type(type_), type_
    assert len(plan.of_type(NODE_GROUP)) == len(plan.platform.node_pools) + 1  # + system


@pytest.mark.parametrize("policy", aws.POLICIES, ids=lambda p: p.name)
def test_an_empty_stack_and_unrelated_resources_pass(policy: Any) -> None:
    rule: Any = policy.validate
    if isinstance(policy, StackValidationPolicy):
        assert violations(rule, stack_args([])).reported == []
    else:
        ns = {"metadata": {"name": "ml", "namespace": "kube-system"}}
        assert check(rule, "kubernetes:core/v1:Secret", ns) == []


# --- S3 ----------------------------------------------------------------------------------------


def test_s3_rules_pass_the_dev_buckets(dev: Stack) -> None:
    for rule in (
        aws.s3_encrypted_with_kms,
        aws.s3_public_access_blocked,
        aws.s3_versioned,
        aws.s3_tls_only,
        aws.s3_owner_enforced,
    ):
        assert dev.run(rule) == [], rule.__name__


@pytest.mark.parametrize(
    ("rule", "setting", "what"),
    [
        pytest.param(aws.s3_encrypted_with_kms, SSE, "no BucketServerSideEncryption", id="kms"),
        pytest.param(aws.s3_public_access_blocked, PAB, "no BucketPublicAccessBlock", id="pab"),
        pytest.param(aws.s3_versioned, VERSIONING, "is not versioned", id="versioned"),
        pytest.param(aws.s3_tls_only, BUCKET_POLICY, "no BucketPolicy", id="tls"),
        pytest.param(aws.s3_owner_enforced, OWNERSHIP, "no BucketOwnershipControls", id="owner"),
    ],
)
@fails(
    "aws-s3-encrypted-with-kms",
    "aws-s3-public-access-blocked",
    "aws-s3-versioned",
    "aws-s3-tls-only",
    "aws-s3-owner-enforced",
)
def test_a_bucket_without_its_setting_is_reported_on_the_bucket(
    dev: Stack, rule: Any, setting: str, what: str
) -> None:
    dev.drop(setting, CHECKPOINTS)
    [(message, urn)] = dev.run(rule)
    assert urn == dev.get(BUCKET, CHECKPOINTS).urn
    assert message.startswith(f"S3 bucket {CHECKPOINTS_BUCKET!r} ")
    assert what in message
    assert "; add " in message


def test_settings_match_buckets_by_name_not_by_being_there(dev: Stack) -> None:
    """A setting naming another bucket does not cover this one, even as its child."""
    dev.inputs(VERSIONING, CHECKPOINTS)["bucket"] = "acme-ml-dev-models"
    [(message, urn)] = dev.run(aws.s3_versioned)
    assert urn == dev.get(BUCKET, CHECKPOINTS).urn
    assert CHECKPOINTS_BUCKET in message


@pytest.mark.parametrize("parent", [True, False])
def test_a_setting_whose_bucket_is_not_known_yet_belongs_to_its_parent(
    dev: Stack, parent: bool
) -> None:
    setting = dev.get(VERSIONING, CHECKPOINTS)
    setting.inputs["bucket"] = UNKNOWN_STRING_VALUE  # e.g. bucket.id during a preview
    if not parent:
        setting.parent = None
    urns = [urn for _, urn in dev.run(aws.s3_versioned)]
    assert urns == ([] if parent else [dev.get(BUCKET, CHECKPOINTS).urn])


def test_a_bucket_with_a_generated_name_is_matched_by_parent(dev: Stack) -> None:
    del dev.inputs(BUCKET, CHECKPOINTS)["bucket"]
    dev.inputs(VERSIONING, CHECKPOINTS)["bucket"] = UNKNOWN_STRING_VALUE
    assert dev.run(aws.s3_versioned) == []
    dev.get(VERSIONING, CHECKPOINTS).parent = None
    [(message, _)] = dev.run(aws.s3_versioned)
    assert message.startswith(f"S3 bucket {CHECKPOINTS} is not versioned")


def test_the_deprecated_v2_types_count_as_buckets_and_settings() -> None:
    bucket = {"bucket": "b1"}
    setting = {"bucket": "b1", "versioningConfiguration": {"status": "Enabled"}}
    stack = Stack()
    stack.add("aws:s3/bucketV2:BucketV2", "b1", bucket)
    assert len(stack.run(aws.s3_versioned)) == 1
    stack.add("aws:s3/bucketVersioningV2:BucketVersioningV2", "b1", setting)
    assert stack.run(aws.s3_versioned) == []


@fails("aws-s3-encrypted-with-kms")
@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"sseAlgorithm": "AES256"}, "encrypts with 'AES256', not a KMS key"),
        ({"sseAlgorithm": "aws:kms", "kmsMasterKeyId": None}, "AWS-managed aws/s3 key"),
        ({"kmsMasterKeyId": ""}, "AWS-managed aws/s3 key"),
        ({"sseAlgorithm": None}, "sets no default encryption"),
    ],
)
def test_encryption_without_a_kms_key_is_reported_on_the_setting(
    dev: Stack, change: dict, problem: str
) -> None:
    default = dev.inputs(SSE, CHECKPOINTS)["rules"][0]["applyServerSideEncryptionByDefault"]
    default.update(change)
    [(message, urn)] = dev.run(aws.s3_encrypted_with_kms)
    assert urn == dev.get(SSE, CHECKPOINTS).urn
    assert message.startswith(
        f"BucketServerSideEncryptionConfiguration {CHECKPOINTS} of bucket {CHECKPOINTS_BUCKET!r} "
    )
    assert problem in message
    assert "sseAlgorithm aws:kms" in message


@fails("aws-s3-encrypted-with-kms")
def test_encryption_without_rules_is_reported(dev: Stack) -> None:
    dev.inputs(SSE, CHECKPOINTS)["rules"] = []
    [(message, _)] = dev.run(aws.s3_encrypted_with_kms)
    assert "has no rules" in message


@pytest.mark.parametrize(
    "change",
    [
        {"sseAlgorithm": "aws:kms:dsse"},
        {"kmsMasterKeyId": UNKNOWN_STRING_VALUE},  # the key's ARN, during a preview
        {"sseAlgorithm": UNKNOWN_STRING_VALUE},
    ],
)
def test_dsse_and_keys_not_known_yet_pass(dev: Stack, change: dict) -> None:
    default = dev.inputs(SSE, CHECKPOINTS)["rules"][0]["applyServerSideEncryptionByDefault"]
    default.update(change)
    assert dev.run(aws.s3_encrypted_with_kms) == []


@fails("aws-s3-public-access-blocked")
@pytest.mark.parametrize("absent", [False, True])
def test_a_public_access_block_with_a_flag_off_is_reported(dev: Stack, absent: bool) -> None:
    block = dev.inputs(PAB, CHECKPOINTS)
    if absent:
        del block["restrictPublicBuckets"]  # unset is false
    else:
        block["restrictPublicBuckets"] = False
    block["ignorePublicAcls"] = False
    [(message, urn)] = dev.run(aws.s3_public_access_blocked)
    assert urn == dev.get(PAB, CHECKPOINTS).urn
    assert "leaves ignorePublicAcls, restrictPublicBuckets off" in message
    assert message.endswith("to true")


def test_an_account_wide_public_access_block_covers_buckets_without_one(dev: Stack) -> None:
    dev.drop(PAB, CHECKPOINTS)
    flags: dict[str, Any] = dict.fromkeys(aws.PUBLIC_ACCESS_FLAGS, True)
    dev.add(ACCOUNT_PAB, "account", flags)
    assert dev.run(aws.s3_public_access_blocked) == []


@fails("aws-s3-public-access-blocked")
def test_a_weak_account_wide_public_access_block_covers_nothing(dev: Stack) -> None:
    dev.drop(PAB, CHECKPOINTS)
    account = dev.add(ACCOUNT_PAB, "account", {**dict.fromkeys(aws.PUBLIC_ACCESS_FLAGS, True)})
    account.inputs["blockPublicPolicy"] = False
    found = dev.run(aws.s3_public_access_blocked)
    assert sorted(str(urn) for _, urn in found) == sorted(
        [account.urn, dev.get(BUCKET, CHECKPOINTS).urn]
    )


@fails("aws-s3-versioned")
def test_suspended_versioning_is_reported_on_the_setting(dev: Stack) -> None:
    dev.inputs(VERSIONING, CHECKPOINTS)["versioningConfiguration"]["status"] = "Suspended"
    [(message, urn)] = dev.run(aws.s3_versioned)
    assert urn == dev.get(VERSIONING, CHECKPOINTS).urn
    assert message.startswith(f"BucketVersioning {CHECKPOINTS} of bucket {CHECKPOINTS_BUCKET!r}")
    assert "sets status 'Suspended'" in message


def _tls_statement(**change: Any) -> dict[str, Any]:
    arn = f"arn:aws:s3:::{CHECKPOINTS_BUCKET}"
    statement = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [arn, f"{arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }
    statement.update(change)
    return {k: v for k, v in statement.items() if v is not None}


@fails("aws-s3-tls-only")
@pytest.mark.parametrize(
    "statement",
    [
        pytest.param(allow(), id="no-deny"),
        pytest.param(_tls_statement(Effect="Allow"), id="allow"),
        pytest.param(
            _tls_statement(Condition={"Bool": {"aws:SecureTransport": "true"}}), id="denies-tls"
        ),
        pytest.param(
            _tls_statement(Resource=f"arn:aws:s3:::{CHECKPOINTS_BUCKET}"), id="no-objects"
        ),
        pytest.param(_tls_statement(Action="s3:PutObject"), id="one-action"),
        pytest.param(_tls_statement(Principal={"AWS": "arn:aws:iam::1:root"}), id="one-principal"),
    ],
)
def test_a_bucket_policy_without_a_tls_deny_is_reported(dev: Stack, statement: dict) -> None:
    dev.inputs(BUCKET_POLICY, CHECKPOINTS)["policy"] = doc(statement)
    [(message, urn)] = dev.run(aws.s3_tls_only)
    assert urn == dev.get(BUCKET_POLICY, CHECKPOINTS).urn
    assert "does not deny requests made without TLS" in message
    assert "aws:SecureTransport" in message


@pytest.mark.parametrize(
    "policy",
    [
        pytest.param(
            json.dumps(
                {
                    "Statement": _tls_statement(
                        Principal={"AWS": ["*"]},
                        Action=["s3:*"],
                        Resource="*",
                        Condition={"BoolIfExists": {"aws:securetransport": False}},
                    )
                }
            ),
            id="one-statement-spelled-otherwise",
        ),
        pytest.param(doc(allow(), _tls_statement(Action="*")), id="among-others"),
        pytest.param(UNKNOWN_STRING_VALUE, id="not-known-yet"),
        pytest.param("{not json", id="invalid-json-the-provider-rejects"),
    ],
)
def test_tls_denies_in_other_spellings_and_unknown_policies_pass(dev: Stack, policy: str) -> None:
    dev.inputs(BUCKET_POLICY, CHECKPOINTS)["policy"] = policy
    assert dev.run(aws.s3_tls_only) == []


@fails("aws-s3-owner-enforced")
@pytest.mark.parametrize("ownership", ["ObjectWriter", "BucketOwnerPreferred", None])
def test_ownership_other_than_bucket_owner_enforced_is_reported(
    dev: Stack, ownership: str | None
) -> None:
    dev.inputs(OWNERSHIP, CHECKPOINTS)["rule"]["objectOwnership"] = ownership
    [(message, urn)] = dev.run(aws.s3_owner_enforced)
    assert urn == dev.get(OWNERSHIP, CHECKPOINTS).urn
    assert f"sets objectOwnership {ownership!r}" in message


@fails("aws-s3-owner-enforced")
def test_a_bucket_acl_is_reported(dev: Stack) -> None:
    acl = dev.add(BUCKET_ACL, "open", {"bucket": CHECKPOINTS_BUCKET, "acl": "public-read"})
    [(message, urn)] = dev.run(aws.s3_owner_enforced)
    assert urn == acl.urn
    assert message.startswith(f"BucketAcl open of bucket {CHECKPOINTS_BUCKET!r} grants access")


@fails("aws-s3-owner-enforced")
@pytest.mark.parametrize(
    "inline", [{"acl": "public-read"}, {"grants": [{"type": "Group", "permissions": ["READ"]}]}]
)
def test_an_inline_bucket_acl_is_reported(dev: Stack, inline: dict) -> None:
    dev.inputs(BUCKET, CHECKPOINTS).update(inline)
    [(message, urn)] = dev.run(aws.s3_owner_enforced)
    assert urn == dev.get(BUCKET, CHECKPOINTS).urn
    assert "sets an ACL" in message


# --- ECR ---------------------------------------------------------------------------------------


def test_the_dev_repositories_pass(dev_plan: Plan) -> None:
    for r in dev_plan.of_type(REPOSITORY):
        assert check(aws.ecr_immutable_scanned, REPOSITORY, dict(r.inputs)) == []


@fails("aws-ecr-immutable-scanned")
@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"imageTagMutability": "MUTABLE"}, "has MUTABLE tags"),
        ({"imageTagMutability": None}, "has MUTABLE (the default) tags"),
        ({"imageScanningConfiguration": {"scanOnPush": False}}, "does not scan images on push"),
        ({"imageScanningConfiguration": None}, "does not scan images on push"),
    ],
)
def test_mutable_or_unscanned_repositories_are_reported(
    dev: Stack, change: dict, problem: str
) -> None:
    inputs = dev.inputs(REPOSITORY, "aws-registry-train")
    inputs.update(change)
    [message] = check(aws.ecr_immutable_scanned, REPOSITORY, inputs)
    assert message.startswith(f"ECR repository ml/train {problem}")


# --- EKS ---------------------------------------------------------------------------------------


def cluster_of(stack: Stack) -> dict[str, Any]:
    return stack.inputs(CLUSTER, "aws-cluster")


@pytest.mark.parametrize(
    "rule",
    [
        aws.eks_endpoint_private,
        aws.eks_secrets_encrypted,
        aws.eks_audit_logging,
        aws.eks_access_entries_only,
    ],
)
def test_the_dev_and_prod_clusters_pass(rule: Any, dev_plan: Plan, prod_plan: Plan) -> None:
    for plan in (dev_plan, prod_plan):
        [r] = plan.of_type(CLUSTER)
        assert check(rule, CLUSTER, dict(r.inputs)) == []


def test_prod_has_a_private_only_endpoint(prod_plan: Plan) -> None:
    [r] = prod_plan.of_type(CLUSTER)
    vpc = r.inputs["vpcConfig"]
    assert (vpc["endpointPrivateAccess"], vpc["endpointPublicAccess"]) == (True, False)
    assert "publicAccessCidrs" not in vpc


@fails("aws-eks-endpoint-private")
@pytest.mark.parametrize("cidrs", [["0.0.0.0/0"], ["203.0.113.0/24", "::/0"], [" 0.0.0.0/0"]])
def test_a_public_endpoint_open_to_everyone_is_reported(dev: Stack, cidrs: list[str]) -> None:
    cluster_of(dev)["vpcConfig"]["publicAccessCidrs"] = cidrs
    [message] = check(aws.eks_endpoint_private, CLUSTER, cluster_of(dev))
    assert message.startswith(f"EKS cluster 'ml-dev' lets {cidrs[-1]} (the whole internet)")
    assert "aws.public_access_cidrs" in message


@fails("aws-eks-endpoint-private")
@pytest.mark.parametrize("public", [True, None])
def test_a_public_endpoint_without_cidrs_is_open_to_everyone(dev: Stack, public: Any) -> None:
    vpc = cluster_of(dev)["vpcConfig"]
    del vpc["publicAccessCidrs"]
    vpc["endpointPublicAccess"] = public  # unset: AWS makes it public
    [message] = check(aws.eks_endpoint_private, CLUSTER, cluster_of(dev))
    assert "open to the whole internet" in message


@fails("aws-eks-endpoint-private")
@pytest.mark.parametrize("private", [False, None])
def test_a_cluster_without_a_private_endpoint_is_reported(dev: Stack, private: Any) -> None:
    cluster_of(dev)["vpcConfig"]["endpointPrivateAccess"] = private
    [message] = check(aws.eks_endpoint_private, CLUSTER, cluster_of(dev))
    assert "has no private API endpoint" in message
    assert "endpointPrivateAccess: true" in message


def test_cidrs_not_known_yet_are_not_judged(dev: Stack) -> None:
    cluster_of(dev)["vpcConfig"]["publicAccessCidrs"] = UNKNOWN_ARRAY_VALUE
    assert check(aws.eks_endpoint_private, CLUSTER, cluster_of(dev)) == []
    cluster_of(dev)["vpcConfig"]["publicAccessCidrs"] = [UNKNOWN_STRING_VALUE]
    assert check(aws.eks_endpoint_private, CLUSTER, cluster_of(dev)) == []


@fails("aws-eks-secrets-encrypted")
@pytest.mark.parametrize(
    "config",
    [
        None,
        {"provider": {"keyArn": "arn:aws:kms:us-east-1:1:key/k"}, "resources": []},
        {"provider": {}, "resources": ["secrets"]},
        [{"provider": {"keyArn": ""}, "resources": ["secrets"]}],
    ],
)
def test_secrets_without_envelope_encryption_are_reported(dev: Stack, config: Any) -> None:
    cluster_of(dev)["encryptionConfig"] = config
    [message] = check(aws.eks_secrets_encrypted, CLUSTER, cluster_of(dev))
    assert message.startswith("EKS cluster 'ml-dev' does not envelope-encrypt Kubernetes Secrets")


@pytest.mark.parametrize(
    "config",
    [
        {"provider": {"keyArn": UNKNOWN_STRING_VALUE}, "resources": ["secrets"]},
        [{"provider": {"keyArn": "arn:aws:kms:us-east-1:1:key/k"}, "resources": ["secrets"]}],
    ],
)
def test_a_key_not_known_yet_and_the_list_form_pass(dev: Stack, config: Any) -> None:
    cluster_of(dev)["encryptionConfig"] = config
    assert check(aws.eks_secrets_encrypted, CLUSTER, cluster_of(dev)) == []


@fails("aws-eks-audit-logging")
@pytest.mark.parametrize(
    ("types", "missing"),
    [
        (["api", "authenticator", "scheduler"], "audit"),
        ([], "api, audit, authenticator"),
        (None, "api, audit, authenticator"),
    ],
)
def test_missing_audit_log_types_are_reported(dev: Stack, types: Any, missing: str) -> None:
    cluster_of(dev)["enabledClusterLogTypes"] = types
    [message] = check(aws.eks_audit_logging, CLUSTER, cluster_of(dev))
    assert message.startswith(f"EKS cluster 'ml-dev' does not send its {missing} logs")


@fails("aws-eks-access-entries-only")
@pytest.mark.parametrize(
    ("access", "mode"),
    [
        ({"authenticationMode": "API_AND_CONFIG_MAP"}, "API_AND_CONFIG_MAP"),
        ({"authenticationMode": "CONFIG_MAP"}, "CONFIG_MAP"),
        (None, "CONFIG_MAP (the default)"),
    ],
)
def test_a_cluster_reading_aws_auth_is_reported(dev: Stack, access: Any, mode: str) -> None:
    cluster_of(dev)["accessConfig"] = access
    [message] = check(aws.eks_access_entries_only, CLUSTER, cluster_of(dev))
    assert message.startswith(f"EKS cluster 'ml-dev' uses authentication mode {mode},")
    assert "authenticationMode: API" in message


@fails("aws-eks-access-entries-only")
@pytest.mark.parametrize("type_", [CONFIG_MAP, "kubernetes:core/v1:ConfigMapPatch"])
def test_an_aws_auth_config_map_is_reported(type_: str) -> None:
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "aws-auth", "namespace": "kube-system"},
        "data": {"mapRoles": "- rolearn: arn:aws:iam::1:role/x\n  groups: [system:masters]\n"},
    }
    [message] = check(aws.eks_access_entries_only, type_, config_map)
    assert message.startswith(f"{type_.rsplit(':', 1)[1]} kube-system/aws-auth maps IAM")
    assert "aws.access_entries" in message


def test_config_maps_named_otherwise_pass(dev_plan: Plan) -> None:
    for r in dev_plan.of_type(CONFIG_MAP):
        assert check(aws.eks_access_entries_only, CONFIG_MAP, dict(r.inputs)) == []
    elsewhere = {"metadata": {"name": "aws-auth", "namespace": "ml"}}
    assert check(aws.eks_access_entries_only, CONFIG_MAP, elsewhere) == []


# --- IAM ---------------------------------------------------------------------------------------

IAM_TYPES = (ROLE, ROLE_POLICY, ATTACHMENT)


def test_the_dev_and_prod_iam_resources_pass(dev_plan: Plan, prod_plan: Plan) -> None:
    """Among them statements on Resource "*" that have to be (ecr:GetAuthorizationToken, the
    autoscaler's Describe calls) and trust policies."""
    seen = 0
    for plan in (dev_plan, prod_plan):
        for r in plan.resources:
            if r.type in IAM_TYPES:
                seen += 1
                assert check(aws.iam_no_admin_statements, r.type, dict(r.inputs)) == []
                assert check(aws.iam_no_access_keys, r.type, dict(r.inputs)) == []
    assert seen >= 20


@fails("aws-iam-no-admin-statements")
@pytest.mark.parametrize(
    "statement",
    [
        pytest.param(allow("*"), id="star"),
        pytest.param(allow(["s3:GetObject", "*:*"], ["*"]), id="star-colon-star-in-a-list"),
        pytest.param({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}, id="not-action"),
        pytest.param(
            {"Effect": "Allow", "Action": "*", "NotResource": "arn:aws:s3:::x"}, id="not-resource"
        ),
        pytest.param(allow("*", Condition={"Bool": {"aws:MultiFactorAuthPresent": "true"}})),
    ],
)
def test_a_role_policy_allowing_everything_is_reported(dev: Stack, statement: dict) -> None:
    inputs = dev.inputs(ROLE_POLICY, "aws-team-ml-policy")
    policy = json.loads(inputs["policy"])
    policy["Statement"].append({"Sid": "Oops", **statement})
    inputs["policy"] = json.dumps(policy)
    [message] = messages(
        aws.iam_no_admin_statements, resource_args(ROLE_POLICY, inputs, name="aws-team-ml-policy")
    )
    assert message.startswith("IAM role policy aws-team-ml-policy: statement 'Oops' allows every")
    assert "administrator access" in message


@fails("aws-iam-no-admin-statements")
@pytest.mark.parametrize(
    ("type_", "what"),
    [
        ("aws:iam/policy:Policy", "IAM policy"),
        ("aws:iam/userPolicy:UserPolicy", "IAM user policy"),
        ("aws:iam/groupPolicy:GroupPolicy", "IAM group policy"),
    ],
)
def test_other_policy_documents_are_checked_and_a_lone_statement_counts(
    type_: str, what: str
) -> None:
    policy = json.dumps({"Version": "2012-10-17", "Statement": allow("*")})
    [message] = check(aws.iam_no_admin_statements, type_, {"policy": policy})
    assert message.startswith(f"{what} res: statement 0 allows every action")


@fails("aws-iam-no-admin-statements")
def test_inline_policies_of_a_role_are_checked_but_not_its_trust(dev: Stack) -> None:
    inputs = dev.inputs(ROLE, "aws-team-ml-role")
    trust = json.loads(inputs["assumeRolePolicy"])
    trust["Statement"].append(allow("*"))  # absurd, but a trust policy grants nothing
    inputs["assumeRolePolicy"] = json.dumps(trust)
    assert check(aws.iam_no_admin_statements, ROLE, inputs) == []
    inputs["inlinePolicies"] = [
        {"name": "fine", "policy": doc(allow())},
        {"name": "admin", "policy": doc(allow("*"))},
    ]
    [message] = check(aws.iam_no_admin_statements, ROLE, inputs)
    assert message.startswith("IAM role res, inline policy admin: statement 0 allows every")


@pytest.mark.parametrize(
    "policy",
    [
        doc({"Effect": "Deny", "Action": "*", "Resource": "*"}),
        doc(allow("*", "arn:aws:s3:::bucket/*")),
        doc(allow("s3:*")),
        doc({"Effect": "Allow", "NotAction": "iam:*", "Resource": "arn:aws:s3:::x"}),
        UNKNOWN_STRING_VALUE,  # built from ARNs not known during a preview
        "{not json",
        doc(),
    ],
)
def test_narrower_unknown_and_invalid_policies_pass(policy: str) -> None:
    assert check(aws.iam_no_admin_statements, ROLE_POLICY, {"policy": policy}) == []


@fails("aws-iam-no-admin-statements")
@pytest.mark.parametrize(
    ("type_", "inputs", "where"),
    [
        (ATTACHMENT, {"role": "r", "policyArn": ADMIN}, "IAM role policy attachment res"),
        (
            "aws:iam/userPolicyAttachment:UserPolicyAttachment",
            {"user": "u", "policyArn": "arn:aws-us-gov:iam::aws:policy/AdministratorAccess"},
            "IAM user policy attachment res",
        ),
        (
            ROLE,
            {"managedPolicyArns": ["arn:aws:iam::aws:policy/ReadOnlyAccess", ADMIN]},
            "IAM role res",
        ),
        (
            "aws:iam/rolePolicyAttachmentsExclusive:RolePolicyAttachmentsExclusive",
            {"roleName": "r", "policyArns": [ADMIN]},
            "IAM role policy attachments res",
        ),
    ],
)
def test_attaching_administrator_access_is_reported(type_: str, inputs: dict, where: str) -> None:
    [message] = check(aws.iam_no_admin_statements, type_, inputs)
    assert message.startswith(f"{where} attaches ")
    assert message.split(" attaches ")[1].split(",")[0].endswith("AdministratorAccess")


def test_customer_policies_named_like_it_and_unknown_arns_pass() -> None:
    for arn in ("arn:aws:iam::123456789012:policy/AdministratorAccess", UNKNOWN_STRING_VALUE):
        assert check(aws.iam_no_admin_statements, ATTACHMENT, {"policyArn": arn}) == []


@fails("aws-iam-no-admin-statements")
def test_forbidden_managed_policies_come_from_config() -> None:
    power = {"policyArn": "arn:aws:iam::aws:policy/PowerUserAccess"}
    assert check(aws.iam_no_admin_statements, ATTACHMENT, power) == []
    config = {"forbiddenManagedPolicies": ["AdministratorAccess", "PowerUserAccess"]}
    [message] = check(aws.iam_no_admin_statements, ATTACHMENT, power, **config)
    assert "PowerUserAccess" in message


# --- Pod Identity trust ------------------------------------------------------------------------


def _pod_identity_trust(condition: dict[str, Any]) -> str:
    return doc(
        {
            "Sid": "PodIdentity",
            "Effect": "Allow",
            "Principal": {"Service": "pods.eks.amazonaws.com"},
            "Action": ["sts:AssumeRole", "sts:TagSession"],
            "Condition": condition,
        }
    )


CLUSTER_ARN = "arn:aws:eks:us-east-1:123456789012:cluster/ml-dev"


def test_the_shipped_pod_identity_trusts_pass(dev_plan: Plan, prod_plan: Plan) -> None:
    for plan in (dev_plan, prod_plan):
        roles = [r for r in plan.of_type(ROLE) if "pods.eks" in r.inputs["assumeRolePolicy"]]
        assert len(roles) == len(plan.platform.teams) + 1  # + the cluster autoscaler
        for r in roles:
            assert check(aws.pod_identity_trust_by_session_tags, ROLE, dict(r.inputs)) == []


@fails("aws-pod-identity-trust-by-session-tags")
@pytest.mark.parametrize(
    "condition",
    [
        {"ArnEquals": {"aws:SourceArn": CLUSTER_ARN}},
        {"StringEquals": {"aws:SourceAccount": "123456789012", "aws:SourceArn": [CLUSTER_ARN]}},
        {"ArnLike": {"AWS:SourceArn": CLUSTER_ARN}},
    ],
)
def test_a_pod_identity_trust_keyed_on_the_cluster_arn_is_reported(
    dev: Stack, condition: dict[str, Any]
) -> None:
    """mlstack's own trust before issue 16: the source is the association, so it never matched."""
    inputs = dev.inputs(ROLE, "aws-team-ml-role")
    inputs["assumeRolePolicy"] = _pod_identity_trust(condition)
    [message] = check(aws.pod_identity_trust_by_session_tags, ROLE, inputs)
    assert message.startswith("IAM role res: statement 'PodIdentity' lets EKS Pod Identity")
    assert CLUSTER_ARN in message
    assert "aws:RequestTag/eks-cluster-arn" in message


@pytest.mark.parametrize(
    "condition",
    [
        {"StringEquals": {"aws:RequestTag/eks-cluster-arn": CLUSTER_ARN}},
        # The association ARN pattern public policies use is what Pod Identity sends.
        {"ArnLike": {"aws:SourceArn": "arn:aws:eks:*:123456789012:podidentityassociation/ml/*"}},
        {"ArnNotEquals": {"aws:SourceArn": CLUSTER_ARN}},
    ],
)
def test_pod_identity_trusts_scoped_otherwise_pass(condition: dict[str, Any]) -> None:
    inputs = {"assumeRolePolicy": _pod_identity_trust(condition)}
    assert check(aws.pod_identity_trust_by_session_tags, ROLE, inputs) == []


def test_other_principals_keyed_on_a_cluster_arn_and_unknown_trusts_pass() -> None:
    eks = json.loads(_pod_identity_trust({"ArnEquals": {"aws:SourceArn": CLUSTER_ARN}}))
    eks["Statement"][0]["Principal"] = {"Service": "eks.amazonaws.com"}
    for trust in (json.dumps(eks), UNKNOWN_STRING_VALUE):
        inputs = {"assumeRolePolicy": trust}
        assert check(aws.pod_identity_trust_by_session_tags, ROLE, inputs) == []


@fails("aws-iam-no-access-keys")
@pytest.mark.parametrize(
    ("type_", "inputs", "start"),
    [
        ("aws:iam/accessKey:AccessKey", {"user": "ci"}, "IAM access key res of user ci is a"),
        (
            "aws:iam/serviceSpecificCredential:ServiceSpecificCredential",
            {"userName": "ci", "serviceName": "codecommit.amazonaws.com"},
            "IAM service-specific credential res of user ci is a",
        ),
        ("aws:iam/userLoginProfile:UserLoginProfile", {"user": "ci"}, "IAM console password res"),
        ("aws:iam/user:User", {"name": "ci"}, "IAM user ci is a long-lived identity"),
    ],
)
def test_users_and_long_lived_credentials_are_reported(
    type_: str, inputs: dict, start: str
) -> None:
    [message] = check(aws.iam_no_access_keys, type_, inputs)
    assert message.startswith(start)
    assert "EKS Pod Identity" in message


# --- KMS ---------------------------------------------------------------------------------------


def test_the_dev_keys_pass(dev_plan: Plan) -> None:
    keys = dev_plan.of_type(KEY)
    assert len(keys) == 2  # storage and cluster secrets
    for r in keys:
        assert check(aws.kms_key_rotation, KEY, dict(r.inputs)) == []


@fails("aws-kms-key-rotation")
@pytest.mark.parametrize("rotation", [False, None])
def test_a_key_without_rotation_is_reported(dev: Stack, rotation: Any) -> None:
    inputs = dev.inputs(KEY, "aws-storage-key")
    inputs["enableKeyRotation"] = rotation
    [message] = check(aws.kms_key_rotation, KEY, inputs)
    assert message.startswith(
        "KMS key res (Server-side encryption of the platform's buckets) is never rotated"
    )
    assert message.endswith("set enableKeyRotation: true")


@pytest.mark.parametrize("spec", [{"keySpec": "RSA_2048"}, {"customerMasterKeySpec": "HMAC_256"}])
def test_keys_that_cannot_rotate_are_not_checked(spec: dict) -> None:
    assert check(aws.kms_key_rotation, KEY, {"keyUsage": "SIGN_VERIFY", **spec}) == []
    symmetric = {"keySpec": "SYMMETRIC_DEFAULT"}
    assert len(check(aws.kms_key_rotation, KEY, symmetric)) == 1


# --- unknown-aware accessors -------------------------------------------------------------------


def test_known_reads_unknown_values_as_unknown() -> None:
    props = wire({"a": {"b": UNKNOWN_STRING_VALUE, "c": [1, UNKNOWN_STRING_VALUE]}})
    assert known(props, "a", "b") is UNKNOWN
    assert known(known(props, "a", "b"), "x") is UNKNOWN
    assert known(props, "a", "missing") is None
    assert known_items(known(props, "a", "c")) == [1.0, UNKNOWN]
    assert not UNKNOWN


# --- EKS node groups as pools ------------------------------------------------------------------


def test_a_gpu_node_group_is_read_as_its_pool(dev_plan: Plan) -> None:
    l4 = dev_plan.get(NODE_GROUP, "aws-nodes-l4")
    assert pools.pool_of(NODE_GROUP, wire(dict(l4.inputs))) == pools.PoolNodes(
        pool="l4", kind="gpu", capacity="spot", taints=(GPU_TAINT,)
    )
    system = dev_plan.get(NODE_GROUP, "aws-nodes-system")
    assert pools.pool_of(NODE_GROUP, wire(dict(system.inputs))) == pools.PoolNodes(
        pool="system", kind="cpu", capacity="on-demand", taints=()
    )


def _group(dev: Stack, name: str = "aws-nodes-l4") -> dict[str, Any]:
    return dev.inputs(NODE_GROUP, name)


def _read(inputs: dict[str, Any]) -> pools.PoolNodes | None:
    return pools.pool_of(NODE_GROUP, wire(inputs))


@pytest.mark.parametrize(
    ("effect", "expected"),
    [
        ("NO_SCHEDULE", "NoSchedule"),
        ("PREFER_NO_SCHEDULE", "PreferNoSchedule"),
        ("NO_EXECUTE", "NoExecute"),
    ],
)
def test_eks_taint_effects_read_as_kubernetes_spells_them(
    dev: Stack, effect: str, expected: str
) -> None:
    inputs = _group(dev)
    inputs["taints"] = [{"key": "dedicated", "effect": effect}]  # no value: EKS omits it
    found = _read(inputs)
    assert found is not None and found.taints == (("dedicated", "", expected),)


@pytest.mark.parametrize(
    ("label", "capacity_type", "expected"),
    [
        (None, "SPOT", "spot"),
        (None, "ON_DEMAND", "on-demand"),
        (None, "CAPACITY_BLOCK", "reserved"),
        (None, None, "on-demand"),
        ("on-demand", "SPOT", "spot"),  # EC2 runs spot nodes, whatever the label says
        ("spot", "ON_DEMAND", "spot"),
    ],
)
def test_a_node_groups_capacity(
    dev: Stack, label: str | None, capacity_type: str | None, expected: str
) -> None:
    inputs = _group(dev)
    inputs["labels"].pop(CAPACITY_LABEL)
    if label:
        inputs["labels"][CAPACITY_LABEL] = label
    inputs["capacityType"] = capacity_type
    found = _read(inputs)
    assert found is not None and found.capacity == expected


def test_a_node_group_on_an_nvidia_ami_is_a_gpu_pool_whatever_its_labels(dev: Stack) -> None:
    inputs = _group(dev, "aws-nodes-cpu")
    inputs["amiType"] = "BOTTLEROCKET_x86_64_NVIDIA"
    found = _read(inputs)
    assert found is not None and (found.pool, found.kind) == ("cpu", "gpu")
    [message] = messages(pools.gpu_pools_tainted, resource_args(NODE_GROUP, inputs, name="cpu"))
    assert message.startswith("GPU pool 'cpu' is not tainted")


def test_node_groups_without_a_pool_label_or_known_labels_are_not_pools(dev: Stack) -> None:
    inputs = _group(dev)
    inputs["labels"] = {POOL_KIND_LABEL: "gpu"}
    assert _read(inputs) is None
    inputs["labels"] = UNKNOWN_STRING_VALUE
    assert _read(inputs) is None
    inputs["labels"] = {POOL_LABEL: "l4", POOL_KIND_LABEL: UNKNOWN_STRING_VALUE}
    assert _read(inputs) is None


def test_the_dev_node_groups_pass_the_pool_rule(dev_plan: Plan) -> None:
    for r in dev_plan.of_type(NODE_GROUP):
        assert messages(pools.gpu_pools_tainted, resource_args(r.type, r.inputs, name=r.name)) == []


@fails("gpu-pools-tainted")
@pytest.mark.parametrize(
    "taints",
    [
        [],
        None,
        [{"key": GPU_TAINT_KEY, "value": "present", "effect": "PREFER_NO_SCHEDULE"}],
        [{"key": GPU_TAINT_KEY, "effect": "NO_SCHEDULE"}],
    ],
)
def test_a_gpu_node_group_without_the_gpu_taint_is_reported(dev: Stack, taints: Any) -> None:
    inputs = _group(dev)
    inputs["taints"] = taints
    [message] = messages(pools.gpu_pools_tainted, resource_args(NODE_GROUP, inputs, name="l4"))
    assert message.startswith(f"GPU pool 'l4' is not tainted {GPU_TAINT_KEY}=present:NoSchedule")


def _ml_job(annotations: dict[str, str] | None = None, **pod: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "sweep",
            "namespace": "ml",
            "labels": {"kueue.x-k8s.io/queue-name": "default"},
            "annotations": annotations or {},
        },
        "spec": {"template": {"spec": {"containers": [{"name": "main"}], **pod}}},
    }


@pytest.fixture
def spot_by_node_group_only(dev: Stack) -> Stack:
    """aws-dev with no `capacity` label anywhere: only the l4 group's capacityType SPOT says
    that its pool (and the flavor selecting it) is spot."""
    dev.inputs(NODE_GROUP, "aws-nodes-l4")["labels"].pop(CAPACITY_LABEL)
    dev.inputs(FLAVOR, "tenancy-flavor-l4")["spec"]["nodeLabels"].pop(CAPACITY_LABEL)
    return dev


@fails("spot-capacity-only-for-checkpointing-jobs")
def test_a_spot_node_group_reaches_the_spot_rule_through_its_queue(
    spot_by_node_group_only: Stack,
) -> None:
    stack = spot_by_node_group_only
    gpu = {"name": "main", "resources": {"limits": {"nvidia.com/gpu": 1}}}
    job = stack.add(JOB, "sweep", _ml_job(containers=[gpu]))
    [(message, urn)] = stack.run(tenancy.spot_capacity_only_for_checkpointing_jobs)
    assert urn == job.urn
    assert message.startswith(
        "Job ml/sweep may run on spot capacity (its queue admits to spot flavors l4)"
    )
    stack.inputs(NODE_GROUP, "aws-nodes-l4")["capacityType"] = "ON_DEMAND"
    assert stack.run(tenancy.spot_capacity_only_for_checkpointing_jobs) == []


@fails("spot-capacity-only-for-checkpointing-jobs")
def test_a_spot_node_group_reaches_the_spot_rule_through_a_node_selector(
    spot_by_node_group_only: Stack,
) -> None:
    stack = spot_by_node_group_only
    job = _ml_job(nodeSelector={POOL_LABEL: "l4"})
    del job["metadata"]["labels"]
    stack.add(JOB, "sweep", job)
    [(message, _)] = stack.run(tenancy.spot_capacity_only_for_checkpointing_jobs)
    assert "(its nodeSelector picks spot nodes)" in message
    job["metadata"]["annotations"][CHECKPOINTS_ANNOTATION] = "true"
    assert stack.run(tenancy.spot_capacity_only_for_checkpointing_jobs) == []


@fails("gpu-pools-have-flavors")
def test_a_gpu_node_group_without_a_flavor_is_reported(dev: Stack) -> None:
    dev.drop(FLAVOR, "tenancy-flavor-l4")
    [(message, urn)] = dev.run(tenancy.gpu_pools_have_flavors)
    assert message.startswith("GPU pool 'l4' has no Kueue ResourceFlavor")
    assert urn == dev.get(NODE_GROUP, "aws-nodes-l4").urn


def test_node_groups_are_pools_of_the_stack_index(dev: Stack) -> None:
    objects = tenancy.Objects.of(dev.resources())
    assert sorted(objects.pools) == ["cpu", "l4", "system"]


def test_a_cpu_only_job_queued_next_to_a_spot_gpu_flavor_need_not_checkpoint(dev: Stack) -> None:
    job = _ml_job()
    job["spec"]["template"]["spec"]["containers"][0]["resources"] = {
        "requests": {"cpu": "2", "memory": "8Gi"}
    }
    dev.add(JOB, "etl", job)
    assert dev.run(tenancy.spot_capacity_only_for_checkpointing_jobs) == []


# --- spot: pods stop within the reclaim notice ----------------------------------------------

JOBSET = "kubernetes:jobset.x-k8s.io/v1alpha2:JobSet"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def _one(stack: Stack, type_: str) -> Any:
    [item] = [i for i in stack.items if i.type == type_ and i.inputs["metadata"]["namespace"]]
    return item


@fails("spot-pods-stop-within-the-notice")
def test_a_spot_jobset_asking_more_than_ec2s_two_minutes_is_reported(dev: Stack) -> None:
    """aws-dev's lm-tiny runs on the spot L4 group, whose nodes EC2 reclaims 120 s after its
    notice: the plan's default grace is that notice; 300 s (the old default) is not."""
    jobset = _one(dev, JOBSET)
    pod = jobset.inputs["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 120
    assert dev.run(tenancy.spot_pods_stop_within_the_notice) == []
    pod["terminationGracePeriodSeconds"] = 300
    [(message, urn)] = dev.run(tenancy.spot_pods_stop_within_the_notice)
    assert urn == jobset.urn
    assert "may run on spot pool 'l4', whose nodes give a pod 120 s" in message
    assert "terminationGracePeriodSeconds is 300" in message
    # On an on-demand group the same job may take its time.
    dev.inputs(NODE_GROUP, "aws-nodes-l4")["capacityType"] = "ON_DEMAND"
    dev.inputs(NODE_GROUP, "aws-nodes-l4")["labels"][CAPACITY_LABEL] = "on-demand"
    assert dev.run(tenancy.spot_pods_stop_within_the_notice) == []


@fails("spot-pods-stop-within-the-notice")
def test_a_spot_serving_deployment_with_a_long_drain_is_reported(dev: Stack) -> None:
    deployment = _one(dev, DEPLOYMENT)
    deployment.inputs["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 180
    [(message, urn)] = dev.run(tenancy.spot_pods_stop_within_the_notice)
    assert urn == deployment.urn and "terminationGracePeriodSeconds is 180" in message
