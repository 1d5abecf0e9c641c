"""The VPC: one subnet with pod and service ranges, Cloud NAT for private nodes, and the one
firewall rule GKE does not make itself.

Nodes have no external IPs (private nodes): egress goes through Cloud NAT, Google APIs through
Private Google Access. GKE creates the firewall rules a private cluster needs for its own
traffic (control plane to kubelet and 443, node to node, pod to pod); what it leaves out is the
control plane reaching admission webhooks on other ports, which Kueue, JobSet and the
platform's controllers serve on. That rule allows only the control plane's /28, only those
ports, only to this cluster's nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from mlstack.components import Options

PODS_RANGE = "pods"
SERVICES_RANGE = "services"
#: Ports admission webhooks listen on (Kueue and JobSet: 9443; common others: 8443, 10250 is
#: the kubelet's and GKE opens it).
WEBHOOK_PORTS = ("8443", "9443")


def node_tag(cluster: str) -> str:
    """The network tag every node of the cluster carries; firewall rules target it."""
    return f"mlstack-{cluster}-node"


@dataclass(frozen=True)
class NetworkArgs:
    cluster: str
    region: str
    #: The nodes' range, and the secondary ranges of pods and services in the same subnet.
    subnet_cidr: str
    pods_cidr: str
    services_cidr: str
    #: The control plane's /28, the source of the webhook firewall rule.
    master_cidr: str


class Network(pulumi.ComponentResource):
    """VPC, subnet with secondary ranges, router with NAT, webhook firewall rule."""

    def __init__(self, name: str, args: NetworkArgs, opts: Options = None) -> None:
        super().__init__("mlstack:gcp:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.vpc = gcp.compute.Network(
            name,
            gcp.compute.NetworkArgs(
                name=args.cluster,
                auto_create_subnetworks=False,
                routing_mode="REGIONAL",
                description=f"mlstack platform {args.cluster}",
            ),
            opts=child,
        )
        self.subnet = gcp.compute.Subnetwork(
            f"{name}-nodes",
            gcp.compute.SubnetworkArgs(
                name=f"{args.cluster}-nodes",
                network=self.vpc.id,
                region=args.region,
                ip_cidr_range=args.subnet_cidr,
                secondary_ip_ranges=[
                    gcp.compute.SubnetworkSecondaryIpRangeArgs(
                        range_name=PODS_RANGE, ip_cidr_range=args.pods_cidr
                    ),
                    gcp.compute.SubnetworkSecondaryIpRangeArgs(
                        range_name=SERVICES_RANGE, ip_cidr_range=args.services_cidr
                    ),
                ],
                # Private nodes reach Google APIs (GCS, Artifact Registry) without NAT.
                private_ip_google_access=True,
                log_config=gcp.compute.SubnetworkLogConfigArgs(
                    aggregation_interval="INTERVAL_5_SEC",
                    flow_sampling=0.5,
                    metadata="INCLUDE_ALL_METADATA",
                ),
            ),
            opts=child,
        )
        router = gcp.compute.Router(
            f"{name}-router",
            gcp.compute.RouterArgs(
                name=f"{args.cluster}-router", network=self.vpc.id, region=args.region
            ),
            opts=child,
        )
        gcp.compute.RouterNat(
            f"{name}-nat",
            gcp.compute.RouterNatArgs(
                name=f"{args.cluster}-nat",
                router=router.name,
                region=args.region,
                nat_ip_allocate_option="AUTO_ONLY",
                source_subnetwork_ip_ranges_to_nat="LIST_OF_SUBNETWORKS",
                subnetworks=[
                    gcp.compute.RouterNatSubnetworkArgs(
                        name=self.subnet.id, source_ip_ranges_to_nats=["ALL_IP_RANGES"]
                    )
                ],
                log_config=gcp.compute.RouterNatLogConfigArgs(enable=True, filter="ERRORS_ONLY"),
            ),
            opts=child,
        )
        self.webhooks = gcp.compute.Firewall(
            f"{name}-webhooks",
            gcp.compute.FirewallArgs(
                name=f"{args.cluster}-control-plane-webhooks",
                network=self.vpc.id,
                direction="INGRESS",
                description="GKE control plane to admission webhooks (Kueue, JobSet) on nodes",
                source_ranges=[args.master_cidr],
                target_tags=[node_tag(args.cluster)],
                allows=[gcp.compute.FirewallAllowArgs(protocol="tcp", ports=list(WEBHOOK_PORTS))],
                log_config=gcp.compute.FirewallLogConfigArgs(metadata="EXCLUDE_ALL_METADATA"),
            ),
            opts=child,
        )
        self.register_outputs({"network": self.vpc.id, "subnet": self.subnet.id})
