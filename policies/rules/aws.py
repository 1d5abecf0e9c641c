"""AWS rules: S3 buckets, ECR repositories, the EKS control plane, IAM and KMS.

They check the resources the AWS backend declares (and anything else in the program that
declares the same types), by their wire-form inputs: camelCase props, policy documents as JSON
strings. A value the engine does not know yet (during a preview: a policy document built from
ARNs of resources not yet created) is skipped rather than guessed at; `pulumi up` runs the rules
again with it known.

S3 settings are resources of their own (BucketVersioning, BucketPolicy, ...), so the S3 rules
are stack rules: every bucket needs its setting, and a setting that is there but weak is
reported on itself. A setting belongs to a bucket when its `bucket` prop is the bucket's name
(the backend passes names, which a preview knows, not ids), or, when that prop is not known,
when the bucket is its parent. The deprecated inline settings of `aws:s3/bucket:Bucket`
(versioning, serverSideEncryptionConfiguration, ...) do not count.

GPU node groups are pools (policies/rules/pools.py reads them): the pool rules and the spot
rule cover them.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pulumi_policy import (
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from mlstack.policies.rules.objects import (
    UNKNOWN,
    config_value,
    kind_of,
    known,
    known_items,
    mapping,
    resource_rule,
    sequence,
    stack_rule,
)

# --- resource types ------------------------------------------------------------------------


def _s3(name: str, *, v2: bool = True) -> frozenset[str]:
    """`aws:s3/<name>:<Name>` and, where pulumi-aws still has one, its deprecated V2 alias."""
    title = name[0].upper() + name[1:]
    types = {f"aws:s3/{name}:{title}"}
    if v2:
        types.add(f"aws:s3/{name}V2:{title}V2")
    return frozenset(types)


BUCKET_TYPES = _s3("bucket")
ENCRYPTION_TYPES = _s3("bucketServerSideEncryptionConfiguration")
PUBLIC_ACCESS_BLOCK_TYPES = _s3("bucketPublicAccessBlock", v2=False)
ACCOUNT_PUBLIC_ACCESS_BLOCK_TYPES = _s3("accountPublicAccessBlock", v2=False)
VERSIONING_TYPES = _s3("bucketVersioning")
BUCKET_POLICY_TYPES = _s3("bucketPolicy", v2=False)
OWNERSHIP_TYPES = _s3("bucketOwnershipControls", v2=False)
ACL_TYPES = _s3("bucketAcl")

ECR_REPOSITORY = "aws:ecr/repository:Repository"
EKS_CLUSTER = "aws:eks/cluster:Cluster"
KMS_KEY = "aws:kms/key:Key"

IAM_ROLE = "aws:iam/role:Role"
#: IAM resources whose `policy` prop is an identity policy document.
IAM_POLICY_DOCUMENTS = {
    "aws:iam/policy:Policy": "IAM policy",
    "aws:iam/rolePolicy:RolePolicy": "IAM role policy",
    "aws:iam/userPolicy:UserPolicy": "IAM user policy",
    "aws:iam/groupPolicy:GroupPolicy": "IAM group policy",
}
#: IAM resources attaching managed policies by ARN: type -> (what, prop); a prop ending in
#: "Arns" holds a list.
IAM_ATTACHMENTS = {
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": ("role policy attachment", "policyArn"),
    "aws:iam/userPolicyAttachment:UserPolicyAttachment": ("user policy attachment", "policyArn"),
    "aws:iam/groupPolicyAttachment:GroupPolicyAttachment": ("group policy attachment", "policyArn"),
    "aws:iam/policyAttachment:PolicyAttachment": ("policy attachment", "policyArn"),
    "aws:iam/rolePolicyAttachmentsExclusive:RolePolicyAttachmentsExclusive": (
        "role policy attachments",
        "policyArns",
    ),
    "aws:iam/userPolicyAttachmentsExclusive:UserPolicyAttachmentsExclusive": (
        "user policy attachments",
        "policyArns",
    ),
    "aws:iam/groupPolicyAttachmentsExclusive:GroupPolicyAttachmentsExclusive": (
        "group policy attachments",
        "policyArns",
    ),
}
IAM_USER = "aws:iam/user:User"
#: Long-lived IAM credentials, by type.
IAM_CREDENTIALS = {
    "aws:iam/accessKey:AccessKey": "access key",
    "aws:iam/serviceSpecificCredential:ServiceSpecificCredential": "service-specific credential",
    "aws:iam/userLoginProfile:UserLoginProfile": "console password",
}

# --- values --------------------------------------------------------------------------------

KMS_ALGORITHMS = ("aws:kms", "aws:kms:dsse")
PUBLIC_ACCESS_FLAGS = (
    "blockPublicAcls",
    "blockPublicPolicy",
    "ignorePublicAcls",
    "restrictPublicBuckets",
)
#: Control-plane log streams an incident needs: API calls, who made them, and how they signed in.
REQUIRED_LOG_TYPES = ("api", "audit", "authenticator")
AWS_AUTH = ("kube-system", "aws-auth")
ADMIN_ACTIONS = ("*", "*:*")
DEFAULT_FORBIDDEN_MANAGED_POLICIES = ["AdministratorAccess"]
_AWS_MANAGED_POLICY = re.compile(r"^arn:aws[a-z-]*:iam::aws:policy/(?:.+/)?(?P<name>[^/]+)$")


def _known_str(value: Any) -> bool:
    """A value that is there: a non-empty string, or one the engine does not know yet."""
    return value is UNKNOWN or (isinstance(value, str) and bool(value))


def _strings(value: Any) -> list[str]:
    """A policy element that may be one string or a list of them (Action, Resource, ...)."""
    if isinstance(value, str):
        return [value]
    return [v for v in sequence(value) if isinstance(v, str)]


def policy_document(value: Any) -> Mapping[str, Any] | None:
    """A policy document given as its JSON string (or already parsed); None when it is not
    known yet or not a JSON object (the provider rejects that one before AWS sees it)."""
    if isinstance(value, Mapping):
        return value
    if not isinstance(value, str):
        return None
    try:
        document = json.loads(value)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def statements(document: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """A document's statements: `Statement` may be one statement or a list of them."""
    found = mapping(document).get("Statement")
    if isinstance(found, Mapping):
        return [found]
    return [s for s in sequence(found) if isinstance(s, Mapping)]


