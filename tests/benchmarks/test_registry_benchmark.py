"""The registry benchmark keeps running, on a few versions. No timing assertions: it only
checks that each operation was measured on both stores."""

from __future__ import annotations

from pathlib import Path

from tests.benchmarks.conftest import run_benchmark

OPS = {"list_versions", "list_last_50", "version_names", "list_models", "promote"}


def test_registry_benchmark_measures_every_operation_on_both_stores(tmp_path: Path) -> None:
    report = run_benchmark(
        "registry_ops.py", "--versions", "60", "--repeats", "2", tmp_path=tmp_path
    )

    for store in ("directory", "s3_moto"):
        assert set(report[store]["median_s"]) == OPS
        assert all(len(runs) == 2 for runs in report[store]["seconds"].values())
        # Two aliases set up, then two promotions: every move is in the log.
        assert report[store]["log_entries"] == 4
