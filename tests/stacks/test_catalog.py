"""The accelerator catalog: which machine a GPU pool lands on, and why a pool does not fit."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from mlstack.components.backend import get_backend
from mlstack.components.gcp.catalog import ACCELERATOR_TYPES
from mlstack.components.onprem.catalog import MAX_GPUS_PER_NODE as MAX_ONPREM_GPUS_PER_NODE
from mlstack.stacks.catalog import ACCELERATORS, CatalogError, Cloud, Machine


def resolve_gpu_machine(
    cloud: Cloud, accelerator: str, instance_type: str | None, gpus_per_node: int | None
) -> Machine:
    """The machine a GPU pool resolves to, asked of the cloud's backend as validation does."""
    return get_backend(cloud).resolve_gpu_machine(accelerator, instance_type, gpus_per_node)


def _machines(cloud: Cloud, accelerator: str) -> Mapping[str, int]:
    return get_backend(cloud).gpu_machines(accelerator)


def _offered_on(cloud: Cloud, accelerator: str) -> bool:
    """Whether a pool of the accelerator resolves on `cloud` (on-prem: any count it accepts)."""
    try:
        resolve_gpu_machine(cloud, accelerator, None, 1 if cloud == "onprem" else None)
    except CatalogError:
        return False
    return True


CLOUD_OFFERS: list[tuple[Cloud, str]] = [
    (cloud, name) for name in ACCELERATORS for cloud in ("aws", "gcp") if _machines(cloud, name)
]


def _listed(fix: str) -> list[str]:
    """The items of a 'use one of: a, b, c' fix."""
    assert "use one of: " in fix, fix
    return fix.split("use one of: ", 1)[1].split(", ")


@pytest.mark.parametrize(
    ("cloud", "accelerator", "expected"),
    [
        ("aws", "h100-80gb", Machine("p5.48xlarge", 8)),
        ("aws", "t4", Machine("g4dn.metal", 8)),
        ("gcp", "t4", Machine("n1-standard-32", 4)),
        ("gcp", "a100-40gb", Machine("a2-megagpu-16g", 16)),
        ("gcp", "l4", Machine("g2-standard-96", 8)),
    ],
)
def test_without_type_or_count_a_pool_gets_the_fullest_board(
    cloud: Cloud, accelerator: str, expected: Machine
) -> None:
    assert resolve_gpu_machine(cloud, accelerator, None, None) == expected


@pytest.mark.parametrize(("cloud", "accelerator"), CLOUD_OFFERS)
def test_every_default_machine_carries_the_accelerator_and_the_most_gpus(
    cloud: Cloud, accelerator: str
) -> None:
    machines = _machines(cloud, accelerator)
    machine = resolve_gpu_machine(cloud, accelerator, None, None)
    assert machine.instance_type is not None
    assert machine.instance_type in machines
    assert machine.gpus_per_node == machines[machine.instance_type] == max(machines.values())


@pytest.mark.parametrize(
    ("cloud", "accelerator", "gpus", "expected"),
    [
        ("aws", "l4", 1, Machine("g6.xlarge", 1)),
        ("aws", "l4", 4, Machine("g6.12xlarge", 4)),
        ("gcp", "l4", 2, Machine("g2-standard-24", 2)),
        ("gcp", "h100-80gb", 2, Machine("a3-highgpu-2g", 2)),
    ],
)
def test_a_gpu_count_picks_the_smallest_machine_with_that_count(
    cloud: Cloud, accelerator: str, gpus: int, expected: Machine
) -> None:
    assert resolve_gpu_machine(cloud, accelerator, None, gpus) == expected


def test_an_instance_type_brings_its_own_gpu_count() -> None:
    assert resolve_gpu_machine("aws", "a10g", "g5.12xlarge", None) == Machine("g5.12xlarge", 4)
    assert resolve_gpu_machine("aws", "a10g", "g5.12xlarge", 4) == Machine("g5.12xlarge", 4)


def test_an_instance_type_without_the_accelerator_lists_the_ones_with_it() -> None:
    with pytest.raises(CatalogError) as exc:
        resolve_gpu_machine("aws", "h100-80gb", "p4d.24xlarge", None)
    assert exc.value.field == "instance_type"
    assert "p4d.24xlarge" in exc.value.message
    assert _listed(exc.value.fix) == ["p5.48xlarge"]


