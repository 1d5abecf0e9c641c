"""The Compute Engine machine types Google sells: every series with its types, and the custom
machine type grammar, so that a type Compute Engine does not sell (`n9-standard-4`,
`e2-standard-5`) is refused by the config check instead of by GKE at deploy time.

A predefined type is `<series>-<type>-<vCPUs>` (`n2-standard-8`), with `-lssd` for the shapes that
come with Local SSD and `-metal` for bare metal; accelerator-optimized ones end in the GPU count
(`a3-highgpu-8g`); E2 and N1 have shared-core types (`e2-micro`, `f1-micro`). The tables follow
"Machine families resource and comparison guide"
(https://cloud.google.com/compute/docs/machine-resource) and its per-family pages:
general purpose https://cloud.google.com/compute/docs/general-purpose-machines (C4, C4A, C4D,
C3, C3D, E2, N4, N4D, N2, N2D, N1, T2D, T2A), compute optimized
https://cloud.google.com/compute/docs/compute-optimized-machines (H3, H4D, C2, C2D), memory
optimized https://cloud.google.com/compute/docs/memory-optimized-machines (M1 to M4), storage
optimized https://cloud.google.com/compute/docs/storage-optimized-machines (Z3), accelerator
optimized https://cloud.google.com/compute/docs/accelerator-optimized-machines (A2, A3, A4, A4X,
G2, G4), as of 2025-10. A series Google launches later is added here in a reviewed change.

Custom machine types (https://cloud.google.com/compute/docs/instances/creating-instance-with-
custom-machine-type): `<series>-custom-<vCPUs>-<MiB>` on E2, N1 (written `custom-<vCPUs>-<MiB>`),
N2, N2D and N4, with `-ext` for extended memory (not on E2). GKE node pools take them, so they
are accepted when the vCPU count is one the series allows, the memory is a multiple of 256 MiB
and, without `-ext`, within the series' memory per vCPU.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from types import MappingProxyType

#: A well-formed type: lower-case words joined by single hyphens. Anything else is not a type.
WELL_FORMED = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)+$")


def _n(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_N2 = _n("2 4 8 16 32 48 64 80 96 128")
_N2D = _n("2 4 8 16 32 48 64 80 96 128 224")
_N4 = _n("2 4 8 16 32 48 64 80")
_C3 = _n("4 8 22 44 88 176 192-metal")
_C3_LSSD = _n("4-lssd 8-lssd 22-lssd 44-lssd 88-lssd 176-lssd")
_C3D = _n("4 8 16 30 60 90 180 360")
_C3D_LSSD = _n("8-lssd 16-lssd 30-lssd 60-lssd 90-lssd 180-lssd 360-lssd")
_C4 = _n("2 4 8 16 24 32 48 96 144 192 288")
_C4_LSSD = _n("4-lssd 8-lssd 16-lssd 24-lssd 32-lssd 48-lssd 96-lssd 144-lssd 192-lssd 288-lssd")
_C4A = _n("1 2 4 8 16 32 48 64 72")
_C4A_LSSD = _n("4-lssd 8-lssd 16-lssd 32-lssd 48-lssd 64-lssd 72-lssd")
_C4D = _n("2 4 8 16 32 48 64 96 192 384")
_C4D_LSSD = _n("8-lssd 16-lssd 32-lssd 48-lssd 64-lssd 96-lssd 192-lssd 384-lssd")
_C2D = _n("2 4 8 16 32 56 112")
_N1 = _n("1 2 4 8 16 32 64 96")
_N1_HIGH = _n("2 4 8 16 32 64 96")
_E2 = _n("2 4 8 16 32")
_E2_HIGHMEM = _n("2 4 8 16")

#: Series -> type -> the sizes (vCPUs or GPUs, with any suffix) Google sells.
SERIES_TYPES: MappingProxyType[str, MappingProxyType[str, tuple[str, ...]]] = MappingProxyType(
    {
        series: MappingProxyType(types)
        for series, types in {
            "e2": {"standard": _E2, "highmem": _E2_HIGHMEM, "highcpu": _E2},
            "n1": {"standard": _N1, "highmem": _N1_HIGH, "highcpu": _N1_HIGH},
            "n2": {"standard": _N2, "highmem": _N2, "highcpu": _N2[:-1]},
            "n2d": {"standard": _N2D, "highmem": _N2D[:-2], "highcpu": _N2D},
            "n4": {"standard": _N4, "highmem": _N4, "highcpu": _N4},
            "n4d": {
                "standard": _n("2 4 8 16 32 48 64 80 96"),
                "highmem": _n("2 4 8 16 32 48 64 80 96"),
                "highcpu": _n("2 4 8 16 32 48 64 80 96"),
            },
            "t2d": {"standard": _n("1 2 4 8 16 32 48 60")},
            "t2a": {"standard": _n("1 2 4 8 16 32 48")},
            "c2": {"standard": _n("4 8 16 30 60")},
            "c2d": {"standard": _C2D, "highmem": _C2D, "highcpu": _C2D},
            "c3": {
                "standard": _C3 + _C3_LSSD,
                "highmem": _C3 + _C3_LSSD,
                "highcpu": _C3,
            },
            "c3d": {
                "standard": _C3D + _C3D_LSSD,
                "highmem": _C3D + _C3D_LSSD,
                "highcpu": _C3D,
            },
            "c4": {
                "standard": (*_C4, *_C4_LSSD, "288-metal"),
                "highmem": (*_C4, *_C4_LSSD, "288-metal"),
                "highcpu": (*_C4, "288-metal"),
            },
            "c4a": {"standard": _C4A + _C4A_LSSD, "highmem": _C4A + _C4A_LSSD, "highcpu": _C4A},
            "c4d": {
                "standard": (*_C4D, *_C4D_LSSD, "384-metal"),
                "highmem": (*_C4D, *_C4D_LSSD, "384-metal"),
                "highcpu": (*_C4D, "384-metal"),
            },
            "h3": {"standard": _n("88")},
            "h4d": {"standard": _n("192"), "highmem": _n("192 192-lssd")},
            "m1": {"ultramem": _n("40 80 160"), "megamem": _n("96")},
            "m2": {"ultramem": _n("208 416"), "megamem": _n("416"), "hypermem": _n("416")},
            "m3": {"ultramem": _n("32 64 128"), "megamem": _n("64 128")},
            "m4": {"megamem": _n("28 56 112 224"), "ultramem": _n("56 112 224")},
            "z3": {
                "standard": _n("88-lssd 176-lssd"),
                "highmem": _n(
                    "88 176 8-highlssd 16-highlssd 22-highlssd 32-highlssd 44-highlssd "
                    "88-highlssd 14-standardlssd 22-standardlssd 44-standardlssd "
                    "88-standardlssd 176-standardlssd"
                ),
            },
            "a2": {
                "highgpu": _n("1g 2g 4g 8g"),
                "megagpu": _n("16g"),
                "ultragpu": _n("1g 2g 4g 8g"),
            },
            "a3": {
                "highgpu": _n("1g 2g 4g 8g"),
                "megagpu": _n("8g"),
                "edgegpu": _n("8g"),
                "ultragpu": _n("8g"),
            },
            "a4": {"highgpu": _n("8g")},
            "a4x": {"highgpu": _n("4g")},
            "g2": {"standard": _n("4 8 12 16 24 32 48 96")},
            "g4": {"standard": _n("48 96 192 384")},
        }.items()
    }
)
#: Shared-core types, which have no vCPU count in their name.
SHARED_CORE = frozenset({"e2-micro", "e2-small", "e2-medium", "f1-micro", "g1-small"})
#: Every predefined machine type in the tables.
MACHINE_TYPES: frozenset[str] = SHARED_CORE | frozenset(
    f"{series}-{mtype}-{size}"
    for series, types in SERIES_TYPES.items()
    for mtype, sizes in types.items()
    for size in sizes
)


@dataclass(frozen=True)
class CustomRule:
    """What one series allows of a custom machine type."""

    #: vCPU counts as (first, last, step) ranges.
    vcpu_steps: tuple[tuple[int, int, int], ...]
    #: Memory per vCPU without extended memory, in GiB: (least, most).
    memory_per_vcpu: tuple[float, float]
    extended: bool

    def takes(self, vcpus: int) -> bool:
        return any(
            start <= vcpus <= stop and (vcpus - start) % step == 0
            for start, stop, step in self.vcpu_steps
        )

    def vcpu_text(self) -> str:
        """'2-32 by 2, 36-80 by 4'."""
        return ", ".join(
            str(start) if start == stop else f"{start}-{stop} by {step}"
            for start, stop, step in self.vcpu_steps
        )


#: The custom machine type page's vCPU counts and memory per vCPU, per series ('' is N1, whose
#: custom types carry no series prefix).
CUSTOM: MappingProxyType[str, CustomRule] = MappingProxyType(
    {
        "": CustomRule(((1, 1, 1), (2, 96, 2)), (0.9, 6.5), extended=True),
        "n2": CustomRule(((2, 32, 2), (36, 80, 4), (88, 128, 8)), (0.5, 8), extended=True),
        "n2d": CustomRule(((2, 16, 2), (32, 96, 16)), (0.5, 8), extended=True),
        "n4": CustomRule(((2, 16, 2), (20, 80, 4)), (2, 8), extended=True),
        "e2": CustomRule(((2, 32, 2),), (0.5, 8), extended=False),
    }
)
_CUSTOM = re.compile(
    r"^(?:(?P<series>[a-z0-9]+)-)?custom-(?P<cpus>\d+)-(?P<mib>\d+)(?P<ext>-ext)?$"
)


def _custom_problem(match: re.Match[str]) -> str | None:
    """None for a custom machine type the series allows; else what is wrong with it."""
    series = match["series"] or ""
    name = series.upper() or "N1"
    rule = CUSTOM.get(series)
    if rule is None or series == "n1":
        return f"custom machine types come on {', '.join(s or 'N1' for s in CUSTOM).upper()}"
    cpus, mib = int(match["cpus"]), int(match["mib"])
    if not rule.takes(cpus):
        return f"{name} custom types take {rule.vcpu_text()} vCPUs"
    if mib % 256:
        return "custom memory is a multiple of 256 MiB"
    if match["ext"] and not rule.extended:
        return f"{name} has no extended memory"
    low, high = rule.memory_per_vcpu
    if not match["ext"] and not low * 1024 * cpus <= mib <= high * 1024 * cpus:
        return f"{name} custom types take {low} to {high} GiB per vCPU (more with -ext)"
    return None


def _nearest(sizes: tuple[str, ...], size: str) -> str:
    """The size of `sizes` with the suffix of `size` and the nearest count (the smaller on a
    tie), else the closest spelling."""
    count, _, suffix = size.partition("-")
    same = [s for s in sizes if s.partition("-")[2] == suffix and s.partition("-")[0].isdigit()]
    if count.isdigit() and same:
        return min(same, key=lambda s: (abs(int(s.partition("-")[0]) - int(count)), len(s), s))
    return (difflib.get_close_matches(size, sizes, n=1, cutoff=0) or [sizes[0]])[0]


def unsold(machine_type: str, example: str) -> tuple[str, str] | None:
    """None for a type Compute Engine sells; else (what is wrong, a real type to use instead).
    `example` is the suggestion for a value that is not even shaped like a type."""
    if machine_type in MACHINE_TYPES:
        return None
    if not WELL_FORMED.match(machine_type):
        return "", example
    custom = _CUSTOM.match(machine_type)
    if custom:
        problem = _custom_problem(custom)
        return None if problem is None else (problem, example)
    series, _, rest = machine_type.partition("-")
    types = SERIES_TYPES.get(series)
    if types is None:
        close = difflib.get_close_matches(series, list(SERIES_TYPES), n=1, cutoff=0.5)
        other = SERIES_TYPES[close[0]] if close else None
        mtype, _, size = rest.partition("-")
        if close and other is not None and mtype in other:
            return f"no series {series}", f"{close[0]}-{mtype}-{_nearest(other[mtype], size)}"
        return f"no series {series}", example
    mtype, _, size = rest.partition("-")
    sizes = types.get(mtype)
    if sizes is None:
        first = next(iter(types))
        return (
            f"{series} has no {mtype} types; it has {', '.join(types)}",
            f"{series}-{first}-{types[first][0]}",
        )
    return (
        f"{series}-{mtype} has no size {size}; it comes in {', '.join(sizes)}",
        f"{series}-{mtype}-{_nearest(sizes, size)}",
    )