def _statement_name(statement: Mapping[str, Any], index: int) -> str:
    sid = statement.get("Sid")
    return f"statement {sid!r}" if isinstance(sid, str) and sid else f"statement {index}"


# --- S3 --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    resource: PolicyResource
    name: str | None  # its `bucket` prop; None when absent (a generated name) or not known

    def __str__(self) -> str:
        return f"S3 bucket {self.name!r}" if self.name else f"S3 bucket {self.resource.name}"


def _of_types(resources: Iterable[PolicyResource], types: frozenset[str]) -> list[PolicyResource]:
    return [r for r in resources if r.resource_type in types]


def buckets(resources: Iterable[PolicyResource]) -> list[Bucket]:
    found = []
    for r in _of_types(resources, BUCKET_TYPES):
        name = known(r.props, "bucket")
        found.append(Bucket(r, name if isinstance(name, str) and name else None))
    return found


def applies_to(setting: PolicyResource, bucket: Bucket) -> bool:
    """Whether a bucket setting (BucketVersioning, BucketPolicy, ...) configures `bucket`."""
    target = known(setting.props, "bucket")
    if isinstance(target, str) and target:
        return target == bucket.name
    parent = setting.parent
    return parent is not None and parent.urn == bucket.resource.urn


def _setting_where(setting: PolicyResource) -> str:
    kind = setting.resource_type.rsplit(":", 1)[-1]
    target = known(setting.props, "bucket")
    of = f" of bucket {target!r}" if isinstance(target, str) and target else ""
    return f"{kind} {setting.name}{of}"


def _each_bucket_has(
    args: StackValidationArgs,
    report: ReportViolation,
    *,
    types: frozenset[str],
    weakness: Callable[[PolicyResource], str | None],
    fix: str,
    missing: Callable[[Bucket], str],
    covered: Callable[[list[PolicyResource]], bool] = lambda _: False,
) -> None:
    """Report each setting of `types` that `weakness` finds fault with (`fix` says what to do),
    and each bucket no setting of `types` applies to (`missing` says what that means), unless
    `covered` says the stack covers such buckets some other way."""
    settings = _of_types(args.resources, types)
    for s in settings:
        problem = weakness(s)
        if problem:
            report(f"{_setting_where(s)} {problem}; {fix}", s.urn)
    if covered(args.resources):
        return
    for b in buckets(args.resources):
        if not any(applies_to(s, b) for s in settings):
            report(missing(b), b.resource.urn)


