"""The table of Compute Engine machine types Google sells, and the custom machine type grammar:
every type mlstack uses or ships is in it, and types Google does not sell are refused with a
real type to use instead."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlstack.components.gcp.catalog import MACHINES
from mlstack.components.gcp.machine_types import MACHINE_TYPES, unsold
from mlstack.stacks.schema import GcpConfig

REPO = Path(__file__).resolve().parents[3]
_TYPE_FIELD = re.compile(r"^\s*(?:instance|machine)_type:\s*(\S+)\s*$", re.MULTILINE)


def _shipped_types() -> set[str]:
    found = set()
    for path in REPO.glob("stacks/Pulumi.gcp-*.yaml"):
        found |= set(_TYPE_FIELD.findall(path.read_text()))
    return found


def test_every_catalog_type_is_sold() -> None:
    assert set(MACHINES) <= MACHINE_TYPES
    for name in MACHINES:
        assert unsold(name, "n2-standard-8") is None, name


def test_the_defaults_and_the_shipped_stacks_types_are_sold() -> None:
    cfg = GcpConfig(project="acme-ml-dev", region="us-central1")
    types = _shipped_types() | {cfg.default_cpu_machine_type, cfg.system_pool.machine_type}
    assert {"e2-standard-8", "n2-standard-16"} <= types
    for name in types:
        assert unsold(name, "n2-standard-8") is None, name


@pytest.mark.parametrize(
    "name",
    [
        "e2-micro",
        "f1-micro",
        "n1-highmem-96",
        "n2d-standard-224",
        "c3-standard-8-lssd",
        "c4-highmem-288-metal",
        "c4a-standard-72",
        "m3-megamem-128",
        "z3-standard-88-lssd",
        "a3-megagpu-8g",
        "g2-standard-96",
        "t2d-standard-60",
        # Custom machine types.
        "n2-custom-4-16384",
        "custom-1-1024",
        "n2d-custom-48-49152",
        "e2-custom-2-4096",
        "n2-custom-4-65536-ext",
    ],
)
def test_real_types_are_sold(name: str) -> None:
    assert unsold(name, "n2-standard-8") is None


@pytest.mark.parametrize(
    ("name", "reason", "instead"),
    [
        ("n9-standard-4", "no series n9", None),
        ("e2-standard-5", "e2-standard has no size 5", "e2-standard-4"),
        ("n2-standard-3", "n2-standard has no size 3", "n2-standard-2"),
        ("n2-standard-256", "n2-standard has no size 256", "n2-standard-128"),
        ("c3-standard-5-lssd", "c3-standard has no size 5-lssd", "c3-standard-4-lssd"),
        ("n2-ultramem-8", "n2 has no ultramem types", None),
        ("e2-highmem-32", "e2-highmem has no size 32", "e2-highmem-16"),
    ],
)
def test_unsold_types_name_what_is_wrong_and_a_real_type(
    name: str, reason: str, instead: str | None
) -> None:
    verdict = unsold(name, "n2-standard-8")
    assert verdict is not None
    assert verdict[0].startswith(reason)
    assert verdict[1] in MACHINE_TYPES
    if instead is not None:
        assert verdict[1] == instead


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("n2-custom-3-16384", "N2 custom types take 2-32 by 2"),
        ("n2-custom-4-1000", "custom memory is a multiple of 256 MiB"),
        ("n2-custom-4-65536", "N2 custom types take 0.5 to 8 GiB per vCPU"),
        ("e2-custom-4-8192-ext", "E2 has no extended memory"),
        ("c2-custom-4-16384", "custom machine types come on"),
        ("n1-custom-4-16384", "custom machine types come on"),
        ("custom-3-3072", "N1 custom types take 1, 2-96 by 2"),
    ],
)
def test_malformed_custom_types_are_refused(name: str, reason: str) -> None:
    verdict = unsold(name, "n2-standard-8")
    assert verdict is not None and verdict[0].startswith(reason), verdict
    assert verdict[1] == "n2-standard-8"
