"""The cluster runner (`python -m mlstack.workloads.pipeline.runner`): the pipeline engine with
the cluster executor against the simulated Jobs API (a test double, see simulated_jobs_api.py):
its spec, its run ids, its exit codes and SIGTERM."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from mlstack.workloads.pipeline import runner
from mlstack.workloads.pipeline.cluster import STEP_LABEL
from mlstack.workloads.pipeline.engine import load_state, run_url
from mlstack.workloads.pipeline.spec import Pipeline
from mlstack.workloads.storage import open_store
from tests.workloads.pipeline.simulated_jobs_api import SimulatedJobsApi
from tests.workloads.pipeline.test_cluster import (
    NAMESPACE,
    fake_command_for,
    four_steps,
    step_manifests,
)

RUN = "20261203T020000Z-ab12"


@pytest.fixture
def pipeline(tmp_path: Path, lab_config: dict[str, Any]) -> Pipeline:
    return four_steps(tmp_path, step_manifests(lab_config))


def pods_write(pipeline: Pipeline) -> Any:
    """What each step's pods write when they succeed, in the shapes the steps write them: a
    prepare step's splits, a train step's bundle, an evaluate step's evals."""

    def write(obj: dict[str, Any]) -> None:
        step = obj["metadata"]["labels"][STEP_LABEL]
        run_id = obj["metadata"]["labels"]["mlstack.dev/pipeline-run"]
        runs = open_store(run_url(pipeline, run_id))
        if obj["kind"] == "JobSet":
            bundle = {"version": f"{run_id}.{step}", "training": {"step": 40}}
            models = open_store(pipeline.model_url)
            models.put_bytes(f"versions/{run_id}.{step}/bundle.json", json.dumps(bundle).encode())
            return
        outputs: dict[str, Any] = {"evals": {}}
        if step == "data":
            data = f"{pipeline.work_url}/data/k"
            outputs = {"train_url": f"{data}/train", "test_url": f"{data}/test"}
        runs.put_bytes(f"steps/{step}/output.json", json.dumps(outputs).encode())

    return write


def spec_file(tmp_path: Path, pipeline: Pipeline) -> Path:
    path = tmp_path / "pipeline.json"
    path.write_text(pipeline.dumps())
    return path


def jobs_api(pipeline: Pipeline, **kwargs: Any) -> SimulatedJobsApi:
    return SimulatedJobsApi(NAMESPACE, on_success=pods_write(pipeline), **kwargs)


def test_a_run_creates_each_step_once_one_admitted_at_a_time_and_exits_0(
    tmp_path: Path, pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    api = jobs_api(pipeline, quota=1)
    code = runner.main(["--spec", str(spec_file(tmp_path, pipeline))], api=api, poll_s=0.01)
    assert code == 0, capsys.readouterr()
    # The engine runs the two candidates at once; the quota admits one at a time.
    assert len(api.created) == 4
    assert api.max_admitted == 1
    run_id = api.created[0]["metadata"]["labels"]["mlstack.dev/pipeline-run"]
    state = load_state(run_url(pipeline, run_id))
    assert state is not None and state.status == "succeeded"
    # The train JobSet runs step.command_for's command with the prepare step's splits.
    jobset = next(m for m in api.created if m["kind"] == "JobSet")
    pod = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["MLSTACK_DATA_URL"] == f"{pipeline.work_url}/data/k/train"
    assert pod["containers"][0]["command"][:3] == ["python", "-m", "mlstack.workloads.train.main"]
    assert f"run {run_id}: succeeded" in capsys.readouterr().out


def test_a_failed_step_is_an_error_line_and_exit_1(
    tmp_path: Path, pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    api = jobs_api(pipeline, script={"data": ["fail", "fail"]})
    code = runner.main(
        ["--spec", str(spec_file(tmp_path, pipeline)), "--run", RUN],
        api=api,
        command_for=fake_command_for,
        poll_s=0,
    )
    assert code == runner.EXIT_FAILED
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: step data failed: step 'data': Job language/nightly-")
    assert line.endswith("fix: see its logs, then rerun to resume")
    assert len(api.created) == 2  # its retry; nothing after it


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


def test_sigterm_deletes_the_running_steps_exits_143_and_the_next_runner_resumes(
    tmp_path: Path, pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    api = jobs_api(pipeline, quota=1)
    original_create = api.create
    sent: list[str] = []

    def create(namespace: str, manifest: Any) -> Any:
        created = original_create(namespace, manifest)
        if manifest["kind"] == "JobSet" and not sent:
            # The runner's pod is deleted once the candidates have started, and they run on
            # (their JobSets never finish by themselves) until the runner deletes them.
            sent.append(manifest["metadata"]["name"])
            api.run_reads = 10**9
            os.kill(os.getpid(), signal.SIGTERM)
        return created

    api.create = create  # type: ignore[method-assign]
    previous = signal.getsignal(signal.SIGTERM)
    spec = str(spec_file(tmp_path, pipeline))
    assert runner.main(["--spec", spec], api=api, command_for=fake_command_for, poll_s=0.05) == 143
    assert signal.getsignal(signal.SIGTERM) == previous
    assert api.names() == [api.created[0]["metadata"]["name"]]  # only the finished prepare Job
    assert "stopped by SIGTERM; its running steps were deleted" in capsys.readouterr().err
    run_id = api.created[0]["metadata"]["labels"]["mlstack.dev/pipeline-run"]
    state = load_state(run_url(pipeline, run_id))
    assert state is not None and state.status == "stopped"
    # The CronJob's next runner (no --run) resumes the stopped run: prepare is not run again.
    api.run_reads = 2
    assert runner.main(["--spec", spec], api=api, command_for=fake_command_for, poll_s=0) == 0
    data = api.created[0]["metadata"]["name"]
    assert api.creations().count(data) == 1
    assert {m["metadata"]["labels"]["mlstack.dev/pipeline-run"] for m in api.created} == {run_id}
