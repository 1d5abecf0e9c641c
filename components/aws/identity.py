"""Workload identity: an IAM role bound to one Kubernetes ServiceAccount by EKS Pod Identity.

Pods of that ServiceAccount get short-lived credentials for the role from the Pod Identity
agent; nothing else can assume it, and no access key exists anywhere.
"""

from __future__ import annotations

from collections.abc import Callable

import pulumi
import pulumi_aws as aws

from mlstack.components.aws.iam import Document, dumps, pod_identity_trust


class PodIdentity(pulumi.ComponentResource):
    """A role with one inline policy, associated with `namespace/service_account`."""

    def __init__(
        self,
        name: str,
        *,
        cluster_name: pulumi.Input[str],
        cluster_arn: pulumi.Output[str],
        namespace: str,
        service_account: str,
        policy: pulumi.Output[Document],
        description: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("mlstack:aws:PodIdentity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.role = aws.iam.Role(
            f"{name}-role",
            aws.iam.RoleArgs(
                assume_role_policy=cluster_arn.apply(lambda arn: dumps(pod_identity_trust(arn))),
                description=description,
            ),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-policy",
            aws.iam.RolePolicyArgs(role=self.role.id, policy=policy.apply(dumps)),
            opts=child,
        )
        self.association = aws.eks.PodIdentityAssociation(
            name,
            aws.eks.PodIdentityAssociationArgs(
                cluster_name=cluster_name,
                namespace=namespace,
                service_account=service_account,
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
