"""The EC2 instance types AWS sells, so that a type AWS does not sell (`m9.huge`, `m6i.3xlarge`)
is refused by the config check instead of by EC2 at deploy time.

The list is the EC2 API's own: the `InstanceType` enum of the EC2 service model that botocore
ships (botocore/data/ec2/2016-11-15/service-2.json), copied into `ec2_instance_types.txt` with the
botocore version it came from, so that checking a stack neither loads the 5 MB model (about a
second) nor depends on which botocore is installed. A type is `<family>.<size>` ("Amazon EC2
instance type naming conventions"); a family or a size the enum does not list is refused, with
the nearest real type. tests/components/aws/test_aws_instance_types.py checks the copy against
the installed botocore; regenerate it with `python -m mlstack.components.aws.instance_types`.
"""

from __future__ import annotations

import difflib
import functools
import re
import sys
from pathlib import Path

#: A well-formed type: a lower-case family, a dot, a size. Anything else is not a type at all.
WELL_FORMED = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")
DATA = Path(__file__).with_name("ec2_instance_types.txt")


def botocore_types() -> list[str]:
    """The InstanceType enum of the installed botocore's EC2 model (slow: tests, regeneration)."""
    from botocore.loaders import Loader

    model = Loader().load_service_model("ec2", "service-2")
    return sorted(set(model["shapes"]["InstanceType"]["enum"]))


def render(types: list[str], version: str) -> str:
    """The data file for `types`: a header, then one family per line with its sizes."""
    families: dict[str, list[str]] = {}
    for name in types:
        fam, size = name.split(".", 1)
        families.setdefault(fam, []).append(size)
    lines = [
        f"# EC2 instance types: the InstanceType enum of the EC2 API model in botocore {version}",
        "# (botocore/data/ec2/2016-11-15/service-2.json, shape InstanceType). One family per "
        "line, then its sizes.",
        "# Regenerate: .venv/bin/python -m mlstack.components.aws.instance_types > "
        "components/aws/ec2_instance_types.txt",
        *(
            f"{fam} {' '.join(sorted(sizes, key=_order))}"
            for fam, sizes in sorted(families.items())
        ),
    ]
    return "\n".join(lines) + "\n"


@functools.cache
def family_sizes() -> dict[str, tuple[str, ...]]:
    """Family -> the sizes AWS sells of it, from the data file."""
    found = {}
    for line in DATA.read_text().splitlines():
        if line and not line.startswith("#"):
            fam, *sizes = line.split()
            found[fam] = tuple(sizes)
    return found


def instance_types() -> frozenset[str]:
    """Every instance type in the data file."""
    return frozenset(f"{fam}.{size}" for fam, sizes in family_sizes().items() for size in sizes)


_NAMED_SIZES = {"nano": 1 / 32, "micro": 1 / 16, "small": 1 / 8, "medium": 1 / 4, "large": 1 / 2}
_XLARGE = re.compile(r"^([0-9]*)xlarge$")


def _scale(size: str) -> float | None:
    """How big a size is, in xlarges ('large' 0.5, '8xlarge' 8); None for metal."""
    if size in _NAMED_SIZES:
        return _NAMED_SIZES[size]
    match = _XLARGE.match(size)
    return float(match[1] or 1) if match else None


def _order(size: str) -> tuple[bool, float, str]:
    """Smallest first, metal sizes last."""
    scale = _scale(size)
    return (scale is None, scale or 0.0, size)


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
    table = family_sizes()
    sizes = table.get(fam)
    if sizes is None:
        close = difflib.get_close_matches(fam, list(table), n=1, cutoff=0.5)
        if not close:
            return f"no family {fam}", example
        other = table[close[0]]
        return f"no family {fam}", f"{close[0]}.{_nearest_size(other, size)}"
    if size in sizes:
        return None
    return (
        f"{fam} has no size {size}; it comes in {', '.join(sizes)}",
        f"{fam}.{_nearest_size(sizes, size)}",
    )


if __name__ == "__main__":
    import botocore

    sys.stdout.write(render(botocore_types(), botocore.__version__))
