"""The training benchmarks keep running, on small sizes. No timing assertions: they only check
that each run measured what it says it measured."""

from __future__ import annotations

from pathlib import Path

from tests.benchmarks.conftest import run_benchmark


def test_harness_compares_the_full_loop_with_checkpoints_to_the_bare_loop(tmp_path: Path) -> None:
    report = run_benchmark(
        "train_harness.py",
        "--steps",
        "60",
        "--repeats",
        "1",
        "--checkpoint-every",
        "20",
        tmp_path=tmp_path,
    )
    assert report["checkpoints_in_window"] == 2
    assert len(report["bare_steps_per_s"]) == len(report["full_steps_per_s"]) == 1
    assert report["ratio"] > 0


def test_checkpoint_io_round_trips_through_s3(tmp_path: Path) -> None:
    report = run_benchmark("checkpoint_io.py", "--mib", "8", "--repeats", "1", tmp_path=tmp_path)
    assert report["mib"] == 8.0
    assert set(report["mib_per_s"]) == {"save", "raw_upload", "restore", "raw_download"}
    assert report["save_ratio"] > 0 and report["restore_ratio"] > 0


def test_gpu_benchmark_runs_the_real_step_when_allowed_on_a_cpu(tmp_path: Path) -> None:
    report = run_benchmark(
        "train_gpu.py", "--configs", "tiny", "--steps", "2", "--allow-cpu", tmp_path=tmp_path
    )
    (row,) = report["rows"]
    assert (row["config"], row["params"], row["mfu"]) == ("tiny", 127_616, None)
    assert row["tokens_per_s"] > 0
