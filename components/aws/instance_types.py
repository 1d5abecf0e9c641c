"""The EC2 instance types AWS sells: every family with its sizes, so that a type AWS does not sell
(`m9.huge`, `m6i.3xlarge`) is refused by the config check instead of by EC2 at deploy time.

A type is `<family>.<size>` ("Amazon EC2 instance type naming conventions",
https://docs.aws.amazon.com/ec2/latest/instancetypes/instance-type-names.html): the family is the
series letter(s), the generation and the attribute letters (`a` AMD, `g` Graviton, `i` Intel,
`d` local NVMe, `n` network, `e` extra storage or memory, `z` high frequency, `b` EBS, `-flex`),
and the size is nano..large, xlarge, `<N>xlarge`, `metal` or `metal-<N>xl`. The attribute letters
are not a free grammar: AWS sells only some combinations, so the table lists the families
themselves, each with the sizes its page lists, from the current-generation pages of "Amazon EC2
instance types" (https://docs.aws.amazon.com/ec2/latest/instancetypes/instance-types.html):
general purpose gp.html, compute optimized co.html, memory optimized mo.html, storage optimized
so.html, accelerated computing ac.html, high-performance computing hpc.html (each under
https://docs.aws.amazon.com/ec2/latest/instancetypes/), as of 2025-10. Previous-generation
families still sold (pg.html) are listed from m4/c4/r4 on. A family AWS launches later is added
here in a reviewed change.
"""

from __future__ import annotations

import difflib
import re
from types import MappingProxyType

#: A well-formed type: a lower-case family, a dot, a size. Anything else is not a type at all.
WELL_FORMED = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")

# Size ladders; a bare number N in a ladder is `<N>xlarge`.
_T = "nano micro small medium large xlarge 2"
_M6I = "large xlarge 2 4 8 12 16 24 32 metal"
_M6A = "large xlarge 2 4 8 12 16 24 32 48 metal"
_G6 = "medium large xlarge 2 4 8 12 16 metal"  # Graviton2 / Graviton3
_G6_NOMETAL = "medium large xlarge 2 4 8 12 16"
_I7 = "large xlarge 2 4 8 12 16 24 48 metal-24xl metal-48xl"
_A7 = "medium large xlarge 2 4 8 12 16 24 32 48 metal-48xl"
_G8 = "medium large xlarge 2 4 8 12 16 24 48 metal-24xl metal-48xl"  # Graviton4
_I8 = "large xlarge 2 4 8 12 16 24 32 48 96 metal-48xl metal-96xl"
_FLEX = "large xlarge 2 4 8 12 16"
_M5 = "large xlarge 2 4 8 12 16 24 metal"
_M5A = "large xlarge 2 4 8 12 16 24"
_C5 = "large xlarge 2 4 9 12 18 24 metal"
_C5A = "large xlarge 2 4 8 12 16 24"
_Z = "large xlarge 2 3 6 12 metal"
_G5 = "xlarge 2 4 8 12 16 24 48"

