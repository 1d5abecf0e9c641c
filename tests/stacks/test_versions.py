"""Every pinned version in one module (stacks/versions.py): a tested set per Kubernetes minor,
the clouds' support windows, and `mlstack plan`'s warning for a version past standard support."""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mlstack.components.kubernetes import addons
from mlstack.components.kubernetes.chart_defaults import recorded
from mlstack.stacks import cli
from mlstack.stacks.stackfile import read_stack, shipped_stacks
from mlstack.stacks.validate import load_platform
from mlstack.stacks.versions import (
    CHARTS,
    SUPPORT,
    SUPPORTED_KUBERNETES,
    TESTED,
    support_warning,
)

#: The day issue 16 was worked on: EKS 1.34 left standard support the day before.
TODAY = datetime.date(2026, 12, 3)
REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.mark.parametrize("ref", shipped_stacks())
def test_every_shipped_stack_is_in_standard_support_on_its_cloud(ref: str) -> None:
    platform = load_platform(read_stack(ref).platform)
    version = platform.cluster.kubernetes_version
    assert version in TESTED
    assert support_warning(platform.cloud, version, TODAY) is None, (ref, version)


def test_every_tested_set_pins_charts_with_recorded_defaults_and_a_matching_autoscaler() -> None:
    for minor, tested in TESTED.items():
        assert tested.kubernetes == minor
        assert tested.cluster_autoscaler_image.startswith(f"v{minor}."), tested
        for pin in dataclasses.astuple(tested.charts, tuple_factory=list):
            chart = addons.HelmChart(*pin)
            assert recorded(chart) is not None, f"{minor}: record {chart.chart} {chart.version}"


def test_the_components_install_the_charts_of_the_tested_sets() -> None:
    """The add-on components read CHARTS; a tested set with other charts would need them to take
    the stack's own set instead, so a set that differs fails here first."""
    assert all(t.charts == CHARTS for t in TESTED.values())
    assert addons.HelmChart.pinned(CHARTS.kueue) == addons.KUEUE
    assert addons.HelmChart.pinned(CHARTS.jobset) == addons.JOBSET


def test_support_windows_are_for_tested_minors_and_in_order() -> None:
    for windows in SUPPORT.values():
        assert set(windows) <= set(SUPPORTED_KUBERNETES)
        for window in windows.values():
            assert window.extended_end is None or window.standard_end < window.extended_end


@pytest.mark.parametrize(
    ("version", "day", "expected"),
    [
        ("1.35", TODAY, None),
        ("1.34", datetime.date(2026, 12, 1), None),
        # The calendar's end date is the first day out: EKS bills extended support from it.
        ("1.34", datetime.date(2026, 12, 2), "in extended support on aws since 2026-12-02"),
        ("1.33", TODAY, "in extended support on aws since 2026-07-29 (billed; it ends 2027-07-29)"),
        ("1.31", TODAY, "past its end of life on aws (support ended 2026-11-26)"),
    ],
)
def test_support_warning_on_eks(version: str, day: datetime.date, expected: str | None) -> None:
    warning = support_warning("aws", version, day)
    if expected is None:
        assert warning is None
    else:
        assert warning is not None
        assert expected in warning
        assert warning.endswith("move cluster.kubernetes_version to 1.35")


def test_no_warning_where_the_cloud_dates_are_unknown() -> None:
    assert support_warning("gcp", "1.29", TODAY) is None
    assert support_warning("onprem", "1.29", TODAY) is None


def _aws_dev(tmp_path: Path, version: str) -> Path:
    data = yaml.safe_load((REPO / "stacks" / "Pulumi.aws-dev.yaml").read_text())
    data["config"]["mlstack:platform"]["cluster"]["kubernetes_version"] = version
    path = tmp_path / "Pulumi.aws-dev.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_plan_warns_about_extended_support(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "today", lambda: TODAY)
    result = runner.invoke(cli.app, ["plan", str(_aws_dev(tmp_path, "1.34"))])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert lines == [
        "warning: aws-dev: Kubernetes 1.34 is in extended support on aws since 2026-12-02 "
        "(billed; it ends 2027-12-02); move cluster.kubernetes_version to 1.35"
    ]


def test_plan_of_the_shipped_stack_has_no_warning_today(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "today", lambda: TODAY)
    result = runner.invoke(cli.app, ["plan", "aws-dev"])
    assert result.exit_code == 0, result.output
    assert "warning:" not in result.output


def test_an_untested_version_is_refused_with_the_supported_list(tmp_path: Path) -> None:
    result = runner.invoke(cli.app, ["plan", str(_aws_dev(tmp_path, "1.28"))])
    assert result.exit_code == 2
    assert "platform.cluster.kubernetes_version" in result.output
    assert "1.35" in result.output and "tested set" in result.output
