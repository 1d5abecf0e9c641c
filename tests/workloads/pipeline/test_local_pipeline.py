"""`mlstack local pipeline` end to end with `tiny`: prepare, two candidates, evaluate, select,
promote to the canary; a rerun with nothing changed skipped by the cache; the command's
process group killed with SIGKILL mid-run, then a resume that finishes without redoing the
steps that had finished.

The stack is onprem-lab with a small nightly pipeline added (two tiny candidates that differ
in learning rate), written to a temporary stack file; the store is a temporary directory with
a small prepared dataset."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.stacks.test_cli_local_signals import _alive, _descendants
from tests.workloads.train.conftest import prepare_small_dataset

MLSTACK = Path(sys.executable).parent / "mlstack"
ROOT = Path(__file__).resolve().parents[3]
#: The whole first run on two shared CPU cores takes about a minute; minutes mean a hang.
RUN_TIMEOUT_S = 400
TRAIN = {"kind": "train", "after": ["data"], "pool": "a100", "model": "tiny", "steps": 4}
NIGHTLY = {
    "name": "nightly",
    "team": "language",
    "model": "lm-nightly",
    "pool": "cpu",
    "steps": [
        {"name": "data", "kind": "prepare", "dataset": "email", "test_fraction": 0.1},
        {**TRAIN, "name": "slow-lr", "learning_rate": 1.0e-4},
        {**TRAIN, "name": "fast-lr", "learning_rate": 1.0e-2},
        {"name": "eval", "kind": "evaluate", "after": ["slow-lr", "fast-lr"], "max_batches": 2},
        {"name": "pick", "kind": "select", "after": ["eval"], "metric": "test.loss"},
        {"name": "ship", "kind": "promote", "after": ["pick"], "alias": "canary"},
    ],
}


@pytest.fixture(scope="module")
def stack_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = yaml.safe_load((ROOT / "stacks/Pulumi.onprem-lab.yaml").read_text())
    data["config"]["mlstack:platform"]["workloads"]["pipelines"] = [NIGHTLY]
    path = tmp_path_factory.mktemp("stack") / "Pulumi.lab-pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    prepare_small_dataset((store / "datasets" / "email").as_uri())
    return store


def _mlstack(stack: Path, store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(MLSTACK), "local", "pipeline", str(stack), "nightly", "--store", str(store)]
    return subprocess.run(
        [*argv, "--processes", "1", *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env={**os.environ, "TMPDIR": str(store.parent / "tmp")},
        check=False,
    )


def _runs(store: Path) -> Path:
    return store / "checkpoints/language/pipelines/nightly/runs"


def _state(store: Path, run: str) -> dict[str, Any]:
    return json.loads((_runs(store) / run / "state.json").read_text())


def _models(store: Path) -> Path:
    return store / "models/language/lm-nightly"


def test_the_loop_promotes_the_better_candidate_and_a_rerun_is_cached(
    stack_file: Path, tmp_path: Path
) -> None:
    store = _store(tmp_path)
    (tmp_path / "tmp").mkdir()
    first = _mlstack(stack_file, store, "--run", "first")
    assert first.returncode == 0, first.stdout + first.stderr
    state = _state(store, "first")
    assert {name: step["status"] for name, step in state["steps"].items()} == dict.fromkeys(
        ("data", "slow-lr", "fast-lr", "eval", "pick", "ship"), "succeeded"
    )
    for name in ("slow-lr", "fast-lr"):
        assert state["steps"][name]["outputs"] == {
            "version": f"first.{name}",
            "model_url": _models(store).as_uri(),
            "step": TRAIN["steps"],
        }
    evals = state["steps"]["eval"]["outputs"]["evals"]
    better = min(evals, key=lambda version: evals[version]["test.loss"])
    assert set(evals) == {"first.slow-lr", "first.fast-lr"}
    assert state["steps"]["pick"]["outputs"]["selected"] == better
    canary = json.loads((_models(store) / "aliases/canary.json").read_text())
    assert canary["version"] == better
    for version in evals:
        assert (_models(store) / "versions" / version / "evals/test.json").is_file()
    assert f"alias canary: (unset) -> {better}" in first.stdout
    assert list((tmp_path / "tmp").iterdir()) == []

    again = _mlstack(stack_file, store, "--run", "second")
    assert again.returncode == 0, again.stdout + again.stderr
    steps = _state(store, "second")["steps"]
    assert [steps[n]["status"] for n in ("data", "slow-lr", "fast-lr", "eval")] == ["cached"] * 4
    assert steps["pick"]["outputs"]["selected"] == better
    assert "aliases unchanged" in again.stdout


def test_a_run_killed_outright_resumes_without_redoing_finished_steps(
    stack_file: Path, tmp_path: Path
) -> None:
    store = _store(tmp_path)
    (tmp_path / "tmp").mkdir()
    argv = [str(MLSTACK), "local", "pipeline", str(stack_file), "nightly", "--store", str(store)]
    proc = subprocess.Popen(
        [*argv, "--processes", "1", "--run", "killed"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TMPDIR": str(tmp_path / "tmp")},
        start_new_session=True,
    )
    try:
        # Kill it once the prepare step is done and the candidates are training.
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline:
            state_file = _runs(store) / "killed/state.json"
            steps = json.loads(state_file.read_text())["steps"] if state_file.exists() else {}
            if steps.get("slow-lr", {}).get("status") == "running":
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.1)
        children = _descendants(proc.pid)
        assert children, "the training processes were not found"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        # The training processes have their own sessions (Ctrl-C reaches the runner only), so
        # the group kill does not reach them: they die with their parent thread.
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in children if _alive(pid)], "orphaned step processes"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    before = _state(store, "killed")
    assert before["steps"]["data"]["status"] == "succeeded"
    assert before["steps"]["slow-lr"]["status"] == "running"
    # No --run: the newest unfinished run is resumed.
    resumed = _mlstack(stack_file, store)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "run killed of pipeline nightly" in resumed.stdout
    after = _state(store, "killed")
    assert after["status"] == "succeeded"
    assert after["steps"]["data"]["attempts"] == 1
    assert after["steps"]["data"]["finished"] == before["steps"]["data"]["finished"]
    assert after["steps"]["slow-lr"]["attempts"] == 2
    assert "data: started" not in resumed.stdout
