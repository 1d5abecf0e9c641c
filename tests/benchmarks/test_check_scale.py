"""The policy-check benchmark keeps running: quick mode checks every shipped stack and the
~1,000-resource synthetic platform, whose workloads pass the pack. No timing assertions."""

from __future__ import annotations

from pathlib import Path

from mlstack.stacks.stackfile import shipped_stacks
from tests.benchmarks.conftest import run_benchmark_process


def test_quick_mode_reports_shipped_stacks_and_the_smallest_size(tmp_path: Path) -> None:
    data, stdout = run_benchmark_process("check_scale.py", "--quick", tmp_path=tmp_path)
    assert data["repeats"] == 1
    rows = data["rows"]
    assert [r["name"] for r in rows if r["kind"] == "shipped"] == shipped_stacks()
    (synthetic,) = [r for r in rows if r["kind"] == "synthetic"]
    assert synthetic["target"] == 1000
    assert 980 <= synthetic["resources"] <= 1020
    # The synthetic workloads give the pod rules work, and they are compliant.
    assert synthetic["workloads"] == 4 * synthetic["teams"]
    assert synthetic["violations"] == 0
    for r in rows:
        assert r["plan_s"] > 0 and r["rule_s"] > 0, r["name"]
        assert r["ratio"] == r["rule_s"] / r["plan_s"]
    assert "rule/plan" in stdout
