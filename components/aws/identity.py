"""Workload identity: an IAM role bound to one Kubernetes ServiceAccount by EKS Pod Identity.

Pods of that ServiceAccount get short-lived credentials for the role from the Pod Identity
agent; nothing else can assume it, and no access key exists anywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from mlstack.components import Options
from mlstack.components.aws.iam import Document, dumps, pod_identity_trust


@dataclass(frozen=True)
class PodIdentityArgs:
    cluster_name: pulumi.Input[str]
    cluster_arn: pulumi.Output[str]
    #: The Kubernetes ServiceAccount `namespace/service_account` that gets the role.
    namespace: str
    service_account: str
    #: The role's one inline policy.
    policy: pulumi.Output[Document]
    description: str
    #: More ServiceAccounts of the namespace that assume the role (the pipeline runner).
    more_service_accounts: tuple[str, ...] = ()


class PodIdentity(pulumi.ComponentResource):
    """A role with one inline policy, associated with `namespace/service_account`."""

    def __init__(self, name: str, args: PodIdentityArgs, opts: Options = None) -> None:
        super().__init__("mlstack:aws:PodIdentity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        accounts: str | tuple[str, ...] = args.service_account
        if args.more_service_accounts:
            accounts = (args.service_account, *args.more_service_accounts)
        self.role = aws.iam.Role(
            f"{name}-role",
            aws.iam.RoleArgs(
                assume_role_policy=args.cluster_arn.apply(
                    lambda arn: dumps(pod_identity_trust(arn, args.namespace, accounts))
                ),
                description=args.description,
            ),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-policy",
            aws.iam.RolePolicyArgs(role=self.role.id, policy=args.policy.apply(dumps)),
            opts=child,
        )
        self.association = aws.eks.PodIdentityAssociation(
            name,
            aws.eks.PodIdentityAssociationArgs(
                cluster_name=args.cluster_name,
                namespace=args.namespace,
                service_account=args.service_account,
                role_arn=self.role.arn,
            ),
            opts=child,
        )
        for other in args.more_service_accounts:
            aws.eks.PodIdentityAssociation(
                f"{name}-{other}",
                aws.eks.PodIdentityAssociationArgs(
                    cluster_name=args.cluster_name,
                    namespace=args.namespace,
                    service_account=other,
                    role_arn=self.role.arn,
                ),
                opts=child,
            )
        self.register_outputs({"role_arn": self.role.arn})


def policy_output(
    build: Callable[..., Document], **inputs: pulumi.Input[object]
) -> pulumi.Output[Document]:
    """`build(**resolved inputs)` once every input is known."""
    return pulumi.Output.all(**inputs).apply(lambda resolved: build(**resolved))
