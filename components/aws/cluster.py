"""The EKS control plane, who may reach it, and the Kubernetes provider on it.

Authentication is EKS access entries only (`authenticationMode: API`): the aws-auth ConfigMap
is never edited. Workload identity is EKS Pod Identity rather than IRSA: no per-cluster OIDC
provider to create and trust, role trust policies that do not embed a cluster's issuer URL
(so a rebuilt cluster keeps its roles), and the binding (namespace, ServiceAccount -> role)
is an AWS resource the policy pack can see, not an annotation any namespace admin can write.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from mlstack.components import Options
from mlstack.components.aws.iam import dumps, service_trust
from mlstack.stacks.schema import AwsAccessEntry

#: Every control-plane log stream; audit and authenticator are the ones incidents need.
CONTROL_PLANE_LOGS = ("api", "audit", "authenticator", "controllerManager", "scheduler")
CLUSTER_ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
POD_IDENTITY_ADDON = "eks-pod-identity-agent"


def kubeconfig(cluster: str, endpoint: str, ca_data: str, region: str) -> str:
    """A kubeconfig that authenticates with `aws eks get-token` (no static credentials)."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": cluster,
                    "cluster": {"server": endpoint, "certificate-authority-data": ca_data},
                }
            ],
            "users": [
                {
                    "name": cluster,
                    "user": {
                        "exec": {
                            "apiVersion": "client.authentication.k8s.io/v1beta1",
                            "command": "aws",
                            "args": [
                                "eks",
                                "get-token",
                                "--cluster-name",
                                cluster,
                                "--region",
                                region,
                            ],
                            "interactiveMode": "Never",
                        }
                    },
                }
            ],
            "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": cluster}}],
            "current-context": cluster,
        },
        indent=2,
    )


@dataclass(frozen=True)
class EksClusterArgs:
    cluster: str
    version: str
    region: str
    subnet_ids: Sequence[pulumi.Input[str]]
    log_retention_days: int
    #: Protect the secrets key and keep it when the stack is destroyed (prod).
    retain: bool
    #: Where the public endpoint may be reached from; none keeps the endpoint private.
    public_access_cidrs: Sequence[str] = ()
    #: Private ranges allowed to the private endpoint (port 443 on the cluster security group).
    api_access_cidrs: Sequence[str] = ()
    admin_arns: Sequence[str] = ()
    access_entries: Sequence[AwsAccessEntry] = ()


