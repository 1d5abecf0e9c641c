"""The cluster executor's state machine, against `SimulatedJobsApi` (a test double: an in-memory
simulation of the Kubernetes Jobs/JobSet API with Kueue admission, no cluster), and the
in-cluster REST client against a local HTTP server standing in for the API server.

Every object the executor creates goes through the simulation's strict validation (Jobs with
kubernetes-validate, JobSets against the JobSet CRD schema and webhook checks), which refuses an
invalid one as the API server would.
"""

from __future__ import annotations

import copy
import dataclasses
import http.server
import json
import re
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlstack.stacks.names import LOCAL_QUEUE_NAME, QUEUE_LABEL
from mlstack.stacks.validate import load_platform
from mlstack.workloads import contract
from mlstack.workloads.deploy.jobset import jobset_manifest
from mlstack.workloads.deploy.settings import job_settings
from mlstack.workloads.pipeline import cluster
from mlstack.workloads.pipeline.cluster import (
    PIPELINE_LABEL,
    RUN_LABEL,
    STEP_LABEL,
    ApiError,
    ClusterExecutor,
    InCluster,
    KubeJobsApi,
    name_budget,
    object_name,
    step_labels,
    step_manifest,
)
from mlstack.workloads.pipeline.executor import StepCancelled, StepCommand, StepContext, StepFailed
from mlstack.workloads.pipeline.spec import Pipeline, Step
from mlstack.workloads.pipeline.step import command_for as step_command_for
from mlstack.workloads.storage import open_store
from tests.workloads.deploy.placements import LAB_S3
from tests.workloads.pipeline.simulated_jobs_api import SimulatedJobsApi, validation_problems

NAMESPACE = "language"
RUN = "20261203T020000Z-ab12"


def _jobset(lab_config: dict[str, Any]) -> dict[str, Any]:
    """A train step's JobSet, from the TrainingJob component's builder (2 hosts, a100 pool)."""
    config = copy.deepcopy(lab_config)
    config["workloads"] = {
        "training_jobs": [
            {"name": "step", "team": NAMESPACE, "pool": "a100", "num_hosts": 2, "gpus_per_host": 4}
        ]
    }
    platform = load_platform(config)
    job = platform.workloads.training_jobs[0]
    team = next(t for t in platform.teams if t.name == job.team)
    return jobset_manifest(job_settings(job, platform.pool(job.pool)), team, LAB_S3)


def _job(jobset: dict[str, Any]) -> dict[str, Any]:
    """A CPU step's Job: one pod like the JobSet's, queued by the team's LocalQueue."""
    workers = jobset["spec"]["replicatedJobs"][0]["template"]
    pod = copy.deepcopy(workers["spec"]["template"])
    container = pod["spec"]["containers"][0]
    container["command"] = ["placeholder"]
    container.pop("args", None)
    container.pop("ports", None)
    container["env"] = [e for e in container["env"] if "valueFrom" not in e]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "placeholder",
            "namespace": NAMESPACE,
            "labels": {QUEUE_LABEL: LOCAL_QUEUE_NAME},
        },
        "spec": {"backoffLimit": 0, "template": pod},
    }


