"""Evaluation in training across two processes (gloo, one CPU device each) with every parameter
split over both (fsdp 2): the eval events come from process 0, and the final one is the loss
that `evaluate_version` computes alone, on one process, from the exported bundle."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlstack.workloads.local import Launch, LocalRun
from mlstack.workloads.storage import open_store
from mlstack.workloads.train.data import split_dataset
from mlstack.workloads.train.evaluate import evaluate_version
from mlstack.workloads.train.export import latest_version
from tests.workloads.train.conftest import prepare_small_dataset

TIMEOUT_S = 240


def test_two_processes_with_fsdp_evaluate_like_one(tmp_path: Path) -> None:
    run = LocalRun(tmp_path.as_uri(), run="eval2")
    source = prepare_small_dataset((tmp_path / "source").as_uri())
    test_url = (tmp_path / "test").as_uri()
    split_dataset(source, run.data_url, test_url, test_fraction=0.1)
    args = ["--config", "tiny", "--steps", "8", "--fsdp", "2", "--log-every", "4"]
    args += ["--eval-every", "4", "--eval-batches", "2", "--version", "two.procs"]
    launch = Launch(
        run,
        2,
        args,
        workdir=tmp_path / "work",
        extra_env={"MLSTACK_EVAL_DATA_URL": test_url},
    )
    try:
        result = launch.wait(TIMEOUT_S)
    finally:
        launch.kill()  # wait() kills on its way out too; this covers a failure before it
    assert result.returncodes == [0, 0], result.failure
    evals = [e for e in result.events if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [4, 8]
    assert latest_version(open_store(run.model_url)) == "two.procs"
    alone = evaluate_version(run.model_url, "two.procs", test_url, max_batches=2)
    assert evals[-1]["loss"] == pytest.approx(alone["loss"], rel=1e-4)
    assert evals[-1]["tokens"] == alone["tokens"] == 2 * 8 * 64