def _encryption_weakness(setting: PolicyResource) -> str | None:
    rules = known_items(known(setting.props, "rules"))
    if not rules:
        return "has no rules, so objects are encrypted with S3-managed keys only"
    for rule in rules:
        default = known(rule, "applyServerSideEncryptionByDefault")
        algorithm = known(default, "sseAlgorithm")
        if algorithm is UNKNOWN:
            continue
        if algorithm not in KMS_ALGORITHMS:
            return (
                f"encrypts with {algorithm!r}, not a KMS key"
                if algorithm
                else "sets no default encryption"
            )
        if not _known_str(known(default, "kmsMasterKeyId")):
            return "uses the AWS-managed aws/s3 key, which no key policy of the stack controls"
    return None


def s3_encrypted_with_kms(args: StackValidationArgs, report: ReportViolation) -> None:
    _each_bucket_has(
        args,
        report,
        types=ENCRYPTION_TYPES,
        weakness=_encryption_weakness,
        fix="set applyServerSideEncryptionByDefault to sseAlgorithm aws:kms (or aws:kms:dsse) with "
        "kmsMasterKeyId the platform's storage key",
        missing=lambda b: (
            f"{b} has no BucketServerSideEncryptionConfiguration, so its objects are encrypted "
            "with S3-managed keys only; add one with sseAlgorithm aws:kms and kmsMasterKeyId the "
            "platform's storage key"
        ),
    )


def _public_access_weakness(setting: PolicyResource) -> str | None:
    # Unset flags are false; a flag the engine does not know yet gets the benefit of the doubt.
    off = [f for f in PUBLIC_ACCESS_FLAGS if known(setting.props, f) not in (True, UNKNOWN)]
    return (
        f"leaves {', '.join(off)} off, so a policy or ACL can make objects public" if off else None
    )


def _account_blocks_everything(resources: list[PolicyResource]) -> bool:
    return any(
        _public_access_weakness(r) is None
        for r in _of_types(resources, ACCOUNT_PUBLIC_ACCESS_BLOCK_TYPES)
    )


def s3_public_access_blocked(args: StackValidationArgs, report: ReportViolation) -> None:
    _each_bucket_has(
        args,
        report,
        types=PUBLIC_ACCESS_BLOCK_TYPES | ACCOUNT_PUBLIC_ACCESS_BLOCK_TYPES,
        weakness=_public_access_weakness,
        fix=f"set all four of {', '.join(PUBLIC_ACCESS_FLAGS)} to true",
        missing=lambda b: (
            f"{b} has no BucketPublicAccessBlock, so a bucket policy or ACL can make it public; "
            f"add one with {', '.join(PUBLIC_ACCESS_FLAGS)} all true"
        ),
        covered=_account_blocks_everything,
    )


def _versioning_weakness(setting: PolicyResource) -> str | None:
    status = known(setting.props, "versioningConfiguration", "status")
    if status in ("Enabled", UNKNOWN):
        return None
    return f"sets status {status!r}, so an overwritten or deleted object is gone for good"


def s3_versioned(args: StackValidationArgs, report: ReportViolation) -> None:
    _each_bucket_has(
        args,
        report,
        types=VERSIONING_TYPES,
        weakness=_versioning_weakness,
        fix="set versioningConfiguration.status to Enabled",
        missing=lambda b: (
            f"{b} is not versioned, so an overwritten or deleted object (a checkpoint, a model) "
            "is gone for good; add a BucketVersioning with versioningConfiguration.status Enabled"
        ),
    )


def denies_insecure_transport(statement: Mapping[str, Any]) -> bool:
    """A Deny of every S3 action on the bucket's objects, to everyone, without TLS."""
    if statement.get("Effect") != "Deny":
        return False
    principal = statement.get("Principal")
    if not (principal == "*" or "*" in _strings(mapping(principal).get("AWS"))):
        return False
    if not any(a.lower() in ("s3:*", "*") for a in _strings(statement.get("Action"))):
        return False
    if not any(r == "*" or r.endswith("/*") for r in _strings(statement.get("Resource"))):
        return False
    condition = mapping(statement.get("Condition"))
    for operator in ("Bool", "BoolIfExists"):
        for key, value in mapping(condition.get(operator)).items():
            values = [value] if isinstance(value, str | bool) else list(sequence(value))
            if key.lower() == "aws:securetransport" and any(
                str(v).lower() == "false" for v in values
            ):
                return True
    return False


