"""The serving benchmarks keep running: the load test on its quick setting and the engine
benchmark on the CPU, both with `tiny`. No timing assertions (the goals are the benchmarks'
business): only that each run measured real answers, that batching on and off were both
measured, and that the overload run was refused with 429s, never 5xx."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.benchmarks.conftest import load_benchmark, run_benchmark

#: The concurrency levels of serve_load.py --quick.
QUICK_LEVELS = {1, 8}
#: serve_load.py's overload run: 2 x (32 running + 32 queued) connections against --max-queue 32.
OVERLOAD_CONCURRENCY = 128


def test_serve_load_quick_measures_batching_on_and_off_and_refuses_overload(
    tmp_path: Path,
) -> None:
    if shutil.which("wrk") is None:
        pytest.fail("wrk is not installed: run `bash tests/run.sh`, which installs Debian's wrk")
    report = run_benchmark("serve_load.py", "--quick", "--model", "tiny", tmp_path=tmp_path)

    *runs, overload = report["runs"]
    assert {(r["batching"], r["concurrency"]) for r in runs} == {
        (batching, level) for batching in ("on", "off") for level in QUICK_LEVELS
    }
    assert len(runs) == 2 * len(QUICK_LEVELS)
    for run in [*runs, overload]:
        where = f"{run['batching']} at {run['concurrency']}: {run}"
        assert run["requests"] > 0 and run["tokens_per_s"] > 0, where
        assert run["socket_errors"] == 0, where
        assert not [s for s in run["statuses"] if s.startswith("5")], where
        assert 0 < run["p50_ms"] <= run["p99_ms"], where
        assert run["mean_batch"] >= 1, where
    for run in runs:
        where = f"{run['batching']} at {run['concurrency']}: {run}"
        # Far below the queue of 256: every request is answered (499: one that wrk cut off
        # when it stopped).
        assert set(run["statuses"]) <= {"200", "499"} and "200" in run["statuses"], where
        assert run["non_2xx"] == 0, where
        if run["batching"] == "off":
            assert run["mean_batch"] == 1, where

    assert (overload["batching"], overload["concurrency"]) == ("on, overload", OVERLOAD_CONCURRENCY)
    # Twice the connections the running batch and the queue hold: some are served, the excess
    # is refused with 429 (statuses lists only those answered at least once; 499: cut off by
    # wrk's stop).
    assert {"200", "429"} <= set(overload["statuses"]) <= {"200", "429", "499"}, overload

    goals = report["goals"]
    assert goals["overload_429"] == overload["statuses"]["429"]
    assert goals[f"tokens_per_s_ratio_at_{max(QUICK_LEVELS)}"] > 0
    assert goals["p50_ratio_at_1"] > 0


def test_serve_gpu_runs_the_engine_at_each_batch_when_allowed_on_a_cpu(tmp_path: Path) -> None:
    report = run_benchmark(
        "serve_gpu.py",
        *("--configs", "tiny", "--dtype", "float32", "--seconds", "1", "--allow-cpu"),
        *("--max-tokens", "16"),
        tmp_path=tmp_path,
    )
    (result,) = report["results"]
    assert (result["config"], result["params"]) == ("tiny", 127_616)
    # Batch buckets 1..32 and one prompt bucket (tiny's context is the 64 asked for): 6
    # prefills, 6 decodes, 6 empty batches, 6 x 6 inserts.
    assert result["executables"] == 54
    assert [run["rows"] for run in result["runs"]] == [1, 8, 32]
    for run in result["runs"]:
        assert run["tokens_per_s"] > 0 and run["requests_per_s"] > 0, run
        # A call makes at most 8 steps: a step takes at least an eighth of a call.
        assert run["ms_per_step"] * 8 >= run["ms_per_call"] * 0.99, run


def _run(batching: str, concurrency: int, tokens_per_s: float, p50_ms: float) -> Any:
    return serve_load().Run(
        batching=batching,
        concurrency=concurrency,
        seconds=6.0,
        requests=10,
        requests_per_s=1.0,
        tokens_per_s=tokens_per_s,
        p50_ms=p50_ms,
        p99_ms=p50_ms,
        non_2xx=0,
        socket_errors=0,
        mean_batch=1.0,
        statuses={"200": 10},
    )


def serve_load() -> ModuleType:
    return load_benchmark("serve_load")


def test_a_goal_whose_concurrency_was_not_run_reads_not_measured() -> None:
    # `serve_load.py --concurrency 32` has no level 1: the p50 goal at 1 used to end the whole
    # run (every load measured) with a StopIteration traceback.
    runs = [_run("on", 32, 2000.0, 470.0), _run("off", 32, 500.0, 2100.0)]
    overload = _run("on, overload", 128, 1000.0, 9.0)
    goals = serve_load().goals(runs, overload, 32)
    assert goals["tokens_per_s_ratio_at_32"] == 4.0
    assert goals["p50_ratio_at_1"] == "not measured"
    assert goals["overload_5xx"] == 0