def step_manifests(lab_config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    jobset = _jobset(lab_config)
    return {"Job": _job(jobset), "JobSet": jobset}


@pytest.fixture
def manifests(lab_config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return step_manifests(lab_config)


@pytest.fixture
def pipeline(tmp_path: Path, manifests: dict[str, dict[str, Any]]) -> Pipeline:
    return four_steps(tmp_path, manifests)


def four_steps(tmp_path: Path, manifests: dict[str, dict[str, Any]]) -> Pipeline:
    """prepare, two train candidates after it, evaluate after both (a source dataset index
    in the datasets directory: the engine reads its checksum)."""
    dataset = tmp_path / "datasets" / "pystdlib"
    dataset.mkdir(parents=True, exist_ok=True)
    (dataset / "index.json").write_text('{"shards": []}')
    train = {"model": "tiny", "steps": 20, "num_hosts": 2}
    steps = (
        Step(
            "data",
            "prepare",
            config={"dataset": "pystdlib", "test_fraction": 0.1, "seed": 0},
            manifest=manifests["Job"],
        ),
        Step("cand-a", "train", after=("data",), config=train, manifest=manifests["JobSet"]),
        Step(
            "cand-b",
            "train",
            after=("data",),
            config={**train, "learning_rate": 1e-3},
            manifest=manifests["JobSet"],
        ),
        Step(
            "eval",
            "evaluate",
            after=("cand-a", "cand-b"),
            config={"split": "test"},
            manifest=manifests["Job"],
        ),
    )
    return Pipeline(
        name="nightly",
        team=NAMESPACE,
        model="lm",
        work_url=(tmp_path / "work").as_uri(),
        model_url=(tmp_path / "models" / "lm").as_uri(),
        datasets_url=(tmp_path / "datasets").as_uri(),
        image="harbor.lab.internal/ml/train:1.4.2",
        steps=steps,
    )


def fake_command_for(step: Step, ctx: StepContext) -> StepCommand:
    """Stands in for `step.command_for` (the executor takes it as a parameter)."""
    env = {"MLSTACK_PIPELINE_RUN_URL": ctx.run_url, "MLSTACK_PIPELINE_STEP": step.name}
    if step.kind == "train":
        # What a local launch sets; the cluster's own values must win.
        env[contract.COORDINATOR_ADDRESS] = "127.0.0.1:8476"
        argv = ("python", "-m", "mlstack.workloads.train.main", "--version", f"{ctx.run_id}.x")
        return StepCommand(argv, env, processes=2)
    argv = ("python", "-m", "mlstack.workloads.pipeline.step", "--step", step.name)
    return StepCommand(argv, env)


def context(pipeline: Pipeline, lines: list[str], attempt: int = 1) -> StepContext:
    return StepContext(
        pipeline=pipeline,
        run_id=RUN,
        run_url=f"{pipeline.work_url}/runs/{RUN}",
        key="0" * 64,
        attempt=attempt,
        inputs={},
        say=lines.append,
    )


def writes_outputs(pipeline: Pipeline) -> Any:
    """What each step's pods write when they succeed: output.json, or a train step's bundle."""

    def write(obj: dict[str, Any]) -> None:
        step = obj["metadata"]["labels"][STEP_LABEL]
        if obj["kind"] == "JobSet":
            models = open_store(pipeline.model_url)
            bundle = {"version": f"{RUN}.{step}", "training": {"step": 40}}
            models.put_bytes(f"versions/{RUN}.{step}/bundle.json", json.dumps(bundle).encode())
        else:
            run = open_store(f"{pipeline.work_url}/runs/{RUN}")
            run.put_bytes(f"steps/{step}/output.json", json.dumps({"done": step}).encode())

    return write


def simulated(pipeline: Pipeline, **kwargs: Any) -> SimulatedJobsApi:
    return SimulatedJobsApi(NAMESPACE, on_success=writes_outputs(pipeline), **kwargs)


def executor(api: Any) -> ClusterExecutor:
    return ClusterExecutor(api, NAMESPACE, command_for=fake_command_for, poll_s=0.0)


# --- names and manifests -----------------------------------------------------------------


def test_object_names_are_dns_labels_within_their_budget() -> None:
    name = object_name("nightly", RUN, "data")
    assert name.startswith("nightly-") and name.endswith("-data") and len(name.split("-")[1]) == 8
    long = object_name("a" * 60, RUN, "candidate-with-a-long-name", budget=40)
    assert len(long) <= 40
    assert object_name("9lives", RUN, "x")[0].isalpha()
    # Two long step names with the same beginning still get two names.
    assert object_name("p" * 50, RUN, "candidate-one") != object_name(
        "p" * 50, RUN, "candidate-two"
    )
    assert object_name("nightly", RUN, "data") != object_name("nightly", RUN + "x", "data")


def test_label_values_are_valid_for_any_run_name() -> None:
    valid = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
    for run in (RUN, "nightly-", "a.b_", "x" * 63, "r" * 70):
        labels = step_labels("nightly", run, "data")
        assert valid.fullmatch(labels[RUN_LABEL]) and len(labels[RUN_LABEL]) <= 63, run
    assert step_labels("p", RUN, "s")[RUN_LABEL] == RUN
    assert step_labels("p", "run-", "s")[RUN_LABEL] != step_labels("p", "run", "s")[RUN_LABEL]


def test_a_jobsets_name_leaves_room_for_its_pod_names(manifests: dict[str, Any]) -> None:
    # `-workers-0-1-abcde`: the longest pod name of a 2-host JobSet must stay within 63.
    assert name_budget(manifests["JobSet"]) == 63 - len("-workers-0-1-abcde")
    assert name_budget(manifests["Job"]) == 63


def test_step_manifests_are_strict_valid_and_carry_the_run(pipeline: Pipeline) -> None:
    for step in pipeline.steps:
        ctx = context(pipeline, [])
        manifest = step_manifest(step, ctx, fake_command_for(step, ctx), NAMESPACE)
        assert validation_problems(manifest) == []
        labels = manifest["metadata"]["labels"]
        assert labels[PIPELINE_LABEL] == "nightly"
        assert labels[RUN_LABEL] == RUN
        assert labels[STEP_LABEL] == step.name
        assert labels[QUEUE_LABEL] == LOCAL_QUEUE_NAME
        assert manifest["spec"]["suspend"] is True
        assert manifest["metadata"]["name"] == object_name(
            "nightly", RUN, step.name, name_budget(manifest)
        )


def test_a_long_pipeline_name_still_gives_a_valid_jobset(pipeline: Pipeline) -> None:
    step = pipeline.step("cand-a")
    ctx = context(pipeline, [])
    long = Pipeline(**{**pipeline.__dict__, "name": "a-very-long-pipeline-name-for-nightly"})
    ctx = StepContext(long, RUN, ctx.run_url, ctx.key, 1, {})
    manifest = step_manifest(step, ctx, fake_command_for(step, ctx), NAMESPACE)
    assert validation_problems(manifest) == []


def test_a_jobsets_coordinator_follows_its_new_name(pipeline: Pipeline) -> None:
    step = pipeline.step("cand-a")
    ctx = context(pipeline, [])
    manifest = step_manifest(step, ctx, fake_command_for(step, ctx), NAMESPACE)
    name = manifest["metadata"]["name"]
    assert manifest["spec"]["network"]["subdomain"] == name
    (rj,) = manifest["spec"]["replicatedJobs"]
    (container,) = rj["template"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env[contract.COORDINATOR_ADDRESS]["value"] == f"{name}-workers-0-0.{name}:8476"
    assert "valueFrom" in env[contract.PROCESS_ID]
    assert env["MLSTACK_PIPELINE_STEP"]["value"] == "cand-a"
    assert container["command"][:3] == ["python", "-m", "mlstack.workloads.train.main"]
    assert "args" not in container
    # The store's endpoint from the rendered manifest stays.
    assert any(e.startswith("AWS_") or "S3" in e for e in env)


def test_a_step_without_a_manifest_fails_in_one_line(pipeline: Pipeline) -> None:
    step = Step("data", "prepare")
    with pytest.raises(StepFailed, match=r"no Job or JobSet manifest.*mlstack up") as exc:
        executor(simulated(pipeline)).run(step, context(pipeline, []))
    assert "\n" not in str(exc.value)


# --- the state machine -------------------------------------------------------------------


def test_a_step_waits_for_admission_runs_and_returns_its_outputs(pipeline: Pipeline) -> None:
    api = simulated(pipeline, quota=0)
    lines: list[str] = []
    ctx = context(pipeline, lines)
    result: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: result.update(executor(api).run(pipeline.step("data"), ctx))
    )
    worker.start()
    try:
        # No quota: it waits (no timeout of its own) and says so.
        for _ in range(200):
            if any("waiting for Kueue" in line for line in lines):
                break
            threading.Event().wait(0.01)
        assert any("waiting for Kueue to admit it (LocalQueue default" in line for line in lines)
        assert worker.is_alive()
        with api._lock:
            api.quota = 1
            api._admit()
        worker.join(timeout=30)
    finally:
        ctx.cancel.set()
        worker.join(timeout=30)
    assert result == {"done": "data"}
    assert any(line.endswith(": running") for line in lines)
    assert len(api.creations()) == 1


def test_quota_for_one_admits_one_step_at_a_time(pipeline: Pipeline) -> None:
    api = simulated(pipeline, quota=1, run_reads=3)
    results: dict[str, Any] = {}
    threads = [
        threading.Thread(
            target=lambda name=name: results.update(
                {name: executor(api).run(pipeline.step(name), context(pipeline, []))}
            )
        )
        for name in ("cand-a", "cand-b")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert api.max_admitted == 1
    assert results["cand-a"] == {
        "version": f"{RUN}.cand-a",
        "model_url": pipeline.model_url,
        "step": 40,
    }
    written = open_store(f"{pipeline.work_url}/runs/{RUN}").get_bytes("steps/cand-b/output.json")
    assert json.loads(written)["version"] == f"{RUN}.cand-b"
    assert all(validation_problems(m) == [] for m in api.created)


def test_a_failed_step_fails_in_one_line_and_a_retry_replaces_its_object(
    pipeline: Pipeline,
) -> None:
    api = simulated(pipeline, script={"data": ["fail", "ok"]})
    step = pipeline.step("data")
    with pytest.raises(StepFailed) as exc:
        executor(api).run(step, context(pipeline, []))
    message = str(exc.value)
    assert "\n" not in message
    assert "failed (BackoffLimitExceeded: Job has reached the limit)" in message
    assert f"kubectl logs -n {NAMESPACE} -l {RUN_LABEL}={RUN},{STEP_LABEL}=data" in message
    # The failed object stays for its logs until the retry, which removes it first.
    name = object_name("nightly", RUN, "data")
    assert api.exists("Job", name)
    assert executor(api).run(step, context(pipeline, [], attempt=2)) == {"done": "data"}
    assert ("delete:Foreground", "Job", name) in api.calls
    assert api.creations() == [name, name]
    assert [m["metadata"]["annotations"][cluster.ATTEMPT_ANNOTATION] for m in api.created] == [
        "1",
        "2",
    ]


def test_a_restarted_runner_follows_the_running_object_without_a_duplicate(
    pipeline: Pipeline,
) -> None:
    api = simulated(pipeline, quota=1, run_reads=5)
    step = pipeline.step("cand-a")
    first = context(pipeline, [])
    # The first runner created the object and was killed (SIGKILL: no clean-up) ...
    manifest = step_manifest(step, first, fake_command_for(step, first), NAMESPACE)
    executor(api)._start(manifest, first, "JobSet")
    assert len(api.creations()) == 1
    # ... and the next runner of the same run re-attaches.
    lines: list[str] = []
    outputs = executor(api).run(step, context(pipeline, lines))
    assert outputs["version"] == f"{RUN}.cand-a"
    assert len(api.creations()) == 1
    assert any(line.startswith(f"{RUN}: following JobSet {NAMESPACE}/") for line in lines)


def test_a_finished_object_is_not_run_again_after_a_restart(pipeline: Pipeline) -> None:
    api = simulated(pipeline)
    step = pipeline.step("data")
    executor(api).run(step, context(pipeline, []))
    assert executor(api).run(step, context(pipeline, [])) == {"done": "data"}
    assert len(api.creations()) == 1


def test_an_object_created_concurrently_is_followed_on_409(pipeline: Pipeline) -> None:
    api = simulated(pipeline)
    step = pipeline.step("data")
    ctx = context(pipeline, [])
    manifest = step_manifest(step, ctx, fake_command_for(step, ctx), NAMESPACE)
    racer = copy.deepcopy(manifest)
    # Another runner's create lands between this one's list and create: no labels to find it.
    racer["metadata"]["labels"].pop(RUN_LABEL)
    api.create(NAMESPACE, racer)
    lines: list[str] = []
    assert executor(api).run(step, context(pipeline, lines)) == {"done": "data"}
    assert len(api.created) == 1
    assert any("exists already; following it" in line for line in lines)


@pytest.mark.parametrize("stopped_by", ["step cancel", "runner stop"])
def test_cancel_deletes_the_object_it_follows(pipeline: Pipeline, stopped_by: str) -> None:
    api = simulated(pipeline, quota=0)
    ctx = context(pipeline, [])
    runner = ClusterExecutor(api, NAMESPACE, command_for=fake_command_for, poll_s=30.0)
    stop = ctx.cancel if stopped_by == "step cancel" else runner.stop
    errors: list[BaseException] = []

    def run() -> None:
        try:
            runner.run(pipeline.step("data"), ctx)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        for _ in range(500):
            if api.creations():
                break
            threading.Event().wait(0.01)
        # Mid-sleep (a 30 s poll): the stop must wake it, not wait for the next poll.
        stop.set()
        worker.join(timeout=10)
        assert not worker.is_alive()
    finally:
        ctx.cancel.set()
        worker.join(timeout=30)
    assert [type(e) for e in errors] == [StepCancelled]
    assert api.names() == []
    name = object_name("nightly", RUN, "data")
    assert ("delete:Background", "Job", name) in api.calls


def test_403_fails_with_the_missing_rbac_verb(pipeline: Pipeline) -> None:
    api = simulated(pipeline)
    api.fail("create", 403)
    with pytest.raises(StepFailed) as exc:
        executor(api).run(pipeline.step("cand-a"), context(pipeline, []))
    message = str(exc.value)
    assert "\n" not in message
    assert "create JobSet language/nightly-" in message
    assert "HTTP 403" in message
    assert "lacks the RBAC verb 'create' on JobSets" in message
    assert api.names() == []


def test_500_is_retried_and_the_step_still_runs(pipeline: Pipeline) -> None:
    api = simulated(pipeline)
    api.fail("create", 500, times=2)
    api.fail("get", 503, times=2)
    lines: list[str] = []
    assert executor(api).run(pipeline.step("data"), context(pipeline, lines)) == {"done": "data"}
    assert sum("retrying" in line for line in lines) == 4


def test_500_that_persists_fails_the_step_in_one_line(pipeline: Pipeline) -> None:
    api = simulated(pipeline)
    api.fail("get", 500, times=cluster.MAX_TRANSIENT)
    with pytest.raises(StepFailed, match=r"get Job language/nightly-.*: HTTP 500") as exc:
        executor(api).run(pipeline.step("data"), context(pipeline, []))
    assert "\n" not in str(exc.value)


def test_a_step_that_wrote_no_outputs_fails_with_the_url(pipeline: Pipeline) -> None:
    api = SimulatedJobsApi(NAMESPACE)  # its pods write nothing
    with pytest.raises(StepFailed, match=r"wrote no file://.*/steps/data/output.json"):
        executor(api).run(pipeline.step("data"), context(pipeline, []))
    with pytest.raises(StepFailed, match=r"exported no file://.*/bundle.json"):
        executor(api).run(pipeline.step("cand-a"), context(pipeline, []))


def test_an_object_deleted_by_hand_fails_the_step(pipeline: Pipeline) -> None:
    api = simulated(pipeline, quota=0)
    original_get = api.get

    def get_after_delete(namespace: str, kind: Any, name: str) -> Any:
        api.delete(namespace, kind, name)
        return original_get(namespace, kind, name)

    api.get = get_after_delete  # type: ignore[method-assign]
    with pytest.raises(StepFailed, match="disappeared before it finished"):
        executor(api).run(pipeline.step("data"), context(pipeline, []))


# --- the REST client ---------------------------------------------------------------------


class _FakeApiServer(http.server.BaseHTTPRequestHandler):
    """A local HTTP handler standing in for the API server: records requests, answers from
    `answers` (a test double, plain HTTP: TLS is the ssl module's)."""

    requests: list[tuple[str, str, dict[str, Any] | None, str | None]] = []
    answers: list[tuple[int, dict[str, Any]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.requests.append((self.command, self.path, body, self.headers.get("Authorization")))
        status, payload = self.answers.pop(0)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _answer  # noqa: N815 - http.server's handler names

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[tuple[KubeJobsApi, type[_FakeApiServer]]]:
    _FakeApiServer.requests = []
    _FakeApiServer.answers = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeApiServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        token = tmp_path / "token"
        token.write_text("tok\n")
        port = str(server.server_address[1])
        cluster = InCluster("127.0.0.1", port, token, tmp_path / "ca.crt", "team", scheme="http")
        yield KubeJobsApi(cluster, timeout_s=10.0, tls=ssl.create_default_context()), _FakeApiServer
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_rest_paths_verbs_and_bodies(api_server: Any) -> None:
    api, server = api_server
    server.answers += [
        (201, {"kind": "Job"}),
        (200, {"kind": "JobSet", "metadata": {"name": "n"}}),
        (200, {"items": [{"metadata": {"name": "a"}}]}),
        (200, {}),
        (404, {"kind": "Status", "message": 'jobs.batch "n" not found'}),
        (404, {"kind": "Status", "message": "gone"}),
    ]
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "n"}}
    api.create("team", job)
    assert api.get("team", "JobSet", "n") == {"kind": "JobSet", "metadata": {"name": "n"}}
    assert api.list("team", "Job", {RUN_LABEL: "r", STEP_LABEL: "s"}) == [
        {"metadata": {"name": "a"}}
    ]
    api.delete("team", "JobSet", "n", "Foreground")
    assert api.get("team", "Job", "n") is None
    api.delete("team", "Job", "n")  # already gone: no error
    paths = [(m, p) for m, p, _, _ in server.requests]
    assert paths == [
        ("POST", "/apis/batch/v1/namespaces/team/jobs"),
        ("GET", "/apis/jobset.x-k8s.io/v1alpha2/namespaces/team/jobsets/n"),
        (
            "GET",
            "/apis/batch/v1/namespaces/team/jobs?labelSelector="
            "mlstack.dev%2Fpipeline-run%3Dr%2Cmlstack.dev%2Fpipeline-step%3Ds",
        ),
        ("DELETE", "/apis/jobset.x-k8s.io/v1alpha2/namespaces/team/jobsets/n"),
        ("GET", "/apis/batch/v1/namespaces/team/jobs/n"),
        ("DELETE", "/apis/batch/v1/namespaces/team/jobs/n"),
    ]
    assert server.requests[0][2] == job
    assert server.requests[3][2]["propagationPolicy"] == "Foreground"
    assert server.requests[5][2]["propagationPolicy"] == "Background"
    assert {auth for *_, auth in server.requests} == {"Bearer tok"}


def test_rest_errors_are_one_line_with_verb_object_and_status(api_server: Any) -> None:
    api, server = api_server
    server.answers += [
        (403, {"kind": "Status", "message": 'jobsets is forbidden: User "x" cannot create'}),
        (409, {"kind": "Status", "message": "already exists"}),
    ]
    jobset = {"kind": "JobSet", "metadata": {"name": "n"}}
    with pytest.raises(ApiError) as exc:
        api.create("team", jobset)
    assert exc.value.status == 403
    assert str(exc.value).startswith("create JobSet team/n: HTTP 403 (jobsets is forbidden")
    assert "RBAC verb 'create'" in str(exc.value)
    with pytest.raises(ApiError) as exc:
        api.create("team", jobset)
    assert exc.value.status == 409


def test_in_cluster_settings_come_from_the_service_env_and_the_mounted_account(
    tmp_path: Path,
) -> None:
    (tmp_path / "namespace").write_text("language\n")
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    found = InCluster.from_env(env, tmp_path)
    assert found.namespace == "language"
    assert found.base_url == "https://10.0.0.1:443"
    assert found.token_file == tmp_path / "token"
    assert InCluster.from_env({**env, "KUBERNETES_SERVICE_HOST": "fd00::1"}, tmp_path).base_url == (
        "https://[fd00::1]:443"
    )
    with pytest.raises(ApiError, match="KUBERNETES_SERVICE_HOST/PORT are not set"):
        InCluster.from_env({}, tmp_path)
    with pytest.raises(ApiError, match="automountServiceAccountToken"):
        InCluster.from_env(env, tmp_path / "missing")


# --- with the stack side's own step manifests --------------------------------------------


def test_the_lab_stacks_step_manifests_become_valid_objects_for_a_run(
    lab_plan: Any, tmp_path: Path
) -> None:
    """The shipped onprem-lab pipeline as deployed (its ConfigMap's pipeline.json), each step
    named, labelled and given step.command_for's command for a run: all strict-valid."""
    (configmap,) = [
        r
        for r in lab_plan.resources
        if r.type == "kubernetes:core/v1:ConfigMap"
        and "pipeline.json" in (r.inputs.get("data") or {})
    ]
    deployed = Pipeline.loads(configmap.inputs["data"]["pipeline.json"], "lab ConfigMap")
    # Local stores, so that command_for can look up the model's champion alias.
    pipeline = dataclasses.replace(
        deployed, work_url=(tmp_path / "work").as_uri(), model_url=(tmp_path / "m").as_uri()
    )
    inputs = {"data": {"train_url": "s3://d/train", "test_url": "s3://d/test"}}
    kinds = set()
    for step in pipeline.steps:
        ctx = dataclasses.replace(context(pipeline, []), inputs=inputs)
        manifest = step_manifest(step, ctx, step_command_for(step, ctx), deployed.team)
        assert validation_problems(manifest) == [], step.name
        assert manifest["metadata"]["labels"][QUEUE_LABEL] == LOCAL_QUEUE_NAME
        kinds.add(manifest["kind"])
    assert kinds == {"Job", "JobSet"}