_FAMILIES: dict[str, str] = {
    # General purpose (gp.html; m4 and t2 from pg.html).
    "m4": "large xlarge 2 4 10 16",
    "m5": _M5,
    "m5d": _M5,
    "m5n": _M5,
    "m5dn": _M5,
    "m5a": _M5A,
    "m5ad": _M5A,
    "m5zn": _Z,
    "m6i": _M6I,
    "m6id": _M6I,
    "m6in": _M6I,
    "m6idn": _M6I,
    "m6a": _M6A,
    "m6g": _G6,
    "m6gd": _G6,
    "m7i": _I7,
    "m7i-flex": _FLEX,
    "m7a": _A7,
    "m7g": _G6,
    "m7gd": _G6,
    "m8g": _G8,
    "m8gd": _G8,
    "m8i": _I8,
    "m8i-flex": _FLEX,
    "m8a": _G8,
    "t2": _T,
    "t3": _T,
    "t3a": _T,
    "t4g": _T,
    "a1": "medium large xlarge 2 4 metal",
    "mac1": "metal",
    "mac2": "metal",
    "mac2-m2": "metal",
    "mac2-m2pro": "metal",
    "mac2-m1ultra": "metal",
    # Compute optimized (co.html; c4 from pg.html).
    "c4": "large xlarge 2 4 8",
    "c5": _C5,
    "c5d": _C5,
    "c5a": _C5A,
    "c5ad": _C5A,
    "c5n": "large xlarge 2 4 9 18 metal",
    "c6i": _M6I,
    "c6id": _M6I,
    "c6in": _M6I,
    "c6a": _M6A,
    "c6g": _G6,
    "c6gd": _G6,
    "c6gn": _G6_NOMETAL,
    "c7i": _I7,
    "c7i-flex": _FLEX,
    "c7a": _A7,
    "c7g": _G6,
    "c7gd": _G6,
    "c7gn": _G6,
    "c8g": _G8,
    "c8gd": _G8,
    "c8gn": _G8,
    "c8i": _I8,
    "c8i-flex": _FLEX,
    "c8a": _G8,
    # Memory optimized (mo.html; r4 and x1 from pg.html).
    "r4": "large xlarge 2 4 8 16",
    "r5": _M5,
    "r5d": _M5,
    "r5n": _M5,
    "r5dn": _M5,
    "r5b": _M5,
    "r5a": _M5A,
    "r5ad": _M5A,
    "r6i": _M6I,
    "r6id": _M6I,
    "r6in": _M6I,
    "r6idn": _M6I,
    "r6a": _M6A,
    "r6g": _G6,
    "r6gd": _G6,
    "r7i": _I7,
    "r7iz": "large xlarge 2 4 8 12 16 32 metal-16xl metal-32xl",
    "r7a": _A7,
    "r7g": _G6,
    "r7gd": _G6,
    "r8g": _G8,
    "r8gd": _G8,
    "r8i": _I8,
    "r8i-flex": _FLEX,
    "x1": "16 32",
    "x1e": "xlarge 2 4 8 16 32",
    "x2gd": _G6,
    "x2idn": "16 24 32 metal",
    "x2iedn": "xlarge 2 4 8 16 24 32 metal",
    "x2iezn": "2 4 6 8 12 metal",
    "x8g": _G8,
    "z1d": _Z,
    "u-3tb1": "56",
    "u-6tb1": "56 112 metal",
    "u-9tb1": "112 metal",
    "u-12tb1": "112 metal",
    "u-18tb1": "112 metal",
    "u-24tb1": "112 metal",
    "u7i-6tb": "112",
    "u7i-8tb": "112",
    "u7i-12tb": "224",
    "u7in-16tb": "224",
    "u7in-24tb": "224",
    "u7in-32tb": "224",
    # Storage optimized (so.html).
    "d2": "xlarge 2 4 8",
    "d3": "xlarge 2 4 8",
    "d3en": "xlarge 2 4 6 8 12",
    "h1": "2 4 8 16",
    "i3": "large xlarge 2 4 8 16 metal",
    "i3en": "large xlarge 2 3 6 12 24 metal",
    "i4i": "large xlarge 2 4 8 12 16 24 32 metal",
    "i4g": "large xlarge 2 4 8 16",
    "im4gn": "large xlarge 2 4 8 16",
    "is4gen": "medium large xlarge 2 4 8",
    "i7i": _I7,
    "i7ie": "large xlarge 2 3 6 12 18 24 48 metal-24xl metal-48xl",
    "i8g": "large xlarge 2 4 8 12 16 24 48 metal-24xl",
    # Accelerated computing (ac.html).
    "p3": "2 8 16",
    "p3dn": "24",
    "p4d": "24",
    "p4de": "24",
    "p5": "4 48",
    "p5e": "48",
    "p5en": "48",
    "p6-b200": "48",
    "p6-b300": "48",
    "p6e-gb200": "36",
    "g3": "4 8 16",
    "g3s": "xlarge",
    "g4dn": "xlarge 2 4 8 12 16 metal",
    "g4ad": "xlarge 2 4 8 16",
    "g5": _G5,
    "g5g": "xlarge 2 4 8 16 metal",
    "g6": _G5,
    "g6e": _G5,
    "g6f": "large xlarge 2 4",
    "gr6": "4 8",
    "gr6f": "4",
    "inf1": "xlarge 2 6 24",
    "inf2": "xlarge 8 24 48",
    "trn1": "2 32",
    "trn1n": "32",
    "trn2": "48",
    "dl1": "24",
    "dl2q": "24",
    "f1": "2 4 16",
    "f2": "6 12 48",
    "vt1": "3 6 24",
    # High-performance computing (hpc.html).
    "hpc6a": "48",
    "hpc6id": "32",
    "hpc7a": "12 24 48 96",
    "hpc7g": "4 8 16",
}


def _sizes(ladder: str) -> tuple[str, ...]:
    return tuple(f"{s}xlarge" if s.isdigit() else s for s in ladder.split())


#: Family -> the sizes AWS sells of it.
FAMILY_SIZES: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {fam: _sizes(ladder) for fam, ladder in _FAMILIES.items()}
)
#: Every instance type in the table.
INSTANCE_TYPES: frozenset[str] = frozenset(
    f"{fam}.{size}" for fam, sizes in FAMILY_SIZES.items() for size in sizes
)

_NAMED_SIZES = {"nano": 1 / 32, "micro": 1 / 16, "small": 1 / 8, "medium": 1 / 4, "large": 1 / 2}
_XLARGE = re.compile(r"^([0-9]*)xlarge$")


def _scale(size: str) -> float | None:
    """How big a size is, in xlarges ('large' 0.5, '8xlarge' 8); None for metal."""
    if size in _NAMED_SIZES:
        return _NAMED_SIZES[size]
    match = _XLARGE.match(size)
    return float(match[1] or 1) if match else None


def _nearest_size(sizes: tuple[str, ...], size: str) -> str:
    """The size of `sizes` closest in scale to `size` (the smaller on a tie), else by spelling."""
    want = _scale(size)
    scaled = [(s, v) for s in sizes if (v := _scale(s)) is not None]
    if want is not None and scaled:
        return min(scaled, key=lambda sv: (abs(sv[1] - want), sv[1]))[0]
    if not size.startswith("metal") and "xlarge" in sizes:
        return "xlarge"
    return (difflib.get_close_matches(size, sizes, n=1, cutoff=0) or [sizes[0]])[0]


def unsold(instance_type: str, example: str) -> tuple[str, str] | None:
    """None for a type AWS sells; else (what is wrong, a real type to use instead). `example` is
    the suggestion for a value that is not even shaped like a type."""
    if not WELL_FORMED.match(instance_type):
        return "", example
    fam, size = instance_type.split(".", 1)
    sizes = FAMILY_SIZES.get(fam)
    if sizes is None:
        close = difflib.get_close_matches(fam, list(FAMILY_SIZES), n=1, cutoff=0.5)
        if not close:
            return f"no family {fam}", example
        other = FAMILY_SIZES[close[0]]
        return f"no family {fam}", f"{close[0]}.{_nearest_size(other, size)}"
    if size in sizes:
        return None
    return (
        f"{fam} has no size {size}; it comes in {', '.join(sizes)}",
        f"{fam}.{_nearest_size(sizes, size)}",
    )
