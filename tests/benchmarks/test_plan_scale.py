"""The benchmark keeps running and keeps hitting its sizes: quick mode plans a ~100-resource
platform and its floor, and the measured resource model predicts what a plan records."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.benchmarks.conftest import load_benchmark, run_benchmark


@pytest.fixture(scope="module")
def plan_scale() -> ModuleType:
    return load_benchmark("plan_scale")


def test_quick_mode_reports_a_row_per_size(tmp_path: Path) -> None:
    (row,) = run_benchmark("plan_scale.py", "--quick", "--repeats", "1", tmp_path=tmp_path)
    assert row["target"] == 100
    assert 95 <= row["resources"] <= 105
    assert row["resources"] == row["predicted"]
    assert row["ms_per_resource"] > 0 and row["floor_ms_per_resource"] > 0
    assert row["peak_mib"] > 0


def test_resource_model_predicts_a_shape_it_was_not_measured_on(plan_scale: ModuleType) -> None:
    model = plan_scale.resource_model()
    # A NodePatch per node; a pool component and a Kueue flavor per pool; a TeamTenancy and at
    # least its namespace, quota, limits, account, roles, binding, policies, queues per team.
    assert model.per_node == 1
    assert model.per_pool == 2
    assert model.per_team >= 12
    cfg = plan_scale.synthetic_platform(3, 5, 4)
    assert plan_scale.plan_platform("model-check", cfg) == model.count(3, 5, 4)


def test_every_size_lands_within_two_percent_of_its_target(plan_scale: ModuleType) -> None:
    model = plan_scale.resource_model()
    for target, (teams, pools) in plan_scale.SIZES.items():
        nodes = model.nodes_for(target, teams, pools)
        assert abs(model.count(teams, pools, nodes) - target) <= 0.02 * target, target
