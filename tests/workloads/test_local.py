"""The training entry point as real processes through the local executor: two processes
match one, a SIGKILL at a random step resumes to the same parameters, and SIGTERM (to the only
process, or to one of two) ends in a committed checkpoint of an agreed step.

Each launch starts fresh Python processes (JAX on the CPU, gloo between processes, one device
each), as `mlstack local train` and a JobSet do."""

from __future__ import annotations

import random
import signal
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlstack.workloads.local import Launch, LaunchResult, LocalRun, free_port
from mlstack.workloads.storage import open_store
from mlstack.workloads.train.export import latest_version, read_bundle
from tests.workloads.train.conftest import prepare_small_dataset

STEPS = 16
ARGS = ["--config", "tiny", "--steps", str(STEPS), "--log-every", "1", "--checkpoint-every", "4"]
TIMEOUT_S = 240


def _run(tmp_path: Path, name: str) -> LocalRun:
    run = LocalRun((tmp_path / name).as_uri(), run=name)
    prepare_small_dataset(run.data_url)
    return run


def _launch(run: LocalRun, processes: int, args: list[str], **kwargs: Any) -> Launch:
    kwargs.setdefault("workdir", Path(run.store_url.removeprefix("file://")) / "work")
    return Launch(run, processes, args, **kwargs)


def _losses(result: LaunchResult) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in result.events if e["event"] == "train"}


def _params(run: LocalRun, tmp_path: Path) -> dict[str, np.ndarray]:
    store = open_store(run.model_url)
    version = latest_version(store)
    assert version is not None
    return read_bundle(store, version, tmp_path)[2]


@pytest.fixture(scope="module")
def reference(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[int, float], dict[str, np.ndarray]]:
    """One uninterrupted single-process run: its losses and final parameters."""
    tmp = tmp_path_factory.mktemp("reference")
    run = _run(tmp, "reference")
    result = _launch(run, 1, ARGS).wait(TIMEOUT_S)
    assert result.returncodes == [0]
    return _losses(result), _params(run, tmp)


