"""What mlstack knows about AWS regions: their zones and the GPU instance families they offer.

A region listed here is checked: its zones must be ones it has, and a GPU pool's instance family
must be offered there. A region not listed is accepted as written (AWS adds regions and
families faster than any table); `mlstack plan` says so. The table follows the EC2 instance
type pages as of 2025-10; a family AWS launches in a listed region later is added here in a
reviewed change.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class Region:
    name: str
    zones: tuple[str, ...]
    gpu_families: frozenset[str]


def _region(name: str, zone_letters: str, families: str) -> Region:
    return Region(
        name=name,
        zones=tuple(f"{name}{letter}" for letter in zone_letters),
        gpu_families=frozenset(families.split()),
    )


REGIONS: MappingProxyType[str, Region] = MappingProxyType(
    {
        r.name: r
        for r in (
            _region("us-east-1", "abcdf", "g4dn g5 g6 g6e p4d p4de p5 p5e p5en"),
            _region("us-east-2", "abc", "g4dn g5 g6 g6e p4d p5 p5en"),
            _region("us-west-2", "abcd", "g4dn g5 g6 g6e p4d p4de p5 p5e p5en"),
            _region("ca-central-1", "abd", "g4dn g5 g6"),
            _region("eu-central-1", "abc", "g4dn g5 g6 g6e p4d p5"),
            _region("eu-west-1", "abc", "g4dn g5 g6 p4d"),
            _region("eu-north-1", "abc", "g4dn g5 g6 g6e p5 p5en"),
            _region("ap-northeast-1", "acd", "g4dn g5 g6 g6e p4d p5"),
            _region("ap-south-1", "abc", "g4dn g5 g6"),
            _region("sa-east-1", "abc", "g4dn g5"),
        )
    }
)

#: Instance families that carry GPUs (P and G families: p3, p5en, p6-b200, g4ad, g5g, gr6, ...):
#: a CPU pool must not name one.
_GPU_FAMILY = re.compile(r"^(p|g|gr)[0-9]")


def is_gpu_family(instance_family: str) -> bool:
    return bool(_GPU_FAMILY.match(instance_family))


#: The cluster autoscaler release per Kubernetes minor version (it must match the control plane).
CLUSTER_AUTOSCALER_IMAGES: MappingProxyType[str, str] = MappingProxyType(
    {
        "1.29": "v1.29.5",
        "1.30": "v1.30.6",
        "1.31": "v1.31.4",
        "1.32": "v1.32.3",
        "1.33": "v1.33.1",
        "1.34": "v1.34.0",
        "1.35": "v1.35.0",
    }
)


def family(instance_type: str) -> str:
    """'p5.48xlarge' -> 'p5'."""
    return instance_type.split(".", 1)[0]


def default_zones(region: str, environment: str) -> tuple[str, ...] | None:
    """The first 2 zones in dev, 3 otherwise; None for a region the catalog does not know."""
    known = REGIONS.get(region)
    if known is None:
        return None
    return known.zones[: 2 if environment == "dev" else 3]


def region_machine(region: Region, machines: Mapping[str, int], gpus: int) -> str | None:
    """The first of `machines` (type -> GPUs) with `gpus` GPUs whose family `region` offers."""
    return next(
        (t for t, n in machines.items() if n == gpus and family(t) in region.gpu_families), None
    )
