"""Running a benchmark script the way its smoke tests do."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"


def run_benchmark(script: str, *args: str, tmp_path: Path) -> Any:
    """Run `benchmarks/<script> *args --json FILE` on the CPU; the JSON report it wrote. A
    non-zero exit fails the test with the end of its stderr."""
    return run_benchmark_process(script, *args, tmp_path=tmp_path)[0]


def run_benchmark_process(script: str, *args: str, tmp_path: Path) -> tuple[Any, str]:
    """As run_benchmark, with what the script printed: (the JSON report, its stdout)."""
    out = tmp_path / f"{Path(script).stem}.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args, "--json", str(out)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text()), proc.stdout


def load_benchmark(name: str) -> ModuleType:
    """A benchmark script as a module (benchmarks/ is not a package; its scripts import each
    other by name, so the folder goes on sys.path)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
