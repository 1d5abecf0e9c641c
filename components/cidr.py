"""CIDR helpers shared by the cloud backends' checks."""

from __future__ import annotations

import ipaddress

#: Ranges a VPC's own addresses may come from: RFC 1918 and the shared address space (RFC 6598)
#: that both clouds accept. `ipaddress`'s is_private is wider (loopback, link-local, 0.0.0.0/8),
#: which neither cloud takes.
VPC_RANGES = tuple(
    ipaddress.IPv4Network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
)
#: RFC 1918 only: ranges never reachable from the internet.
PRIVATE_RANGES = VPC_RANGES[:3]


def within(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network,
    ranges: tuple[ipaddress.IPv4Network, ...] = VPC_RANGES,
) -> bool:
    """Whether `network` is an IPv4 range inside one of `ranges`."""
    return isinstance(network, ipaddress.IPv4Network) and any(network.subnet_of(r) for r in ranges)


def cidr_fix(cidr: str, example: str) -> str:
    """The fix for a CIDR that did not parse: its network address when only host bits are set
    (10.0.0.1/16 -> 10.0.0.0/16), else an example."""
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return f"use a CIDR such as {example}"
    if isinstance(network, ipaddress.IPv4Network):
        return f"use the network address: {network}"
    return f"use an IPv4 CIDR such as {example}"