def _tls_weakness(setting: PolicyResource) -> str | None:
    document = policy_document(known(setting.props, "policy"))
    if document is None:
        return None  # not known yet, or not JSON (the provider rejects that)
    if any(denies_insecure_transport(s) for s in statements(document)):
        return None
    return "does not deny requests made without TLS"


def s3_tls_only(args: StackValidationArgs, report: ReportViolation) -> None:
    _each_bucket_has(
        args,
        report,
        types=BUCKET_POLICY_TYPES,
        weakness=_tls_weakness,
        fix="add a statement denying s3:* to Principal '*' on the bucket and its objects with "
        "Condition Bool aws:SecureTransport 'false'",
        missing=lambda b: (
            f"{b} has no BucketPolicy, so it serves requests made without TLS; add one denying "
            "s3:* on the bucket and its objects when aws:SecureTransport is 'false'"
        ),
    )


def _ownership_weakness(setting: PolicyResource) -> str | None:
    ownership = known(setting.props, "rule", "objectOwnership")
    if ownership in ("BucketOwnerEnforced", UNKNOWN):
        return None
    return f"sets objectOwnership {ownership!r}, which leaves object ACLs on"


def s3_owner_enforced(args: StackValidationArgs, report: ReportViolation) -> None:
    _each_bucket_has(
        args,
        report,
        types=OWNERSHIP_TYPES,
        weakness=_ownership_weakness,
        fix="set rule.objectOwnership to BucketOwnerEnforced and grant access with policies",
        missing=lambda b: (
            f"{b} has no BucketOwnershipControls, so objects can carry ACLs that grant access "
            "past its policies; add one with rule.objectOwnership BucketOwnerEnforced"
        ),
    )
    for acl in _of_types(args.resources, ACL_TYPES):
        report(
            f"{_setting_where(acl)} grants access through an ACL, which BucketOwnerEnforced "
            "disables; remove it and grant access with a bucket policy or IAM",
            acl.urn,
        )
    for b in buckets(args.resources):
        acl = known(b.resource.props, "acl")
        grants = known_items(known(b.resource.props, "grants"))
        if (isinstance(acl, str) and acl not in ("", "private")) or grants:
            report(
                f"{b} sets an ACL (acl or grants), which BucketOwnerEnforced disables; remove "
                "it and grant access with a bucket policy or IAM",
                b.resource.urn,
            )


# --- ECR -------------------------------------------------------------------------------------