def test_a_gpu_count_the_instance_type_does_not_carry_names_the_right_count() -> None:
    with pytest.raises(CatalogError) as exc:
        resolve_gpu_machine("aws", "a10g", "g5.12xlarge", 8)
    assert exc.value.field == "gpus_per_node"
    assert "g5.12xlarge" in exc.value.message and "4" in exc.value.message
    assert "4" in exc.value.fix


def test_a_gpu_count_no_machine_carries_lists_the_counts_that_exist() -> None:
    with pytest.raises(CatalogError) as exc:
        resolve_gpu_machine("gcp", "l4", None, 3)
    assert exc.value.field == "gpus_per_node"
    assert "3" in exc.value.message
    assert _listed(exc.value.fix) == ["1", "2", "4", "8"]


def test_onprem_takes_any_count_up_to_the_largest_board() -> None:
    assert resolve_gpu_machine("onprem", "l40s", None, 4) == Machine(None, 4)
    assert resolve_gpu_machine("onprem", "h100-80gb", None, MAX_ONPREM_GPUS_PER_NODE) == Machine(
        None, MAX_ONPREM_GPUS_PER_NODE
    )


def test_onprem_requires_gpus_per_node() -> None:
    with pytest.raises(CatalogError) as exc:
        resolve_gpu_machine("onprem", "a100-80gb", None, None)
    assert exc.value.field == "gpus_per_node"
    assert "gpus_per_node" in exc.value.fix


@pytest.mark.parametrize("gpus", [0, MAX_ONPREM_GPUS_PER_NODE + 1])
def test_onprem_rejects_a_gpu_count_outside_the_board_range(gpus: int) -> None:
    with pytest.raises(CatalogError) as exc:
        resolve_gpu_machine("onprem", "a100-80gb", None, gpus)
    assert exc.value.field == "gpus_per_node"
    assert str(MAX_ONPREM_GPUS_PER_NODE) in exc.value.fix


def test_onprem_rejects_an_instance_type() -> None:
    with pytest.raises(CatalogError) as exc:
        resolve_gpu_machine("onprem", "a100-80gb", "p4de.24xlarge", 8)
    assert exc.value.field == "instance_type"
    assert "remove instance_type" in exc.value.fix


@pytest.mark.parametrize("cloud", ["aws", "gcp", "onprem"])
def test_an_unknown_accelerator_lists_the_known_ones(cloud: Cloud) -> None:
    with pytest.raises(CatalogError) as exc:
        resolve_gpu_machine(cloud, "tpu-v5", None, 8)
    assert exc.value.field == "accelerator"
    assert "tpu-v5" in exc.value.message
    assert _listed(exc.value.fix) == list(ACCELERATORS)


def test_an_accelerator_the_cloud_lacks_lists_what_that_cloud_offers() -> None:
    with pytest.raises(CatalogError) as exc:
        resolve_gpu_machine("gcp", "a10g", None, None)
    assert exc.value.field == "accelerator"
    assert "gcp" in exc.value.message and "a10g" in exc.value.message
    offered = _listed(exc.value.fix)
    assert "a10g" not in offered and "l40s" not in offered
    assert offered == [n for n in ACCELERATORS if _machines("gcp", n)]


@pytest.mark.parametrize("name", list(ACCELERATORS))
def test_every_accelerator_is_offered_somewhere_with_positive_gpu_counts(name: str) -> None:
    acc = ACCELERATORS[name]
    assert acc.name == name
    assert _offered_on("onprem", name)
    assert _offered_on("aws", name) or _offered_on("gcp", name)
    for cloud in ("aws", "gcp"):
        assert all(count > 0 for count in _machines(cloud, name).values())
    assert acc.memory_gib > 0 and acc.peak_tflops > 0


@pytest.mark.parametrize("name", list(ACCELERATORS))
def test_gcp_accelerators_name_their_gke_accelerator_type(name: str) -> None:
    assert (ACCELERATOR_TYPES.get(name) is not None) == bool(_machines("gcp", name))