class EksCluster(pulumi.ComponentResource):
    """Control plane with private endpoint, KMS-encrypted secrets and full logging."""

    def __init__(self, name: str, args: EksClusterArgs, opts: Options = None) -> None:
        super().__init__("mlstack:aws:EksCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.resource_name = name
        self.secrets_key = aws.kms.Key(
            f"{name}-secrets-key",
            aws.kms.KeyArgs(
                description=f"Envelope encryption of Kubernetes secrets in {args.cluster}",
                enable_key_rotation=True,
                deletion_window_in_days=30,
            ),
            # Losing the key makes every Secret in etcd unreadable.
            opts=pulumi.ResourceOptions(
                parent=self, protect=args.retain, retain_on_delete=args.retain
            ),
        )
        # EKS creates this log group on first write with no expiry; owning it sets retention.
        logs = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            aws.cloudwatch.LogGroupArgs(
                name=f"/aws/eks/{args.cluster}/cluster", retention_in_days=args.log_retention_days
            ),
            opts=child,
        )
        role = aws.iam.Role(
            f"{name}-role",
            aws.iam.RoleArgs(
                assume_role_policy=dumps(service_trust("eks.amazonaws.com")),
                description=f"EKS control plane of {args.cluster}",
            ),
            opts=child,
        )
        attachment = aws.iam.RolePolicyAttachment(
            f"{name}-role-policy",
            aws.iam.RolePolicyAttachmentArgs(
                role=role.name, policy_arn="arn:aws:iam::aws:policy/AmazonEKSClusterPolicy"
            ),
            opts=child,
        )
        self.cluster = aws.eks.Cluster(
            name,
            aws.eks.ClusterArgs(
                name=args.cluster,
                version=args.version,
                role_arn=role.arn,
                vpc_config=aws.eks.ClusterVpcConfigArgs(
                    subnet_ids=list(args.subnet_ids),
                    endpoint_private_access=True,
                    endpoint_public_access=bool(args.public_access_cidrs),
                    public_access_cidrs=list(args.public_access_cidrs) or None,
                ),
                access_config=aws.eks.ClusterAccessConfigArgs(
                    authentication_mode="API",
                    # The identity running `pulumi up` must reach the API to deploy the
                    # Kubernetes layer; everyone else gets access through access entries.
                    bootstrap_cluster_creator_admin_permissions=True,
                ),
                encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                    provider=aws.eks.ClusterEncryptionConfigProviderArgs(
                        key_arn=self.secrets_key.arn
                    ),
                    resources=["secrets"],
                ),
                enabled_cluster_log_types=list(CONTROL_PLANE_LOGS),
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[attachment, logs]),
        )
        on_cluster = pulumi.ResourceOptions(parent=self, depends_on=[self.cluster])
        # The private endpoint answers through the security group EKS creates for the cluster,
        # which admits only the cluster's nodes; a VPN, bastion or runner needs 443 opened
        # (EKS user guide, cluster-endpoint.html, "Accessing a private only API server").
        cluster_sg = self.cluster.vpc_config.apply(lambda c: c.cluster_security_group_id or "")
        for cidr in args.api_access_cidrs:
            aws.vpc.SecurityGroupIngressRule(
                # Named by the range, so removing one touches one rule.
                f"{name}-api-from-{cidr.replace('/', '-')}",
                aws.vpc.SecurityGroupIngressRuleArgs(
                    security_group_id=cluster_sg,
                    ip_protocol="tcp",
                    from_port=443,
                    to_port=443,
                    cidr_ipv4=cidr,
                    description=f"EKS API private endpoint from {cidr}",
                ),
                opts=on_cluster,
            )
        for i, arn in enumerate(args.admin_arns):
            entry = aws.eks.AccessEntry(
                f"{name}-admin-{i}",
                aws.eks.AccessEntryArgs(cluster_name=self.cluster.name, principal_arn=arn),
                opts=on_cluster,
            )
            aws.eks.AccessPolicyAssociation(
                f"{name}-admin-{i}",
                aws.eks.AccessPolicyAssociationArgs(
                    cluster_name=self.cluster.name,
                    principal_arn=arn,
                    policy_arn=CLUSTER_ADMIN_POLICY,
                    access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[entry]),
            )
        for i, access in enumerate(args.access_entries):
            # Groups only: what they may do is the tenancy layer's Roles and RoleBindings.
            aws.eks.AccessEntry(
                f"{name}-access-{i}",
                aws.eks.AccessEntryArgs(
                    cluster_name=self.cluster.name,
                    principal_arn=access.principal_arn,
                    kubernetes_groups=list(access.kubernetes_groups),
                ),
                opts=on_cluster,
            )
        self.kubeconfig = pulumi.Output.secret(
            pulumi.Output.all(self.cluster.endpoint, self.cluster.certificate_authority.data).apply(
                lambda v: kubeconfig(args.cluster, str(v[0]), str(v[1]), args.region)
            )
        )
        self.register_outputs({"name": self.cluster.name, "endpoint": self.cluster.endpoint})

    def pod_identity_agent(self, nodes_ready: Sequence[pulumi.Resource]) -> aws.eks.Addon:
        """The Pod Identity agent (a DaemonSet): it needs nodes to run on."""
        return aws.eks.Addon(
            f"{self.resource_name}-pod-identity",
            aws.eks.AddonArgs(
                cluster_name=self.cluster.name,
                addon_name=POD_IDENTITY_ADDON,
                resolve_conflicts_on_create="OVERWRITE",
                resolve_conflicts_on_update="OVERWRITE",
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(nodes_ready)),
        )

    def provider(self, name: str) -> k8s.Provider:
        return k8s.Provider(
            name,
            k8s.ProviderArgs(kubeconfig=self.kubeconfig, enable_server_side_apply=True),
            opts=pulumi.ResourceOptions(parent=self),
        )
