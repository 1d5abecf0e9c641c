"""The benchmark keeps running: its quick mode plans a ~100-resource platform and its floor."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_quick_mode_reports_a_row_per_size(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "plan_scale.py"),
            "--quick",
            "--repeats",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(out.read_text())
    assert row["target"] == 100
    assert 90 <= row["resources"] <= 110
    assert row["ms_per_resource"] > 0 and row["floor_ms_per_resource"] > 0
    assert row["peak_mib"] > 0
