"""The VPC: private subnets for nodes, public subnets for load balancers, NAT for egress."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pulumi
import pulumi_aws as aws

from mlstack.components import Options

#: Subnet tags the AWS load balancer controller and in-tree service controller select on.
PUBLIC_ELB_TAG = "kubernetes.io/role/elb"
INTERNAL_ELB_TAG = "kubernetes.io/role/internal-elb"


def cluster_tag(cluster: str) -> str:
    return f"kubernetes.io/cluster/{cluster}"


@dataclass(frozen=True)
class SubnetPlan:
    zone: str
    private_cidr: str
    public_cidr: str


def subnet_plan(vpc_cidr: str, zones: Sequence[str]) -> list[SubnetPlan]:
    """Carve the VPC into eighths: one large private subnet per zone (nodes and pods take VPC
    addresses), and small public subnets (load balancers, NAT) inside the last eighth."""
    vpc = ipaddress.ip_network(vpc_cidr)
    eighths = list(vpc.subnets(prefixlen_diff=3))
    public = list(eighths[-1].subnets(prefixlen_diff=3))
    if len(zones) >= len(eighths):
        raise ValueError(f"{vpc_cidr} holds subnets for at most {len(eighths) - 1} zones")
    return [SubnetPlan(zone, str(eighths[i]), str(public[i])) for i, zone in enumerate(zones)]


@dataclass(frozen=True)
class NetworkArgs:
    cluster: str
    cidr: str
    zones: Sequence[str]
    #: NAT gateways: one in the first zone ('single') or one per zone ('per-az').
    nat: Literal["single", "per-az"]


class Network(pulumi.ComponentResource):
    """VPC across `zones`; NAT in one zone (`single`) or every zone (`per-az`)."""

    def __init__(self, name: str, args: NetworkArgs, opts: Options = None) -> None:
        super().__init__("mlstack:aws:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        owned = {cluster_tag(args.cluster): "shared"}
        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            aws.ec2.VpcArgs(
                cidr_block=args.cidr,
                enable_dns_hostnames=True,
                enable_dns_support=True,
                tags={"Name": f"{args.cluster}-vpc"},
            ),
            opts=child,
        )
        igw = aws.ec2.InternetGateway(
            f"{name}-igw",
            aws.ec2.InternetGatewayArgs(vpc_id=self.vpc.id, tags={"Name": f"{args.cluster}-igw"}),
            opts=child,
        )
        public_routes = aws.ec2.RouteTable(
            f"{name}-public",
            aws.ec2.RouteTableArgs(
                vpc_id=self.vpc.id,
                routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=igw.id)],
                tags={"Name": f"{args.cluster}-public"},
            ),
            opts=child,
        )
        self.public_subnets: list[aws.ec2.Subnet] = []
        self.private_subnets: list[aws.ec2.Subnet] = []
        nat_gateways: list[aws.ec2.NatGateway] = []
        for plan in subnet_plan(args.cidr, args.zones):
            public = aws.ec2.Subnet(
                f"{name}-public-{plan.zone}",
                aws.ec2.SubnetArgs(
                    vpc_id=self.vpc.id,
                    cidr_block=plan.public_cidr,
                    availability_zone=plan.zone,
                    # Load balancers get public addresses; nodes never live here.
                    map_public_ip_on_launch=False,
                    tags={
                        "Name": f"{args.cluster}-public-{plan.zone}",
                        PUBLIC_ELB_TAG: "1",
                        **owned,
                    },
                ),
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{plan.zone}",
                aws.ec2.RouteTableAssociationArgs(
                    subnet_id=public.id, route_table_id=public_routes.id
                ),
                opts=child,
            )
            self.public_subnets.append(public)
            if args.nat == "per-az" or not nat_gateways:
                eip = aws.ec2.Eip(
                    f"{name}-nat-{plan.zone}",
                    aws.ec2.EipArgs(domain="vpc", tags={"Name": f"{args.cluster}-nat-{plan.zone}"}),
                    opts=child,
                )
                nat_gateways.append(
                    aws.ec2.NatGateway(
                        f"{name}-nat-{plan.zone}",
                        aws.ec2.NatGatewayArgs(
                            subnet_id=public.id,
                            allocation_id=eip.id,
                            tags={"Name": f"{args.cluster}-nat-{plan.zone}"},
                        ),
                        opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
                    )
                )
            private = aws.ec2.Subnet(
                f"{name}-private-{plan.zone}",
                aws.ec2.SubnetArgs(
                    vpc_id=self.vpc.id,
                    cidr_block=plan.private_cidr,
                    availability_zone=plan.zone,
                    tags={
                        "Name": f"{args.cluster}-private-{plan.zone}",
                        INTERNAL_ELB_TAG: "1",
                        **owned,
                    },
                ),
                opts=child,
            )
            routes = aws.ec2.RouteTable(
                f"{name}-private-{plan.zone}",
                aws.ec2.RouteTableArgs(
                    vpc_id=self.vpc.id,
                    routes=[
                        aws.ec2.RouteTableRouteArgs(
                            cidr_block="0.0.0.0/0", nat_gateway_id=nat_gateways[-1].id
                        )
                    ],
                    tags={"Name": f"{args.cluster}-private-{plan.zone}"},
                ),
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{plan.zone}",
                aws.ec2.RouteTableAssociationArgs(subnet_id=private.id, route_table_id=routes.id),
                opts=child,
            )
            self.private_subnets.append(private)
        self.register_outputs(
            {
                "vpc_id": self.vpc.id,
                "private_subnet_ids": [s.id for s in self.private_subnets],
                "public_subnet_ids": [s.id for s in self.public_subnets],
            }
        )
