"""The local pipeline benchmark keeps running, on the smallest size. No timing assertions: it
only checks that each run measured what it says it measured."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks.conftest import run_benchmark


def test_pipeline_benchmark_times_by_hand_the_pipeline_and_a_cached_rerun(tmp_path: Path) -> None:
    report = run_benchmark("pipeline_local.py", "--steps", "1", tmp_path=tmp_path)
    assert report["steps"] == 1
    assert report["by_hand_s"] > 0 and report["pipeline_s"] > 0
    # The rerun skips training: whatever the machine's load, it is the smaller time.
    assert 0 < report["rerun_s"] < report["pipeline_s"]
    ratio = report["rerun_s"] / report["pipeline_s"]
    assert report["rerun_vs_first"] == pytest.approx(ratio, abs=2e-3)
