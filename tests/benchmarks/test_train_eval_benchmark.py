"""The evaluation-overhead benchmark keeps running, on small sizes (a small corpus, 60 steps).
No timing assertions: it only checks that it measured what it says it measured."""

from __future__ import annotations

import sysconfig
from pathlib import Path

from tests.benchmarks.conftest import run_benchmark


def test_eval_overhead_compares_runs_with_and_without_eval(tmp_path: Path) -> None:
    email = Path(sysconfig.get_paths()["stdlib"]) / "email"
    report = run_benchmark(
        "train_eval.py",
        *("--steps", "60", "--eval-every", "20", "--eval-batches", "2", "--repeats", "1"),
        *("--source", str(email)),
        tmp_path=tmp_path,
    )
    # Evaluations at steps 20 and 40 fall between the first (10) and last (60) logged steps.
    assert report["evals_in_window"] == 2
    assert len(report["eval_setup_s"]) == 1 and report["eval_setup_s"][0] > 0
    assert report["eval_s_median"] > 0
    assert len(report["with_steps_per_s"]) == len(report["without_steps_per_s"]) == 1
    assert report["ratio"] > 0
