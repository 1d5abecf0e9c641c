"""IAM and S3 policy documents, built by pure functions from names and ARNs.

The components fill in ARNs that exist only after deployment (through `Output.apply`); tests
build the same documents with literal ARNs and hand them to a real IAM/S3 implementation
(moto's server) so their shape is checked by an API, not by eye.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from mlstack.components.aws.catalog import allocatable_ephemeral_storage_gib
from mlstack.components.backend import is_digest

VERSION = "2012-10-17"
Document = dict[str, Any]

#: EKS Pod Identity: the agent assumes team roles through this service principal.
POD_IDENTITY_PRINCIPAL = "pods.eks.amazonaws.com"
#: Session tags EKS Pod Identity sets on every AssumeRole (EKS user guide, pod-id-role.html).
POD_IDENTITY_CLUSTER_TAG = "eks-cluster-arn"
POD_IDENTITY_NAMESPACE_TAG = "kubernetes-namespace"
POD_IDENTITY_SERVICE_ACCOUNT_TAG = "kubernetes-service-account"
#: The ASG tags EKS puts on managed node groups; the autoscaler finds its groups by them.
AUTOSCALER_ENABLED_TAG = "k8s.io/cluster-autoscaler/enabled"
AUTOSCALER_NODE_TEMPLATE = "k8s.io/cluster-autoscaler/node-template"


def autoscaler_owner_tag(cluster: str) -> str:
    return f"k8s.io/cluster-autoscaler/{cluster}"


def dumps(document: Document) -> str:
    return json.dumps(document, sort_keys=True)


def bucket_arn(bucket: str) -> str:
    return f"arn:aws:s3:::{bucket}"


def service_trust(service: str) -> Document:
    """Trust for an AWS service principal (EKS control plane, EC2 nodes)."""
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": service},
                "Action": ["sts:AssumeRole", "sts:TagSession"]
                if service == "eks.amazonaws.com"
                else "sts:AssumeRole",
            }
        ],
    }


def pod_identity_trust(
    cluster_arn: str, namespace: str, service_account: str | Sequence[str]
) -> Document:
    """Trust for EKS Pod Identity, for one ServiceAccount of one cluster.

    The scope is the session tags Pod Identity sends with its AssumeRole ("You can use these
    tags in the condition keys in the trust policy to restrict which service accounts,
    namespaces, and clusters can use this role": eks-cluster-arn, kubernetes-namespace,
    kubernetes-service-account; EKS user guide, pod-id-role.html). Not `aws:SourceArn`: for
    Pod Identity that is the association (`podidentityassociation/<cluster>/<id>`), never the
    cluster, so a condition equal to the cluster ARN denies every AssumeRole (the policy rule
    `aws-pod-identity-trust-by-session-tags` refuses that form).
    """
    account = cluster_arn.split(":")[4]
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "PodIdentityForOneServiceAccount",
                "Effect": "Allow",
                "Principal": {"Service": POD_IDENTITY_PRINCIPAL},
                "Action": ["sts:AssumeRole", "sts:TagSession"],
                "Condition": {
                    "StringEquals": {
                        "aws:SourceAccount": account,
                        f"aws:RequestTag/{POD_IDENTITY_CLUSTER_TAG}": cluster_arn,
                        f"aws:RequestTag/{POD_IDENTITY_NAMESPACE_TAG}": namespace,
                        # Several: any of them (a condition value list ORs its values).
                        f"aws:RequestTag/{POD_IDENTITY_SERVICE_ACCOUNT_TAG}": service_account
                        if isinstance(service_account, str)
                        else list(service_account),
                    }
                },
            }
        ],
    }


def team_workload_policy(
    *,
    prefix: str,
    buckets: Mapping[str, str],
    storage_key_arn: str,
    region: str,
    repository_arns: Sequence[str],
) -> Document:
    """Least privilege for a team's workloads.

    Read the datasets bucket; read and write only under `<prefix>/` (the team's object prefix)
    of the checkpoints and models buckets (listing limited to that prefix); use the storage
    KMS key only through S3; pull the platform's images.
    """
    datasets = bucket_arn(buckets["datasets"])
    owned = [bucket_arn(buckets[p]) for p in ("checkpoints", "models")]
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "FindBuckets",
                "Effect": "Allow",
                "Action": "s3:GetBucketLocation",
                "Resource": [datasets, *owned],
            },
            {
                "Sid": "ListDatasets",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": datasets,
            },
            {
                "Sid": "ReadDatasets",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": f"{datasets}/*",
            },
            {
                "Sid": "ListOwnPrefixes",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": owned,
                "Condition": {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}},
            },
            {
                "Sid": "ReadWriteOwnPrefixes",
                "Effect": "Allow",
                "Action": [
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                    "s3:ListMultipartUploadParts",
                ],
                "Resource": [f"{arn}/{prefix}/*" for arn in owned],
            },
            {
                "Sid": "UseStorageKeyThroughS3",
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": storage_key_arn,
                "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
            },
            {
                # GetAuthorizationToken has no resource-level permissions: "*" is the only form.
                "Sid": "RegistryLogin",
                "Effect": "Allow",
                "Action": "ecr:GetAuthorizationToken",
                "Resource": "*",
            },
            {
                "Sid": "PullPlatformImages",
                "Effect": "Allow",
                "Action": [
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability",
                ],
                "Resource": list(repository_arns),
            },
        ],
    }


def autoscaler_policy(cluster: str) -> Document:
    """The cluster autoscaler's rights: describe anything, resize only this cluster's groups."""
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "ResizeOwnGroups",
                "Effect": "Allow",
                "Action": [
                    "autoscaling:SetDesiredCapacity",
                    "autoscaling:TerminateInstanceInAutoScalingGroup",
                ],
                "Resource": "*",
                "Condition": {
                    "StringEquals": {f"aws:ResourceTag/{autoscaler_owner_tag(cluster)}": "owned"}
                },
            },
            {
                # Describe calls have no resource-level permissions.
                "Sid": "Discover",
                "Effect": "Allow",
                "Action": [
                    "autoscaling:DescribeAutoScalingGroups",
                    "autoscaling:DescribeAutoScalingInstances",
                    "autoscaling:DescribeLaunchConfigurations",
                    "autoscaling:DescribeScalingActivities",
                    "autoscaling:DescribeTags",
                    "ec2:DescribeImages",
                    "ec2:DescribeInstanceTypes",
                    "ec2:DescribeLaunchTemplateVersions",
                    "ec2:GetInstanceTypesFromInstanceRequirements",
                    "eks:DescribeNodegroup",
                ],
                "Resource": "*",
            },
        ],
    }


def tls_only_bucket_policy(bucket: str) -> Document:
    """Deny every request to the bucket that does not come over TLS."""
    arn = bucket_arn(bucket)
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [arn, f"{arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


def ecr_lifecycle_policy(keep_last: int, deployed: Sequence[str] = ()) -> Document:
    """Expire all but the newest `keep_last` images, never an image the stack deploys.

    `imageCountMoreThan` ranks images by push time and expires the rest, pinned by a running
    workload or not. What protects an image is a rule before it: "An image that matches the
    tagging requirements of a rule cannot be expired by a rule with a lower priority" (Amazon
    ECR user guide, https://docs.aws.amazon.com/AmazonECR/latest/userguide/LifecyclePolicies.html).
    So each tag the workloads pin gets its own rule first ("If you specify multiple tags, only
    the images with all specified tags are selected", lifecycle_policy_parameters.html, so one
    tag per rule), keeping the one image with that tag (tags are immutable here); the rule
    for `any` must come last. A digest in `deployed` has no tag to match: pin tags on AWS.
    """
    keep_deployed = [
        {
            "rulePriority": priority,
            "description": f"Keep the deployed image {tag}",
            "selection": {
                "tagStatus": "tagged",
                "tagPatternList": [tag],
                "countType": "imageCountMoreThan",
                "countNumber": 1,
            },
            "action": {"type": "expire"},
        }
        for priority, tag in enumerate(sorted({t for t in deployed if not is_digest(t)}), start=1)
    ]
    return {
        "rules": [
            *keep_deployed,
            {
                "rulePriority": len(keep_deployed) + 1,
                "description": f"Keep the last {keep_last} images",
                "selection": {
                    "tagStatus": "any",
                    "countType": "imageCountMoreThan",
                    "countNumber": keep_last,
                },
                "action": {"type": "expire"},
            },
        ]
    }


def node_template_tags(
    labels: Mapping[str, str],
    taints: Sequence[tuple[str, str, str]],
    gpus: int,
    disk_gib: int,
) -> dict[str, str]:
    """ASG tags from which the cluster autoscaler builds a node of an empty group.

    With zero nodes the autoscaler cannot look at one; these tags tell it the labels, taints
    and GPUs a new node would have, so a pending GPU pod can scale its group up from zero.
    Ephemeral storage is what the node's kubelet will offer pods (its allocatable), not the
    whole disk: with the disk, the autoscaler would add a node for a pod asking more storage
    than any node can give, and the pod would stay Pending on it.
    """
    tags = {f"{AUTOSCALER_NODE_TEMPLATE}/label/{k}": v for k, v in labels.items()}
    tags.update(
        {
            f"{AUTOSCALER_NODE_TEMPLATE}/taint/{key}": f"{value}:{effect}"
            for key, value, effect in taints
        }
    )
    if gpus:
        tags[f"{AUTOSCALER_NODE_TEMPLATE}/resources/nvidia.com/gpu"] = str(gpus)
    storage = allocatable_ephemeral_storage_gib(disk_gib)
    tags[f"{AUTOSCALER_NODE_TEMPLATE}/resources/ephemeral-storage"] = f"{storage}Gi"
    return tags
