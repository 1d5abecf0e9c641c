"""CIDR helpers shared by the cloud backends' checks."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence

from mlstack.stacks.errors import Problem, format_path

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


def parsed_cidrs(
    section: str, field: str, cidrs: Sequence[str], example: str, problems: list[Problem]
) -> Iterator[tuple[int, str, str, ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    """(index, path, CIDR, network) for each entry of `platform.<section>.<field>` that parses;
    one that does not is added to `problems` when it is reached, so problems keep list order."""
    for i, cidr in enumerate(cidrs):
        path = format_path((section, field, i))
        try:
            net = ipaddress.ip_network(cidr)
        except ValueError as exc:
            problems.append(Problem(path, f"invalid CIDR: {exc}", cidr_fix(cidr, example), cidr))
            continue
        yield i, path, cidr, net
