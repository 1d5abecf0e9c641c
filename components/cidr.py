"""CIDR helpers shared by the cloud backends' checks."""

from __future__ import annotations

import ipaddress


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
