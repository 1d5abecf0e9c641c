"""The cluster autoscaler: grows node groups for pending pods and shrinks idle ones to `min`.

It finds the managed node groups by the ASG tags EKS sets on them (`k8s.io/cluster-autoscaler/
enabled` and `.../<cluster>`), and builds nodes of empty groups from the node-template tags
`NodeGroups` adds, which is what lets a GPU group rest at zero nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from mlstack.components import Options
from mlstack.components.aws.iam import autoscaler_policy
from mlstack.components.aws.identity import PodIdentity, PodIdentityArgs
from mlstack.components.kubernetes.addons import CLUSTER_AUTOSCALER
from mlstack.stacks.names import POOL_LABEL, SYSTEM_POOL
from mlstack.stacks.versions import version_set

NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "cluster-autoscaler"


def autoscaler_values(cluster: str, region: str, kubernetes_version: str) -> dict[str, Any]:
    """Helm values: auto-discovery for this cluster, the image matching its version, on the
    system nodes, and scale-down that empties GPU groups promptly."""
    return {
        "cloudProvider": "aws",
        "awsRegion": region,
        "autoDiscovery": {"clusterName": cluster},
        "image": {"tag": version_set(kubernetes_version).cluster_autoscaler_image},
        "rbac": {"serviceAccount": {"create": True, "name": SERVICE_ACCOUNT}},
        "nodeSelector": {POOL_LABEL: SYSTEM_POOL},
        "priorityClassName": "system-cluster-critical",
        "extraArgs": {
            "balance-similar-node-groups": True,
            "expander": "least-waste",
            "skip-nodes-with-local-storage": False,
            "scale-down-unneeded-time": "10m",
            "scale-down-delay-after-add": "5m",
        },
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534},
        "containerSecurityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


@dataclass(frozen=True)
class ClusterAutoscalerArgs:
    cluster: str
    cluster_arn: pulumi.Output[str]
    region: str
    kubernetes_version: str
    #: Options of the Helm release: the cluster's Kubernetes provider and what it waits for
    #: (the component's own options carry the AWS provider, for its IAM role).
    k8s_opts: pulumi.ResourceOptions


class ClusterAutoscaler(pulumi.ComponentResource):
    """Its IAM role (Pod Identity) and its Helm release on the cluster."""

    def __init__(self, name: str, args: ClusterAutoscalerArgs, opts: Options = None) -> None:
        super().__init__("mlstack:aws:ClusterAutoscaler", name, None, opts)
        self.identity = PodIdentity(
            f"{name}-identity",
            PodIdentityArgs(
                cluster_name=args.cluster,
                cluster_arn=args.cluster_arn,
                namespace=NAMESPACE,
                service_account=SERVICE_ACCOUNT,
                policy=pulumi.Output.from_input(autoscaler_policy(args.cluster)),
                description=f"Cluster autoscaler of {args.cluster}",
            ),
            pulumi.ResourceOptions(parent=self),
        )
        self.release = CLUSTER_AUTOSCALER.release(
            f"{name}-release",
            name="cluster-autoscaler",
            namespace=NAMESPACE,
            parent=self,
            values=autoscaler_values(args.cluster, args.region, args.kubernetes_version),
            opts=pulumi.ResourceOptions.merge(
                args.k8s_opts, pulumi.ResourceOptions(depends_on=[self.identity])
            ),
        )
        self.register_outputs({"role_arn": self.identity.role.arn})
