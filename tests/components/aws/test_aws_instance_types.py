"""The table of EC2 instance types AWS sells: every type mlstack uses or ships is in it, and
types AWS does not sell are refused with a real type to use instead."""

from __future__ import annotations

import re
from pathlib import Path

import botocore
import pytest

from mlstack.components.aws.catalog import MACHINES
from mlstack.components.aws.instance_types import (
    DATA,
    botocore_types,
    instance_types,
    render,
    unsold,
)
from mlstack.stacks.schema import AwsConfig

REPO = Path(__file__).resolve().parents[3]
_TYPE_FIELD = re.compile(r"^\s*instance_type:\s*(\S+)\s*$", re.MULTILINE)


def _shipped_types() -> set[str]:
    found = set()
    for path in REPO.glob("stacks/Pulumi.aws-*.yaml"):
        found |= set(_TYPE_FIELD.findall(path.read_text()))
    return found


def test_the_table_is_the_ec2_apis_own_list() -> None:
    """Every type in the data file is in the InstanceType enum of the installed botocore's EC2
    model (nothing invented), and with the botocore it was copied from, the file is that enum."""
    real = botocore_types()
    assert instance_types() <= set(real)
    header = DATA.read_text().splitlines()[0]
    if header.endswith(f"botocore {botocore.__version__}"):
        assert DATA.read_text() == render(real, botocore.__version__)


def test_every_catalog_type_is_sold() -> None:
    assert set(MACHINES) <= instance_types()
    for name in MACHINES:
        assert unsold(name, "m6i.2xlarge") is None, name


def test_the_defaults_and_the_shipped_stacks_types_are_sold() -> None:
    cfg = AwsConfig(region="us-east-1")
    types = _shipped_types() | {cfg.default_cpu_instance_type, cfg.system_pool.instance_type}
    assert "m6i.4xlarge" in types
    for name in types:
        assert unsold(name, "m6i.2xlarge") is None, name


@pytest.mark.parametrize(
    "name",
    [
        "t3.micro",
        "m7i-flex.large",
        "c7i.metal-24xl",
        "r7iz.metal-16xl",
        "u-6tb1.112xlarge",
        "m8g.48xlarge",
        "i4i.32xlarge",
        "p5.4xlarge",
        "p6-b200.48xlarge",
        "hpc7g.16xlarge",
        "m8azn.large",
        "g7e.2xlarge",
        "m9g.large",
    ],
)
def test_real_types_are_sold(name: str) -> None:
    assert unsold(name, "m6i.2xlarge") is None


@pytest.mark.parametrize(
    ("name", "reason", "instead"),
    [
        ("m9.huge", "no family m9", None),
        ("m6i.3xlarge", "m6i has no size 3xlarge", "m6i.2xlarge"),
        ("m7i.32xlarge", "m7i has no size 32xlarge", "m7i.24xlarge"),
        ("c6i.nano", "c6i has no size nano", "c6i.large"),
        ("t3.metal", "t3 has no size metal", None),
        ("m6ig.xlarge", "no family m6ig", None),
    ],
)
def test_unsold_types_name_what_is_wrong_and_a_real_type(
    name: str, reason: str, instead: str | None
) -> None:
    verdict = unsold(name, "m6i.2xlarge")
    assert verdict is not None
    assert verdict[0].startswith(reason)
    assert verdict[1] in instance_types()
    if instead is not None:
        assert verdict[1] == instead


@pytest.mark.parametrize("name", ["large", "M6i.large", "m6i", "m6i_large"])
def test_values_not_shaped_like_a_type_get_the_example(name: str) -> None:
    assert unsold(name, "m6i.2xlarge") == ("", "m6i.2xlarge")
