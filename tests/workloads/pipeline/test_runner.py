"""The cluster runner (`python -m mlstack.workloads.pipeline.runner`): its spec, its exit codes
and SIGTERM, with the simulated Jobs API (a test double, see simulated_jobs_api.py) and a
stand-in engine that runs the steps one after another (the engine's own behaviour is tested
with it in its own tests)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mlstack.workloads.pipeline import runner
from mlstack.workloads.pipeline.executor import Executor, StepCancelled, StepContext, StepFailed
from mlstack.workloads.pipeline.spec import Pipeline, topological_order
from tests.workloads.pipeline.simulated_jobs_api import SimulatedJobsApi
from tests.workloads.pipeline.test_cluster import (
    NAMESPACE,
    fake_command_for,
    four_steps,
    step_manifests,
    writes_outputs,
)

RUN = "20261203T020000Z-ab12"


class SequentialEngine:
    """A stand-in for `workloads.pipeline.engine`: each step once, in topological order."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def new_run_id(self) -> str:
        return RUN

    def run_pipeline(
        self, pipeline: Pipeline, executor: Executor, *, run_id: str, say: Any
    ) -> SimpleNamespace:
        for name in topological_order(pipeline.steps):
            step = pipeline.step(name)
            ctx = StepContext(
                pipeline, run_id, f"{pipeline.work_url}/runs/{run_id}", "0" * 64, 1, {}, say=say
            )
            try:
                executor.run(step, ctx)
            except StepFailed:
                return SimpleNamespace(status="failed")
            except StepCancelled:
                return SimpleNamespace(status="cancelled")
            self.ran.append(name)
        return SimpleNamespace(status="succeeded")


@pytest.fixture
def pipeline(tmp_path: Path, lab_config: dict[str, Any]) -> Pipeline:
    return four_steps(tmp_path, step_manifests(lab_config))


@pytest.fixture(autouse=True)
def _commands(monkeypatch: pytest.MonkeyPatch) -> None:
    # The executor's default command_for is the step module's; these tests use the stand-in.
    monkeypatch.setattr("mlstack.workloads.pipeline.cluster._step_command_for", fake_command_for)


def spec_file(tmp_path: Path, pipeline: Pipeline) -> Path:
    path = tmp_path / "pipeline.json"
    path.write_text(pipeline.dumps())
    return path


def test_a_run_creates_each_step_and_exits_0(tmp_path: Path, pipeline: Pipeline) -> None:
    api = SimulatedJobsApi(NAMESPACE, on_success=writes_outputs(pipeline))
    engine = SequentialEngine()
    code = runner.main(
        ["--spec", str(spec_file(tmp_path, pipeline))], api=api, engine=engine, poll_s=0
    )
    assert code == 0
    assert engine.ran == ["data", "cand-a", "cand-b", "eval"]
    assert len(api.created) == 4


def test_a_failed_step_exits_1(tmp_path: Path, pipeline: Pipeline) -> None:
    api = SimulatedJobsApi(
        NAMESPACE, on_success=writes_outputs(pipeline), script={"data": ["fail"]}
    )
    code = runner.main(
        ["--spec", str(spec_file(tmp_path, pipeline)), "--run", RUN],
        api=api,
        engine=SequentialEngine(),
        poll_s=0,
    )
    assert code == runner.EXIT_FAILED


def test_an_unreadable_spec_is_one_error_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.json"
    assert runner.main(["--spec", str(missing)], api=SimulatedJobsApi(NAMESPACE)) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {missing}: cannot read the pipeline")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    assert runner.main(["--spec", str(bad)], api=SimulatedJobsApi(NAMESPACE)) == 2
    assert "not an mlstack pipeline document" in capsys.readouterr().err


def test_outside_a_cluster_it_says_so_and_exits_2(
    tmp_path: Path,
    pipeline: Pipeline,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert runner.main(["--spec", str(spec_file(tmp_path, pipeline))]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "KUBERNETES_SERVICE_HOST/PORT are not set" in line


def test_sigterm_deletes_the_running_step_and_exits_143(tmp_path: Path, pipeline: Pipeline) -> None:
    api = SimulatedJobsApi(NAMESPACE, on_success=writes_outputs(pipeline), quota=0)
    original_create = api.create

    def create_then_sigterm(namespace: str, manifest: Any) -> Any:
        created = original_create(namespace, manifest)
        # The pod is deleted while its first step waits for admission.
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
        return created

    api.create = create_then_sigterm  # type: ignore[method-assign]
    previous = signal.getsignal(signal.SIGTERM)
    engine = SequentialEngine()
    code = runner.main(
        ["--spec", str(spec_file(tmp_path, pipeline))], api=api, engine=engine, poll_s=0.05
    )
    assert code == runner.EXIT_STOPPED == 143
    assert api.names() == []  # the step's Job deleted
    assert len(api.created) == 1  # and nothing started after it
    assert signal.getsignal(signal.SIGTERM) == previous
