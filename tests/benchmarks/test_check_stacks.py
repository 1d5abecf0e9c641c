"""The `mlstack check` timing benchmark keeps running: one round in this tree, and a tree
without a .venv named as the other is refused in one line. No timing assertions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.benchmarks.conftest import REPO, run_benchmark


def test_one_round_times_this_tree(tmp_path: Path) -> None:
    report = run_benchmark("check_stacks.py", "--repeats", "1", tmp_path=tmp_path)
    assert report["repeats"] == 1
    assert list(report["seconds"]) == ["this"] and report["median_s"]["this"] > 0
    assert "ratio" not in report


def test_another_tree_without_a_venv_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "check_stacks.py"), "--other", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "has no .venv/bin/mlstack; fix:" in proc.stderr