@pytest.mark.parametrize("fsdp", [1, 2])
def test_two_processes_follow_one_process(tmp_path: Path, reference: Any, fsdp: int) -> None:
    """Data parallel (fsdp 1), or every parameter split over the two processes (fsdp 2)."""
    ref_losses, ref_params = reference
    run = _run(tmp_path, "two")
    result = _launch(run, 2, [*ARGS, "--fsdp", str(fsdp)]).wait(TIMEOUT_S)
    assert result.returncodes == [0, 0]
    start = next(e for e in result.events if e["event"] == "start")
    assert (start["processes"], start["devices"]) == (2, 2)
    assert start["mesh"] == {"data": 2 // fsdp, "fsdp": fsdp}
    losses = _losses(result)
    assert sorted(losses) == list(range(1, STEPS + 1))
    np.testing.assert_allclose(
        [losses[s] for s in sorted(losses)], [ref_losses[s] for s in sorted(losses)], rtol=1e-4
    )
    params = _params(run, tmp_path)
    for name, value in ref_params.items():
        np.testing.assert_allclose(params[name], value, rtol=1e-4, atol=1e-5, err_msg=name)


def test_sigkill_at_a_random_step_then_restart_ends_where_the_uninterrupted_run_does(
    tmp_path: Path, reference: Any
) -> None:
    _, ref_params = reference
    kill_at = random.randint(2, STEPS - 2)
    run = _run(tmp_path, "killed")
    launch: Launch | None = None

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "train" and event["step"] == kill_at and launch is not None:
            launch.signal_all(signal.SIGKILL)

    launch = _launch(run, 1, ARGS, on_event=on_event)
    first = launch.wait(TIMEOUT_S)
    assert first.returncodes == [-signal.SIGKILL], f"killed at step {kill_at}"
    resumed = _launch(run, 1, ARGS).wait(TIMEOUT_S)
    assert resumed.returncodes == [0]
    start = next(e for e in resumed.events if e["event"] == "start")
    assert start["resume_from"] is None or start["resume_from"] <= kill_at + 4
    params = _params(run, tmp_path)
    for name, value in ref_params.items():
        np.testing.assert_array_equal(params[name], value, err_msg=f"{name}, killed at {kill_at}")


@pytest.mark.parametrize(("processes", "signalled"), [(1, [0]), (2, [1])])
def test_sigterm_stops_every_process_at_one_committed_step(
    tmp_path: Path, processes: int, signalled: list[int]
) -> None:
    run = _run(tmp_path, f"preempted{processes}")
    args = [
        "--config",
        "tiny",
        "--steps",
        "100000",
        "--log-every",
        "1",
        "--checkpoint-every",
        "1000",
    ]
    launch: Launch | None = None
    sent: list[int] = []

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "train" and event["step"] >= 3 and not sent and launch is not None:
            sent.append(event["step"])
            for index in signalled:
                launch.procs[index].send_signal(signal.SIGTERM)

    launch = _launch(run, processes, args, on_event=on_event)
    result = launch.wait(TIMEOUT_S)
    assert result.returncodes == [143] * processes
    (preempted,) = [e for e in result.events if e["event"] == "preempted"]
    assert preempted["step"] >= sent[0]
    assert preempted["committed"] == preempted["step"]
    store = open_store(run.checkpoint_url)
    assert store.exists(f"step_{preempted['step']:08d}/COMMIT")
    assert latest_version(open_store(run.model_url)) is None


def test_a_run_in_s3_checkpoints_and_exports_there(
    tmp_path: Path, s3_endpoint: str, s3_admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The processes reach moto's S3 server through MLSTACK_S3_ENDPOINT, as on-prem pods do."""
    s3_admin.create_bucket(Bucket="local-run")
    monkeypatch.setenv("MLSTACK_S3_ENDPOINT", s3_endpoint)
    run = LocalRun("s3://local-run/store", run="s3run")
    prepare_small_dataset(run.data_url)
    args = ["--config", "tiny", "--steps", "6", "--log-every", "3", "--checkpoint-every", "3"]
    result = _launch(run, 1, args, workdir=tmp_path / "work").wait(TIMEOUT_S)
    assert result.returncodes == [0]
    keys = {o["Key"] for o in s3_admin.list_objects_v2(Bucket="local-run")["Contents"]}
    assert {
        "store/checkpoints/local/s3run/step_00000003/COMMIT",
        "store/checkpoints/local/s3run/step_00000006/COMMIT",
        "store/models/local/s3run/latest",
        "store/models/local/s3run/versions/step-00000006/params.npz",
    } <= keys


def test_a_failing_process_stops_the_others(tmp_path: Path) -> None:
    run = LocalRun((tmp_path / "nodata").as_uri())
    result = _launch(run, 2, ARGS).wait(TIMEOUT_S)
    assert result.returncodes[0] == 2
    assert all(code != 0 for code in result.returncodes)


def test_layout_of_a_local_run() -> None:
    run = LocalRun("file:///tmp/store/", run="r1")
    assert run.data_url == "file:///tmp/store/datasets/pystdlib"
    assert run.checkpoint_url == "file:///tmp/store/checkpoints/local/r1"
    assert run.model_url == "file:///tmp/store/models/local/r1"
    envs = run.environments(2)
    assert [e.process_id for e in envs] == [0, 1]
    assert envs[0].coordinator_address == envs[1].coordinator_address
    assert envs[0].coordinator_address is not None
    assert envs[0].coordinator_address.startswith("127.0.0.1:")
    assert run.environments(1)[0].coordinator_address is None


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


@pytest.mark.parametrize("run", ["../../..", "..", "a/b", "", ".hidden"])
def test_a_run_name_is_one_segment_inside_the_store(tmp_path: Path, run: str) -> None:
    with pytest.raises(ValueError, match="is not a plain name"):
        LocalRun(tmp_path.as_uri(), run=run)
