"""The local executor and the step entry point on real processes: a select step's choice, a
failed step's one line and log, a stop that ends the step, a runner killed outright that takes
its step's processes with it, and the local overrides of train steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mlstack.workloads.pipeline import local as local_executor
from mlstack.workloads.pipeline.engine import RunState, StepState
from mlstack.workloads.pipeline.executor import StepCancelled, StepCommand, StepContext, StepFailed
from mlstack.workloads.pipeline.local import LocalExecutor, localize, summary
from mlstack.workloads.pipeline.spec import Pipeline, Step
from mlstack.workloads.pipeline.step import command_for

#: Bound on every wait here: seconds, where a broken stop would hang for a minute.
BOUND_S = 30


def _pipeline(root: Path, *steps: Step) -> Pipeline:
    return Pipeline(
        name="nightly",
        team="language",
        model="lm",
        work_url=(root / "work").as_uri(),
        model_url=(root / "models").as_uri(),
        datasets_url=(root / "datasets").as_uri(),
        image="local",
        steps=steps,
    )


STEPS = (
    Step(name="data", kind="prepare", config={"dataset": "src", "test_fraction": 0.1}),
    Step(
        name="a",
        kind="train",
        after=("data",),
        config={
            "model": "small",
            "steps": 1000,
            "learning_rate": 0.01,
            "num_hosts": 4,
            "global_batch_size": 64,
            "fsdp": 4,
            "dtype": "bfloat16",
            "seed": 1,
            "eval_every_steps": 100,
            "checkpoint_every_steps": 500,
        },
    ),
    Step(name="eval", kind="evaluate", after=("a",)),
    Step(name="pick", kind="select", after=("eval",), config={"min_improvement": 0.1}),
)


def _context(pipeline: Pipeline, step: str, **inputs: dict[str, Any]) -> StepContext:
    """A run whose earlier steps are done with `inputs`, as the engine leaves it."""
    run_url = f"{pipeline.work_url}/runs/r1"
    run_dir = Path(run_url.removeprefix("file://"))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "pipeline.json").write_text(pipeline.dumps())
    state = RunState(pipeline.name, "r1", steps={s.name: StepState() for s in pipeline.steps})
    state.steps[step].key = "k" * 64
    (run_dir / "state.json").write_text(json.dumps(state.to_json()))
    for name, outputs in inputs.items():
        (run_dir / "steps" / name).mkdir(parents=True, exist_ok=True)
        (run_dir / "steps" / name / "output.json").write_text(json.dumps(outputs))
    return StepContext(
        pipeline=pipeline,
        run_id="r1",
        run_url=run_url,
        key="k" * 64,
        attempt=1,
        inputs=inputs,
        say=lambda line: None,
    )


def _champion(pipeline: Pipeline, version: str, loss: float) -> None:
    from mlstack.workloads.registry import Registry
    from mlstack.workloads.storage import open_store

    root = Path(pipeline.model_url.removeprefix("file://"))
    evals = root / "versions" / version / "evals"
    evals.mkdir(parents=True, exist_ok=True)
    (evals / "test.json").write_text(json.dumps({"loss": loss, "perplexity": 2.0}))
    (root / "versions" / version / "bundle.json").write_text(json.dumps({"version": version}))
    Registry(open_store(pipeline.model_url)).move_alias("champion", version, by="test")


EVALS = {
    "evals": {
        "r1.a": {"test.loss": 2.0, "test.perplexity": 7.4},
        "r1.b": {"test.loss": 1.5, "test.perplexity": 4.5},
    }
}


def test_select_picks_the_lowest_loss_when_there_is_no_champion(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path, *STEPS)
    ctx = _context(pipeline, "pick", eval=EVALS)
    outputs = LocalExecutor().run(pipeline.step("pick"), ctx)
    assert outputs["selected"] == "r1.b"
    assert outputs["value"] == 1.5
    assert outputs["champion"] is None
    written = json.loads((tmp_path / "work/runs/r1/steps/pick/output.json").read_text())
    assert written == outputs


@pytest.mark.parametrize(("champion_loss", "selected"), [(1.55, None), (1.7, "r1.b")])
def test_select_needs_the_margin_over_the_champion(
    tmp_path: Path, champion_loss: float, selected: str | None
) -> None:
    pipeline = _pipeline(tmp_path, *STEPS)
    _champion(pipeline, "old", champion_loss)
    outputs = LocalExecutor().run(pipeline.step("pick"), _context(pipeline, "pick", eval=EVALS))
    assert outputs["selected"] == selected
    assert outputs["champion"] == "old"
    assert outputs["champion_value"] == champion_loss


def test_a_failed_step_is_one_line_naming_its_log(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path, *STEPS)
    ctx = _context(pipeline, "pick")  # the evaluate step's output.json is missing
    with pytest.raises(StepFailed) as raised:
        LocalExecutor().run(pipeline.step("pick"), ctx)
    message = str(raised.value)
    log = tmp_path / "work/runs/r1/steps/pick/attempt-1.log"
    assert "\n" not in message
    assert "steps/eval/output.json is missing" in message
    assert f"(log: {log.as_uri()})" in message
    assert "error: " in log.read_text()


def _sleeper(monkeypatch: pytest.MonkeyPatch, pid_file: Path) -> None:
    """Make every step one process that writes its pid and sleeps (TERM or not)."""
    code = textwrap.dedent(
        f"""
        import os, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        time.sleep(120)
        """
    )
    monkeypatch.setattr(
        local_executor,
        "command_for",
        lambda step, ctx: StepCommand(argv=("python", "-c", code), env={}),
    )


def _wait_for(path: Path) -> int:
    deadline = time.monotonic() + BOUND_S
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_stop_ends_the_step_and_removes_its_scratch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step ignores SIGTERM: it is killed after the grace, and its scratch goes with it."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    pid_file = tmp_path / "pid"
    _sleeper(monkeypatch, pid_file)
    pipeline = _pipeline(tmp_path, *STEPS)
    ctx = _context(pipeline, "pick", eval=EVALS)
    executor = LocalExecutor(stop_grace_s=1.0)
    raised: list[BaseException] = []

    def run() -> None:
        try:
            executor.run(pipeline.step("pick"), ctx)
        except BaseException as exc:
            raised.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    pid = _wait_for(pid_file)
    try:
        ctx.cancel.set()
        worker.join(BOUND_S)
        assert not worker.is_alive()
        assert isinstance(raised[0], StepCancelled)
        assert not _alive(pid)
        assert list(scratch.iterdir()) == []
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_runner_killed_outright_takes_its_step_with_it(tmp_path: Path) -> None:
    """SIGKILL cannot be caught: the step's process dies with the runner (no orphan)."""
    pid_file = tmp_path / "pid"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import pytest
        from pathlib import Path
        import test_local_executor as t
        from mlstack.workloads.pipeline.local import LocalExecutor
        monkeypatch = pytest.MonkeyPatch()
        t._sleeper(monkeypatch, Path({str(pid_file)!r}))
        pipeline = t._pipeline(Path({str(tmp_path)!r}), *t.STEPS)
        LocalExecutor().run(pipeline.step("pick"), t._context(pipeline, "pick", eval=t.EVALS))
        """
    )
    # A runner killed outright cannot remove its step's scratch: keep it in tmp_path.
    (tmp_path / "tmp").mkdir()
    runner = subprocess.Popen(
        [sys.executable, "-c", script],
        start_new_session=True,
        env={**os.environ, "TMPDIR": str(tmp_path / "tmp")},
    )
    pid = None
    try:
        pid = _wait_for(pid_file)
        assert _alive(pid)
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait(BOUND_S)
        deadline = time.monotonic() + BOUND_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), "the step outlived its runner"
    finally:
        runner.kill()
        runner.wait(BOUND_S)
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_localize_puts_train_steps_on_local_processes_with_the_local_model(
    tmp_path: Path,
) -> None:
    pipeline = localize(_pipeline(tmp_path, *STEPS), model="tiny", steps=20, processes=2)
    config = pipeline.step("a").config
    assert config["model"] == "tiny"
    assert config["num_hosts"] == 2
    assert config["steps"] == 20
    assert (config["global_batch_size"], config["fsdp"], config["dtype"]) == (None, None, None)
    assert (config["learning_rate"], config["seed"]) == (0.01, 1)
    assert (config["eval_every_steps"], config["checkpoint_every_steps"]) == (20, 20)
    assert pipeline.step("pick") == STEPS[3]
    kept = localize(_pipeline(tmp_path, *STEPS), model=None, steps=None, processes=1)
    assert kept.step("a").config["model"] == "small"
    assert kept.step("a").config["global_batch_size"] == 64


def test_command_for_train_is_the_training_entry_point_with_the_contract(tmp_path: Path) -> None:
    pipeline = localize(_pipeline(tmp_path, *STEPS), model="tiny", steps=20, processes=2)
    _champion(pipeline, "old", 1.0)
    ctx = _context(
        pipeline, "a", data={"train_url": "file:///d/train", "test_url": "file:///d/test"}
    )
    command = command_for(pipeline.step("a"), ctx)
    assert command.argv[:3] == ("python", "-m", "mlstack.workloads.train.main")
    argv = " ".join(command.argv)
    assert "--config tiny --steps 20 --learning-rate 0.01" in argv
    assert "--global-batch-size" not in argv
    assert "--version r1.a" in argv
    assert "--eval-every 20" in argv
    assert command.processes == 2
    assert command.env == {
        "MLSTACK_PIPELINE_RUN_URL": ctx.run_url,
        "MLSTACK_PIPELINE_STEP": "a",
        "MLSTACK_DATA_URL": "file:///d/train",
        "MLSTACK_EVAL_DATA_URL": "file:///d/test",
        "MLSTACK_CHECKPOINT_URL": f"{ctx.run_url}/steps/a/checkpoints",
        "MLSTACK_MODEL_URL": pipeline.model_url,
        "MLSTACK_IMAGE": "local",
        "MLSTACK_PIPELINE_RUN": "nightly/r1/a",
        "MLSTACK_PARENT_VERSION": "old",
    } | (
        {"MLSTACK_GIT_COMMIT": os.environ["MLSTACK_GIT_COMMIT"]}
        if os.environ.get("MLSTACK_GIT_COMMIT")
        else {}
    )
    other = command_for(pipeline.step("pick"), ctx)
    assert other.argv == (
        "python",
        "-m",
        "mlstack.workloads.pipeline.step",
        "--run-url",
        ctx.run_url,
        "--step",
        "pick",
    )


def test_the_summary_names_each_step_the_selection_and_the_moves(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path, *STEPS, Step(name="ship", kind="promote", after=("pick",)))
    state = RunState(pipeline.name, "r1", status="succeeded")
    state.steps = {s.name: StepState(status="cached") for s in pipeline.steps}
    state.steps["pick"] = StepState(
        "succeeded", 1, None, {"selected": "r1.b", "reason": "best"}, 10.0, 12.5
    )
    state.steps["ship"] = StepState(
        "succeeded",
        1,
        None,
        {"moves": [{"alias": "canary", "from": None, "to": "r1.b"}], "skipped": None},
        1.0,
        2.0,
    )
    lines = summary(pipeline, state)
    assert lines[0] == "run r1: succeeded"
    assert any(line.split() == ["pick", "select", "succeeded", "in", "2.5", "s"] for line in lines)
    assert "selected: r1.b (best)" in lines
    assert "alias canary: (unset) -> r1.b" in lines


def _versions(pipeline: Pipeline, *names: str) -> None:
    for name in names:
        root = Path(pipeline.model_url.removeprefix("file://")) / "versions" / name
        root.mkdir(parents=True, exist_ok=True)
        (root / "bundle.json").write_text(json.dumps({"version": name}))


def _alias(pipeline: Pipeline, name: str) -> str | None:
    from mlstack.workloads.registry import Registry
    from mlstack.workloads.storage import open_store

    found = Registry(open_store(pipeline.model_url)).alias(name)
    return found.version if found is not None else None


SOAKED = Step(
    name="ship",
    kind="promote",
    after=("pick",),
    config={"alias": "canary", "then_alias": "champion", "soak_s": 3},
)


def test_a_soaked_promotion_moves_canary_then_champion(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path, *STEPS, SOAKED)
    _versions(pipeline, "r1.b")
    ctx = _context(pipeline, "ship", pick={"selected": "r1.b", "reason": "best"})
    outputs = LocalExecutor().run(pipeline.step("ship"), ctx)
    assert [(m["alias"], m["to"]) for m in outputs["moves"]] == [
        ("canary", "r1.b"),
        ("champion", "r1.b"),
    ]
    assert outputs["skipped"] is None
    assert (_alias(pipeline, "canary"), _alias(pipeline, "champion")) == ("r1.b", "r1.b")


def test_a_canary_rolled_back_during_the_soak_keeps_the_champion(tmp_path: Path) -> None:
    from mlstack.workloads.registry import Registry
    from mlstack.workloads.storage import open_store

    pipeline = _pipeline(tmp_path, *STEPS, SOAKED)
    _versions(pipeline, "r1.b", "old")
    registry = Registry(open_store(pipeline.model_url))
    registry.move_alias("champion", "old", by="test", reason="the champion before")
    registry.move_alias("canary", "old", by="test", reason="the canary before")
    ctx = _context(pipeline, "ship", pick={"selected": "r1.b", "reason": "best"})

    def operator_rolls_back() -> None:
        deadline = time.monotonic() + BOUND_S
        while _alias(pipeline, "canary") != "r1.b" and time.monotonic() < deadline:
            time.sleep(0.05)
        registry.rollback("canary", by="ops", reason="errors up")

    watcher = threading.Thread(target=operator_rolls_back, daemon=True)
    watcher.start()
    outputs = LocalExecutor().run(pipeline.step("ship"), ctx)
    watcher.join(BOUND_S)
    assert [(m["alias"], m["to"]) for m in outputs["moves"]] == [("canary", "r1.b")]
    assert "no longer names r1.b after the 3 s soak" in outputs["skipped"]
    assert (_alias(pipeline, "canary"), _alias(pipeline, "champion")) == ("old", "old")