def ecr_immutable_scanned(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != ECR_REPOSITORY:
        return
    where = f"ECR repository {known(args.props, 'name') or args.name}"
    mutability = known(args.props, "imageTagMutability")
    if mutability not in ("IMMUTABLE", UNKNOWN):
        report(
            f"{where} has {mutability or 'MUTABLE (the default)'} tags, so a pushed tag can "
            "later name other code than was reviewed and scanned; set imageTagMutability: "
            "IMMUTABLE",
            None,
        )
    if known(args.props, "imageScanningConfiguration", "scanOnPush") not in (True, UNKNOWN):
        report(
            f"{where} does not scan images on push, so vulnerable images reach the cluster "
            "unnoticed; set imageScanningConfiguration.scanOnPush: true",
            None,
        )


# --- EKS -------------------------------------------------------------------------------------


def _cluster(args: ResourceValidationArgs) -> str:
    name = known(args.props, "name")
    return f"EKS cluster {name!r}" if isinstance(name, str) and name else f"EKS cluster {args.name}"


def _open_to_everyone(cidr: Any) -> bool:
    if not isinstance(cidr, str):
        return False
    try:
        return ipaddress.ip_network(cidr.strip(), strict=False).prefixlen == 0
    except ValueError:
        return False  # the provider rejects it


def eks_endpoint_private(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != EKS_CLUSTER:
        return
    where = _cluster(args)
    vpc = known(args.props, "vpcConfig")
    if vpc is UNKNOWN:
        return
    if known(vpc, "endpointPrivateAccess") not in (True, UNKNOWN):
        report(
            f"{where} has no private API endpoint (endpointPrivateAccess defaults to false), so "
            "its nodes reach the API over the internet; set vpcConfig.endpointPrivateAccess: true",
            None,
        )
    public = known(vpc, "endpointPublicAccess")
    if public is False or public is UNKNOWN:
        return
    cidrs = known(vpc, "publicAccessCidrs")
    if cidrs is UNKNOWN:
        return
    listed = known_items(cidrs)
    if not listed:
        report(
            f"{where} has a public API endpoint open to the whole internet (endpointPublicAccess "
            "defaults to true, publicAccessCidrs to 0.0.0.0/0); leave aws.public_access_cidrs "
            "empty for a private endpoint, or list the ranges that need it",
            None,
        )
        return
    for cidr in listed:
        if _open_to_everyone(cidr):
            report(
                f"{where} lets {cidr} (the whole internet) reach its API endpoint; list only the "
                "office or VPN ranges in aws.public_access_cidrs, or leave it empty for a "
                "private endpoint",
                None,
            )


def _encrypts_secrets(config: Any) -> bool:
    if config is UNKNOWN:
        return True
    # pulumi-aws 6+ takes one encryptionConfig object; older versions took a list of them.
    configs = [config] if isinstance(config, Mapping) else known_items(config)
    for c in configs:
        if c is UNKNOWN:
            return True
        resources = known(c, "resources")
        has_secrets = resources is UNKNOWN or "secrets" in known_items(resources)
        if has_secrets and _known_str(known(c, "provider", "keyArn")):
            return True
    return False


def eks_secrets_encrypted(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != EKS_CLUSTER:
        return
    if not _encrypts_secrets(known(args.props, "encryptionConfig")):
        report(
            f"{_cluster(args)} does not envelope-encrypt Kubernetes Secrets with a KMS key, so "
            "anyone with the etcd data reads them; set encryptionConfig with resources "
            "[secrets] and provider.keyArn a KMS key with rotation",
            None,
        )


def eks_audit_logging(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != EKS_CLUSTER:
        return
    enabled = known(args.props, "enabledClusterLogTypes")
    if enabled is UNKNOWN:
        return
    types = known_items(enabled)
    if UNKNOWN in types:
        return
    missing = [t for t in REQUIRED_LOG_TYPES if t not in types]
    if missing:
        report(
            f"{_cluster(args)} does not send its {', '.join(missing)} logs to CloudWatch, so "
            "who did what to the cluster cannot be traced; add "
            f"{', '.join(REQUIRED_LOG_TYPES)} to enabledClusterLogTypes",
            None,
        )


def eks_access_entries_only(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == EKS_CLUSTER:
        mode = known(args.props, "accessConfig", "authenticationMode")
        if mode not in ("API", UNKNOWN):
            report(
                f"{_cluster(args)} uses authentication mode {mode or 'CONFIG_MAP (the default)'}"
                ", so editing the aws-auth ConfigMap grants cluster access outside the EKS access "
                "entries; set accessConfig.authenticationMode: API",
                None,
            )
        return
    kind = kind_of(args.resource_type)
    if kind not in ("ConfigMap", "ConfigMapPatch"):
        return
    namespace = known(args.props, "metadata", "namespace")
    name = known(args.props, "metadata", "name")
    if (namespace, name) == AWS_AUTH:
        report(
            f"{kind} kube-system/aws-auth maps IAM identities into the cluster outside EKS "
            "access entries (an API-mode cluster ignores it); remove it and list the principal "
            "in aws.access_entries (or aws.cluster_admin_arns)",
            None,
        )


# --- IAM -------------------------------------------------------------------------------------


def grants_everything(statement: Mapping[str, Any]) -> bool:
    """An Allow of every action on every resource. NotAction and NotResource count as "every":
    an Allow of all but a few actions (or on all but a few resources) is no narrower."""
    if statement.get("Effect") != "Allow":
        return False
    every_action = "NotAction" in statement or any(
        a in ADMIN_ACTIONS for a in _strings(statement.get("Action"))
    )
    every_resource = "NotResource" in statement or "*" in _strings(statement.get("Resource"))
    return every_action and every_resource


def _documents(args: ResourceValidationArgs) -> Iterable[tuple[str, Any]]:
    """(where, policy document) of every identity policy the resource declares."""
    what = IAM_POLICY_DOCUMENTS.get(args.resource_type)
    if what is not None:
        yield f"{what} {args.name}", known(args.props, "policy")
    elif args.resource_type == IAM_ROLE:
        # assumeRolePolicy is the role's trust policy: who may assume it, not what it may do.
        for i, inline in enumerate(known_items(known(args.props, "inlinePolicies"))):
            name = known(inline, "name")
            label = name if isinstance(name, str) and name else str(i)
            yield f"IAM role {args.name}, inline policy {label}", known(inline, "policy")


def _attached_arns(args: ResourceValidationArgs) -> Iterable[tuple[str, Any]]:
    """(where, managed policy ARN) of every managed policy the resource attaches."""
    found = IAM_ATTACHMENTS.get(args.resource_type)
    if found is not None:
        what, prop = found
        value = known(args.props, prop)
        arns = known_items(value) if prop.endswith("Arns") else [value]
        for arn in arns:
            yield f"IAM {what} {args.name}", arn
    elif args.resource_type == IAM_ROLE:
        for arn in known_items(known(args.props, "managedPolicyArns")):
            yield f"IAM role {args.name}", arn


def iam_no_admin_statements(args: ResourceValidationArgs, report: ReportViolation) -> None:
    for where, value in _documents(args):
        for i, statement in enumerate(statements(policy_document(value))):
            if grants_everything(statement):
                report(
                    f"{where}: {_statement_name(statement, i)} allows every action on every "
                    "resource, which is administrator access; list the actions and resources "
                    "the workload needs",
                    None,
                )
    forbidden = config_value(args, "forbiddenManagedPolicies", DEFAULT_FORBIDDEN_MANAGED_POLICIES)
    for where, arn in _attached_arns(args):
        match = _AWS_MANAGED_POLICY.match(arn) if isinstance(arn, str) else None
        if match and match["name"] in forbidden:
            report(
                f"{where} attaches {arn}, which is administrator access; attach a policy "
                "listing the actions and resources the role needs",
                None,
            )


def iam_no_access_keys(args: ResourceValidationArgs, report: ReportViolation) -> None:
    credential = IAM_CREDENTIALS.get(args.resource_type)
    if credential is not None:
        user = known(args.props, "user") or known(args.props, "userName")
        of = f" of user {user}" if isinstance(user, str) and user else ""
        report(
            f"IAM {credential} {args.name}{of} is a long-lived credential that works until "
            "someone revokes it; give workloads a role through EKS Pod Identity and people "
            "SSO roles with EKS access entries",
            None,
        )
    elif args.resource_type == IAM_USER:
        report(
            f"IAM user {known(args.props, 'name') or args.name} is a long-lived identity; give "
            "workloads a role through EKS Pod Identity and people SSO roles with EKS access "
            "entries",
            None,
        )


POD_IDENTITY_SERVICE = "pods.eks.amazonaws.com"
_EKS_CLUSTER_ARN = re.compile(r"^arn:aws[a-z-]*:eks:[^:]*:[^:]*:cluster/")


def _trusts_pod_identity(statement: Mapping[str, Any]) -> bool:
    principal = statement.get("Principal")
    if statement.get("Effect") != "Allow" or not isinstance(principal, Mapping):
        return False
    return POD_IDENTITY_SERVICE in _strings(principal.get("Service"))


def _source_arn_clusters(statement: Mapping[str, Any]) -> list[str]:
    """Cluster ARNs a statement requires aws:SourceArn to equal or match (negated operators
    such as ArnNotEquals exclude rather than require, so they do not count)."""
    found: list[str] = []
    for operator, keys in mapping(statement.get("Condition")).items():
        if "Not" in operator or not isinstance(keys, Mapping):
            continue
        for key, value in keys.items():
            if isinstance(key, str) and key.lower() == "aws:sourcearn":
                found += [v for v in _strings(value) if _EKS_CLUSTER_ARN.match(v)]
    return found


def pod_identity_trust_by_session_tags(
    args: ResourceValidationArgs, report: ReportViolation
) -> None:
    """EKS Pod Identity's aws:SourceArn is the association
    (`arn:aws:eks:<region>:<account>:podidentityassociation/<cluster>/<id>`), never the cluster:
    a trust keyed on the cluster ARN never matches. The documented scope is the session tags
    (EKS user guide, pod-id-role.html)."""
    if args.resource_type != IAM_ROLE:
        return
    document = policy_document(known(args.props, "assumeRolePolicy"))
    for i, statement in enumerate(statements(document)):
        if not _trusts_pod_identity(statement):
            continue
        for arn in _source_arn_clusters(statement):
            report(
                f"IAM role {args.name}: {_statement_name(statement, i)} lets EKS Pod Identity "
                f"assume it only when aws:SourceArn is the cluster {arn}, but Pod Identity's "
                "source is the association (podidentityassociation/<cluster>/<id>), so every "
                "AssumeRole is denied and the pods get no credentials; scope it with "
                "StringEquals on aws:RequestTag/eks-cluster-arn (and kubernetes-namespace, "
                "kubernetes-service-account) instead",
                None,
            )


# --- KMS -------------------------------------------------------------------------------------


def kms_key_rotation(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != KMS_KEY:
        return
    # Only symmetric encryption keys rotate; asymmetric and HMAC keys cannot.
    spec = known(args.props, "customerMasterKeySpec") or known(args.props, "keySpec")
    if spec not in (None, "SYMMETRIC_DEFAULT"):
        return
    if known(args.props, "enableKeyRotation") not in (True, UNKNOWN):
        description = known(args.props, "description")
        about = f" ({description})" if isinstance(description, str) and description else ""
        report(
            f"KMS key {args.name}{about} is never rotated, so one leaked key material decrypts "
            "everything it ever encrypted; set enableKeyRotation: true",
            None,
        )


# --- the pack --------------------------------------------------------------------------------


POLICIES: list[ResourceValidationPolicy | StackValidationPolicy] = [
    stack_rule(
        "aws-s3-encrypted-with-kms",
        "Every S3 bucket has default encryption with a KMS key.",
        s3_encrypted_with_kms,
    ),
    stack_rule(
        "aws-s3-public-access-blocked",
        "Every S3 bucket has a public access block with all four flags on.",
        s3_public_access_blocked,
    ),
    stack_rule(
        "aws-s3-versioned",
        "Every S3 bucket has versioning enabled.",
        s3_versioned,
    ),
    stack_rule(
        "aws-s3-tls-only",
        "Every S3 bucket has a policy denying requests made without TLS.",
        s3_tls_only,
    ),
    stack_rule(
        "aws-s3-owner-enforced",
        "Every S3 bucket enforces bucket-owner object ownership and no ACL is declared.",
        s3_owner_enforced,
    ),
    resource_rule(
        "aws-ecr-immutable-scanned",
        "ECR repositories have immutable tags and scan images on push.",
        ecr_immutable_scanned,
    ),
    resource_rule(
        "aws-eks-endpoint-private",
        "The EKS API endpoint is private, or public only to listed ranges other than 0.0.0.0/0.",
        eks_endpoint_private,
    ),
    resource_rule(
        "aws-eks-secrets-encrypted",
        "EKS clusters envelope-encrypt Kubernetes Secrets with a KMS key.",
        eks_secrets_encrypted,
    ),
    resource_rule(
        "aws-eks-audit-logging",
        "EKS clusters send their api, audit and authenticator logs to CloudWatch.",
        eks_audit_logging,
    ),
    resource_rule(
        "aws-eks-access-entries-only",
        "EKS clusters authenticate through access entries only and no aws-auth ConfigMap exists.",
        eks_access_entries_only,
    ),
    resource_rule(
        "aws-iam-no-admin-statements",
        "No IAM policy allows every action on every resource or attaches AdministratorAccess.",
        iam_no_admin_statements,
        config_schema=PolicyConfigSchema(
            properties={
                "forbiddenManagedPolicies": {
                    "type": "array",
                    "items": {"type": "string"},
                    "default": DEFAULT_FORBIDDEN_MANAGED_POLICIES,
                    "description": "Names of AWS managed policies nothing may attach.",
                }
            }
        ),
    ),
    resource_rule(
        "aws-pod-identity-trust-by-session-tags",
        "Pod Identity trust policies scope by session tags, never aws:SourceArn = a cluster ARN.",
        pod_identity_trust_by_session_tags,
    ),
    resource_rule(
        "aws-iam-no-access-keys",
        "No IAM user or long-lived IAM credential is declared.",
        iam_no_access_keys,
    ),
    resource_rule(
        "aws-kms-key-rotation",
        "Symmetric KMS keys have automatic key rotation on.",
        kms_key_rotation,
    ),
]
