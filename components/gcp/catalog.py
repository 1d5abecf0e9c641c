"""What mlstack knows about GCP regions: their zones and the GPUs each zone offers.

GPUs on GCP are zonal: a region can offer an L4 in two of its zones and an H100 in one. A GPU
pool's nodes go in the cluster's zones that offer its accelerator; a zone named for a pool must
offer it. A region not listed here is accepted as written (zones must then be listed) and
`mlstack plan` says its GPUs were not checked. The table follows Google Cloud's "GPU regions and
zones" page as of 2025-10; a zone Google adds later is added here in a reviewed change.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class Region:
    name: str
    #: zone -> accelerator names (stacks.catalog) offered there.
    zones: MappingProxyType[str, frozenset[str]]

    def offering(self, accelerator: str) -> tuple[str, ...]:
        """Zones of this region that offer `accelerator`, in catalog order."""
        return tuple(z for z, gpus in self.zones.items() if accelerator in gpus)


def _region(name: str, zones: dict[str, str]) -> Region:
    return Region(
        name=name,
        zones=MappingProxyType(
            {f"{name}-{letter}": frozenset(gpus.split()) for letter, gpus in zones.items()}
        ),
    )


REGIONS: MappingProxyType[str, Region] = MappingProxyType(
    {
        r.name: r
        for r in (
            _region(
                "us-central1",
                {
                    "a": "t4 l4 a100-40gb a100-80gb h100-80gb",
                    "b": "t4 l4 a100-40gb h100-80gb h200",
                    "c": "t4 l4 a100-40gb a100-80gb h100-80gb",
                    "f": "t4 a100-40gb",
                },
            ),
            _region(
                "us-east1",
                {"b": "l4 a100-40gb", "c": "t4 l4", "d": "t4 l4 h100-80gb"},
            ),
            _region(
                "us-east4",
                {"a": "t4 l4 h100-80gb", "b": "t4 h100-80gb", "c": "t4 l4 a100-80gb h100-80gb"},
            ),
            _region(
                "us-west1",
                {"a": "t4 l4 h100-80gb", "b": "t4 l4 a100-40gb h100-80gb", "c": "l4"},
            ),
            _region(
                "us-west4",
                {"a": "t4 l4 h100-80gb", "b": "t4 a100-40gb", "c": "l4"},
            ),
            _region(
                "europe-west1",
                {"b": "t4 l4", "c": "t4 l4", "d": "t4"},
            ),
            _region(
                "europe-west4",
                {
                    "a": "l4 a100-40gb a100-80gb h100-80gb",
                    "b": "t4 l4 a100-40gb h100-80gb h200",
                    "c": "t4 l4 h100-80gb",
                },
            ),
            _region(
                "asia-northeast1",
                {"a": "t4 l4 a100-40gb", "b": "h100-80gb", "c": "t4 l4 a100-40gb"},
            ),
            _region(
                "asia-southeast1",
                {"a": "t4 l4", "b": "t4 l4 a100-40gb h100-80gb", "c": "t4 l4 a100-40gb h100-80gb"},
            ),
        )
    }
)

#: Machine series whose machines carry GPUs (a CPU pool must not name one).
GPU_SERIES = frozenset({"a2", "a3", "a4", "g2", "g4"})


def series(machine_type: str) -> str:
    """'a3-highgpu-8g' -> 'a3'."""
    return machine_type.split("-", 1)[0]


def default_zones(region: str, environment: str) -> tuple[str, ...] | None:
    """The first 2 zones in dev, 3 otherwise; None for a region the catalog does not know."""
    known = REGIONS.get(region)
    if known is None:
        return None
    return tuple(known.zones)[: 2 if environment == "dev" else 3]
