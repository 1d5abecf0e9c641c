"""The GKE Standard control plane, its node service account, and the Kubernetes provider on it.

A regional cluster (three control-plane replicas) with private nodes, Workload Identity,
Dataplane V2 (eBPF; NetworkPolicy enforced without a separate add-on), shielded nodes, no
legacy ABAC or client certificates, system and workload logs plus managed Prometheus. The
default node pool is removed: every pool is a NodePool resource the platform owns. The control
plane's public endpoint is on only for `master_authorized_networks`; without them the endpoint
is private and GKE's public CIDRs are refused too.

A private-only control plane is reached through its DNS-based endpoint. The private IP endpoint
is an internal load balancer in a Google-owned network: a VPN, Interconnect or peered network
reaches it only with route export (or a proxy, since peering is not transitive), and then only
from sources the authorized networks list ("Advanced private cluster configurations" and
"Creating GKE private clusters with network proxies for controller access", cloud.google.com).
The DNS-based endpoint "is reachable from any network that can reach Google Cloud APIs,
including on-premises or other cloud networks" and admits a caller by IAM
(`container.clusters.connect`), not by source address ("About network isolation",
cloud.google.com/kubernetes-engine/docs/concepts/network-isolation). So with no authorized
networks the cluster allows external traffic on its DNS endpoint and the Kubernetes provider
(the kubeconfig below) talks to that name, wherever `pulumi up` runs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from mlstack.components import Options
from mlstack.components.gcp.iam import NODE_ROLE, NODES_ACCOUNT, account_id, service_account_member
from mlstack.components.gcp.network import PODS_RANGE, SERVICES_RANGE

RELEASE_CHANNELS = {
    "rapid": "RAPID",
    "regular": "REGULAR",
    "stable": "STABLE",
    "extended": "EXTENDED",
}
LOG_COMPONENTS = ("SYSTEM_COMPONENTS", "APISERVER", "CONTROLLER_MANAGER", "SCHEDULER", "WORKLOADS")
METRIC_COMPONENTS = ("SYSTEM_COMPONENTS", "APISERVER", "SCHEDULER", "CONTROLLER_MANAGER")
#: The scope nodes get; what they may do is the node service account's IAM, not scopes.
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
#: Workload vulnerability scanning off: both scanning tiers are retired (VULNERABILITY_BASIC
#: removed 2025-07-31, VULNERABILITY_ENTERPRISE 2026-06-16; see RETIRED_VULNERABILITY_MODES in
#: policies/rules/gcp.py), so VULNERABILITY_DISABLED is the one mode GKE still accepts.
VULNERABILITY_MODE = "VULNERABILITY_DISABLED"
#: Makes gke-gcloud-auth-plugin mint tokens from Application Default Credentials (what the
#: GCP provider uses: `gcloud auth application-default login`, workload identity federation, a
#: metadata server) instead of the gcloud CLI's logged-in account (kubernetes/cloud-provider-gcp
#: cmd/gke-gcloud-auth-plugin: "Output is an ExecCredential filled with application default
#: credentials"; what `gcloud container clusters get-credentials` writes when
#: container/use_application_default_credentials is set).
ADC_FLAG = "--use_application_default_credentials"


def kubeconfig(cluster: str, endpoint: str, ca_data: str | None) -> str:
    """A kubeconfig that authenticates with gke-gcloud-auth-plugin (no static credentials).

    `ca_data` is the cluster CA of an IP endpoint; None for the DNS-based endpoint, whose
    certificate is publicly trusted (what `get-credentials --dns-endpoint` writes)."""
    server: dict[str, str] = {"server": f"https://{endpoint}"}
    if ca_data is not None:
        server["certificate-authority-data"] = ca_data
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": cluster, "cluster": server}],
            "users": [
                {
                    "name": cluster,
                    "user": {
                        "exec": {
                            "apiVersion": "client.authentication.k8s.io/v1beta1",
                            "command": "gke-gcloud-auth-plugin",
                            "args": [ADC_FLAG],
                            "provideClusterInfo": True,
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


def node_config(
    *, service_account: pulumi.Input[str], tags: Sequence[str]
) -> gcp.container.ClusterNodeConfigArgs:
    """Settings of the default pool GKE creates, briefly, before it is removed."""
    return gcp.container.ClusterNodeConfigArgs(
        service_account=service_account,
        oauth_scopes=[CLOUD_PLATFORM_SCOPE],
        workload_metadata_config=gcp.container.ClusterNodeConfigWorkloadMetadataConfigArgs(
            mode="GKE_METADATA"
        ),
        shielded_instance_config=gcp.container.ClusterNodeConfigShieldedInstanceConfigArgs(
            enable_secure_boot=True, enable_integrity_monitoring=True
        ),
        metadata={"disable-legacy-endpoints": "true"},
        tags=list(tags),
    )


@dataclass(frozen=True)
class GkeClusterArgs:
    cluster: str
    project: str
    region: str
    #: The zones of the cluster's nodes.
    zones: Sequence[str]
    version: str
    release_channel: str
    network: pulumi.Input[str]
    subnetwork: pulumi.Input[str]
    master_cidr: str
    #: The network tags of the nodes of the default pool (which GKE removes again).
    node_tags: Sequence[str]
    #: Refuse to delete the cluster and protect it (prod).
    retain: bool
    #: Where the public endpoint may be reached from; none keeps the endpoint private.
    authorized_networks: Sequence[str] = ()
    #: The KMS key that encrypts Kubernetes secrets in etcd; None for Google's own keys.
    secrets_key: pulumi.Input[str] | None = None
    #: The Google group whose member groups RBAC may name (Google Groups for RBAC).
    security_group: str | None = None


class GkeCluster(pulumi.ComponentResource):
    """Control plane and the service account its nodes run as."""

    def __init__(self, name: str, args: GkeClusterArgs, opts: Options = None) -> None:
        super().__init__("mlstack:gcp:GkeCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        private = not args.authorized_networks
        self.node_account = gcp.serviceaccount.Account(
            f"{name}-nodes",
            gcp.serviceaccount.AccountArgs(
                account_id=account_id(args.cluster, NODES_ACCOUNT),
                display_name=f"GKE nodes of {args.cluster}",
                project=args.project,
            ),
            opts=child,
        )
        node_role = gcp.projects.IAMMember(
            f"{name}-nodes-role",
            gcp.projects.IAMMemberArgs(
                project=args.project,
                role=NODE_ROLE,
                member=self.node_account.email.apply(service_account_member),
            ),
            opts=child,
        )
        self.cluster = gcp.container.Cluster(
            name,
            gcp.container.ClusterArgs(
                name=args.cluster,
                project=args.project,
                location=args.region,
                node_locations=list(args.zones),
                min_master_version=args.version,
                release_channel=gcp.container.ClusterReleaseChannelArgs(
                    channel=RELEASE_CHANNELS[args.release_channel]
                ),
                network=args.network,
                subnetwork=args.subnetwork,
                networking_mode="VPC_NATIVE",
                ip_allocation_policy=gcp.container.ClusterIpAllocationPolicyArgs(
                    cluster_secondary_range_name=PODS_RANGE,
                    services_secondary_range_name=SERVICES_RANGE,
                ),
                private_cluster_config=gcp.container.ClusterPrivateClusterConfigArgs(
                    enable_private_nodes=True,
                    enable_private_endpoint=private,
                    master_ipv4_cidr_block=args.master_cidr,
                    master_global_access_config=gcp.container.ClusterPrivateClusterConfigMasterGlobalAccessConfigArgs(
                        enabled=True
                    ),
                ),
                master_authorized_networks_config=gcp.container.ClusterMasterAuthorizedNetworksConfigArgs(
                    cidr_blocks=[
                        gcp.container.ClusterMasterAuthorizedNetworksConfigCidrBlockArgs(
                            cidr_block=cidr, display_name=f"authorized-{i}"
                        )
                        for i, cidr in enumerate(args.authorized_networks)
                    ],
                    gcp_public_cidrs_access_enabled=False,
                ),
                control_plane_endpoints_config=gcp.container.ClusterControlPlaneEndpointsConfigArgs(
                    dns_endpoint_config=gcp.container.ClusterControlPlaneEndpointsConfigDnsEndpointConfigArgs(
                        allow_external_traffic=True
                    )
                )
                if private
                else None,
                workload_identity_config=gcp.container.ClusterWorkloadIdentityConfigArgs(
                    workload_pool=f"{args.project}.svc.id.goog"
                ),
                datapath_provider="ADVANCED_DATAPATH",
                enable_shielded_nodes=True,
                enable_legacy_abac=False,
                master_auth=gcp.container.ClusterMasterAuthArgs(
                    client_certificate_config=gcp.container.ClusterMasterAuthClientCertificateConfigArgs(
                        issue_client_certificate=False
                    )
                ),
                authenticator_groups_config=gcp.container.ClusterAuthenticatorGroupsConfigArgs(
                    security_group=args.security_group
                )
                if args.security_group
                else None,
                database_encryption=gcp.container.ClusterDatabaseEncryptionArgs(
                    state="ENCRYPTED", key_name=args.secrets_key
                )
                if args.secrets_key is not None
                else None,
                logging_config=gcp.container.ClusterLoggingConfigArgs(
                    enable_components=list(LOG_COMPONENTS)
                ),
                monitoring_config=gcp.container.ClusterMonitoringConfigArgs(
                    enable_components=list(METRIC_COMPONENTS),
                    managed_prometheus=gcp.container.ClusterMonitoringConfigManagedPrometheusArgs(
                        enabled=True
                    ),
                ),
                addons_config=gcp.container.ClusterAddonsConfigArgs(
                    gce_persistent_disk_csi_driver_config=gcp.container.ClusterAddonsConfigGcePersistentDiskCsiDriverConfigArgs(
                        enabled=True
                    ),
                    gcs_fuse_csi_driver_config=gcp.container.ClusterAddonsConfigGcsFuseCsiDriverConfigArgs(
                        enabled=True
                    ),
                ),
                security_posture_config=gcp.container.ClusterSecurityPostureConfigArgs(
                    mode="BASIC", vulnerability_mode=VULNERABILITY_MODE
                ),
                remove_default_node_pool=True,
                initial_node_count=1,
                node_config=node_config(
                    service_account=self.node_account.email, tags=args.node_tags
                ),
                deletion_protection=args.retain,
                resource_labels={"mlstack-cluster": args.cluster},
            ),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[node_role],
                protect=args.retain,
                # GKE picks node versions within the channel and upgrades them itself.
                ignore_changes=["nodeConfig", "nodeVersion"],
            ),
        )
        if private:
            dns_endpoint = self.cluster.control_plane_endpoints_config.apply(
                lambda c: c.dns_endpoint_config.endpoint if c and c.dns_endpoint_config else None
            )
            config = dns_endpoint.apply(lambda e: kubeconfig(args.cluster, str(e), None))
        else:
            config = pulumi.Output.all(
                self.cluster.endpoint, self.cluster.master_auth.cluster_ca_certificate
            ).apply(lambda v: kubeconfig(args.cluster, str(v[0]), str(v[1])))
        self.kubeconfig = pulumi.Output.secret(config)
        self.register_outputs({"name": self.cluster.name, "endpoint": self.cluster.endpoint})

    def provider(self, name: str) -> k8s.Provider:
        return k8s.Provider(
            name,
            k8s.ProviderArgs(kubeconfig=self.kubeconfig, enable_server_side_apply=True),
            opts=pulumi.ResourceOptions(parent=self),
        )
