"""The pipeline engine over random DAGs, with an in-memory fake executor (the engine is what is
under test; the real executors have their own tests): order, parallel branches, retries,
failures, resume after a crash at any point, and cache keys."""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from mlstack.workloads.pipeline import engine
from mlstack.workloads.pipeline.executor import StepCancelled, StepContext, StepFailed
from mlstack.workloads.pipeline.spec import Pipeline, Step

KINDS = ("prepare", "train", "evaluate", "select", "promote")
#: Bound on any wait in the fake executor: a broken engine fails the test, never hangs it.
WAIT_S = 10.0
#: How long the ready steps wait for each other to be running at once.
TOGETHER_S = 2.0


class Crash(BaseException):
    """The runner dying at this point (raised from the engine's own thread)."""


class FakeExecutor:
    """Runs nothing: records when each step starts and ends, and what had ended by then."""

    def __init__(self, fail: Mapping[str, int] | None = None) -> None:
        self.lock = threading.Lock()
        self.calls: list[str] = []
        self.ended: list[str] = []
        self.seen_ended: dict[str, set[str]] = {}
        self.running: set[str] = set()
        self.max_running = 0
        #: Step name -> how many of its attempts fail.
        self.fail = dict(fail or {})
        #: Called inside run() (tests that need steps to wait for each other).
        self.hold: Any = None

    def run(self, step: Step, ctx: StepContext) -> dict[str, Any]:
        with self.lock:
            self.calls.append(step.name)
            self.seen_ended[step.name] = set(self.ended)
            self.running.add(step.name)
            self.max_running = max(self.max_running, len(self.running))
        try:
            if self.hold is not None:
                self.hold(step, ctx)
            if self.fail.get(step.name, 0) >= ctx.attempt:
                raise StepFailed(f"{step.name} broke on attempt {ctx.attempt}")
            return {"by": step.name, "inputs": sorted(ctx.inputs)}
        finally:
            with self.lock:
                self.running.discard(step.name)
                self.ended.append(step.name)


def _always(pipeline: Pipeline, step: Step, outputs: Mapping[str, Any]) -> bool:
    return True


@st.composite
def dags(draw: st.DrawFn, max_steps: int = 7) -> Pipeline:
    """A pipeline of 1..max_steps steps with random `after` edges (always to an earlier step
    of a hidden order, so no cycles), random kinds and a shuffled declaration order."""
    count = draw(st.integers(1, max_steps))
    steps = []
    for index in range(count):
        after = draw(st.sets(st.integers(0, index - 1), max_size=3)) if index else set()
        kind = draw(st.sampled_from(KINDS))
        # "id": steps with the same kind, config and inputs share a cache key (one would reuse
        # the other's outputs), which is right, but not what these tests count.
        config: dict[str, Any] = {"id": index, "n": draw(st.integers(0, 3))}
        if kind == "prepare":
            config["dataset"] = "src"
        steps.append(
            Step(
                name=f"s{index}",
                kind=kind,
                after=tuple(f"s{j}" for j in sorted(after)),
                config=config,
                retries=0,
            )
        )
    steps = draw(st.permutations(steps))
    return Pipeline(
        name="p",
        team="t",
        model="m",
        work_url="",
        model_url="",
        datasets_url="",
        image="img",
        steps=tuple(steps),
    )


def _at(pipeline: Pipeline, root: Path) -> Pipeline:
    """`pipeline` with its store under `root`, and a source dataset for its prepare steps."""
    (root / "datasets" / "src").mkdir(parents=True, exist_ok=True)
    (root / "datasets" / "src" / "index.json").write_text('{"shards": []}')
    return replace(
        pipeline,
        work_url=(root / "work").as_uri(),
        model_url=(root / "models").as_uri(),
        datasets_url=(root / "datasets").as_uri(),
    )


def _run(pipeline: Pipeline, executor: FakeExecutor, **kwargs: Any) -> engine.RunState:
    options: dict[str, Any] = {"run_id": "r1", "say": lambda line: None, "check": _always}
    return engine.run_pipeline(pipeline, executor, **{**options, **kwargs})


def _descendants(pipeline: Pipeline, name: str) -> set[str]:
    found = {name}
    changed = True
    while changed:
        changed = False
        for step in pipeline.steps:
            if step.name not in found and found.intersection(step.after):
                found.add(step.name)
                changed = True
    return found


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags())
def test_every_step_runs_once_after_all_it_waits_for(pipeline: Pipeline) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        executor = FakeExecutor()
        state = _run(_at(pipeline, Path(tmp)), executor)
        assert state.status == "succeeded"
        assert sorted(executor.calls) == sorted(step.name for step in pipeline.steps)
        for step in pipeline.steps:
            assert set(step.after) <= executor.seen_ended[step.name], step.name
            assert state.steps[step.name].outputs == {"by": step.name, "inputs": sorted(step.after)}
        saved = json.loads((Path(tmp) / "work/runs/r1/state.json").read_text())
        assert saved["status"] == "succeeded"


# No shrinking: a timing failure does not get simpler, only slower to report.
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
)
@given(dags(), st.integers(1, 4))
def test_independent_ready_steps_run_at_the_same_time(pipeline: Pipeline, parallel: int) -> None:
    """Every step with nothing to wait for is ready at the start: each waits (bounded) until
    min(roots, max_parallel) of them are running together; a serial engine never gets there."""
    roots = [step.name for step in pipeline.steps if not step.after]
    want = min(len(roots), parallel)
    executor = FakeExecutor()
    together = threading.Event()
    gave_up = threading.Event()

    def hold(step: Step, ctx: StepContext) -> None:
        if step.name not in roots:
            return
        # Short and given up once per example: a serial engine fails in seconds, even while
        # hypothesis shrinks the example.
        deadline = time.monotonic() + TOGETHER_S
        while not together.is_set() and not gave_up.is_set():
            with executor.lock:
                if len(executor.running) >= want:
                    together.set()
            if time.monotonic() > deadline:
                gave_up.set()
            time.sleep(0.002)

    executor.hold = hold
    with tempfile.TemporaryDirectory() as tmp:
        state = _run(_at(pipeline, Path(tmp)), executor, max_parallel=parallel)
    assert state.status == "succeeded"
    assert together.is_set()
    assert want <= executor.max_running <= parallel


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags(), st.data())
def test_a_resume_after_a_crash_reruns_exactly_the_unfinished_steps(
    pipeline: Pipeline, data: st.DataObject
) -> None:
    """The runner dies after its k-th progress line (each comes right after a state write);
    a rerun of the same run id runs exactly the steps the saved state had not finished."""
    crash_at = data.draw(st.integers(1, 2 * len(pipeline.steps)))
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        if len(lines) == crash_at:
            raise Crash

    with tempfile.TemporaryDirectory() as tmp:
        at = _at(pipeline, Path(tmp))
        first = FakeExecutor()
        with pytest.raises(Crash):
            _run(at, first, say=say, max_parallel=2)
        saved = engine.load_state(engine.run_url(at, "r1"))
        assert saved is not None
        unfinished = {name for name, step in saved.steps.items() if step.status not in engine.DONE}
        second = FakeExecutor()
        state = _run(at, second)
        assert state.status == "succeeded"
        assert sorted(second.calls) == sorted(unfinished)
        assert all(step.status in engine.DONE for step in state.steps.values())


@settings(max_examples=60, deadline=None)
@given(dags(), st.data())
def test_a_config_change_invalidates_exactly_the_step_and_its_descendants(
    pipeline: Pipeline, data: st.DataObject
) -> None:
    changed = data.draw(st.sampled_from([step.name for step in pipeline.steps]))
    edited = replace(
        pipeline,
        steps=tuple(
            replace(step, config={**step.config, "n": step.config["n"] + 1})
            if step.name == changed
            else step
            for step in pipeline.steps
        ),
    )
    before = engine.cache_keys(pipeline, {})
    after = engine.cache_keys(edited, {})
    moved = {name for name in before if before[name] != after[name]}
    assert moved == _descendants(pipeline, changed)


@settings(max_examples=30, deadline=None)
@given(dags())
def test_a_new_source_dataset_invalidates_the_prepare_steps_and_their_descendants(
    pipeline: Pipeline,
) -> None:
    url = engine.source_url(pipeline, Step(name="x", kind="prepare", config={"dataset": "src"}))
    before = engine.cache_keys(pipeline, {url: "a" * 64})
    after = engine.cache_keys(pipeline, {url: "b" * 64})
    expected: set[str] = set()
    for step in pipeline.steps:
        if step.kind == "prepare":
            expected |= _descendants(pipeline, step.name)
    assert {name for name in before if before[name] != after[name]} == expected


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags())
def test_a_second_run_reuses_the_cache_and_runs_only_select_and_promote(
    pipeline: Pipeline,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        at = _at(pipeline, Path(tmp))
        _run(at, FakeExecutor(), run_id="r1")
        again = FakeExecutor()
        state = _run(at, again, run_id="r2")
    assert state.status == "succeeded"
    assert sorted(again.calls) == sorted(
        step.name for step in pipeline.steps if step.kind in ("select", "promote")
    )
    for step in pipeline.steps:
        expected = "succeeded" if step.kind in ("select", "promote") else "cached"
        assert state.steps[step.name].status == expected


def _chain(tmp: Path, *steps: Step) -> Pipeline:
    return _at(
        Pipeline(
            name="p",
            team="t",
            model="m",
            work_url="",
            model_url="",
            datasets_url="",
            image="img",
            steps=steps,
        ),
        tmp,
    )


def test_a_stale_cache_entry_runs_the_step_again(tmp_path: Path) -> None:
    """A cache entry whose outputs are gone (a deleted version) is a miss."""
    pipeline = _chain(tmp_path, Step(name="a", kind="train", config={"n": 1}))
    _run(pipeline, FakeExecutor(), run_id="r1")
    again = FakeExecutor()
    state = _run(pipeline, again, run_id="r2", check=lambda p, s, o: False)
    assert again.calls == ["a"]
    assert state.steps["a"].status == "succeeded"


def test_the_default_check_looks_for_the_bundle(tmp_path: Path) -> None:
    pipeline = _chain(tmp_path, Step(name="a", kind="train"))
    step = pipeline.step("a")
    outputs = {"version": "r1.a"}
    assert not engine.outputs_exist(pipeline, step, outputs)
    bundle = tmp_path / "models/versions/r1.a/bundle.json"
    bundle.parent.mkdir(parents=True)
    bundle.write_text("{}")
    assert engine.outputs_exist(pipeline, step, outputs)


def test_a_failing_step_is_retried_then_fails_the_run_after_running_branches_end(
    tmp_path: Path,
) -> None:
    pipeline = _chain(
        tmp_path,
        Step(name="bad", kind="train", retries=2),
        Step(name="slow", kind="train"),
        Step(name="after-slow", kind="evaluate", after=("slow",)),
        Step(name="after-bad", kind="evaluate", after=("bad",)),
    )
    executor = FakeExecutor(fail={"bad": 5})
    slow_may_end = threading.Event()

    def hold(step: Step, ctx: StepContext) -> None:
        if step.name == "slow":
            slow_may_end.wait(WAIT_S)
        elif step.name == "bad" and ctx.attempt == 3:
            slow_may_end.set()

    executor.hold = hold
    lines: list[str] = []
    state = _run(pipeline, executor, say=lines.append)
    assert state.status == "failed"
    assert executor.calls.count("bad") == 3
    assert state.steps["bad"].status == "failed"
    assert state.steps["bad"].error == "bad broke on attempt 3"
    # The running branch finished (and is cached for a rerun); nothing new started.
    assert state.steps["slow"].status == "succeeded"
    assert state.steps["after-slow"].status == "pending"
    assert state.steps["after-bad"].status == "pending"
    assert "bad: failed: bad broke on attempt 3" in lines


def test_a_stop_cancels_running_steps_and_leaves_them_to_a_rerun(tmp_path: Path) -> None:
    pipeline = _chain(
        tmp_path, Step(name="a", kind="train"), Step(name="b", kind="select", after=("a",))
    )
    stop = threading.Event()
    executor = FakeExecutor()

    def hold(step: Step, ctx: StepContext) -> None:
        stop.set()
        if not ctx.cancel.wait(WAIT_S):
            raise AssertionError("the engine never cancelled the running step")
        raise StepCancelled("asked to stop")

    executor.hold = hold
    state = _run(pipeline, executor, stop=stop)
    assert state.status == "stopped"
    assert state.steps["a"].status == "pending"
    executor.hold = None
    resumed = _run(pipeline, executor)
    assert resumed.status == "succeeded"
    assert executor.calls == ["a", "a", "b"]


@pytest.mark.parametrize("name", ["state.json", "pipeline.json"])
def test_a_corrupt_run_file_is_reported_with_its_url_and_left_alone(
    tmp_path: Path, name: str
) -> None:
    pipeline = _chain(tmp_path, Step(name="a", kind="train"))
    _run(pipeline, FakeExecutor())
    path = tmp_path / "work/runs/r1" / name
    path.write_text("{not json")
    with pytest.raises(engine.RunStateError) as raised:
        _run(pipeline, FakeExecutor())
    message = str(raised.value)
    assert path.as_uri() in message
    assert "\n" not in message
    assert path.read_text() == "{not json"


def test_a_missing_source_dataset_is_one_line_naming_it(tmp_path: Path) -> None:
    pipeline = _chain(tmp_path, Step(name="d", kind="prepare", config={"dataset": "nope"}))
    with pytest.raises(engine.StoreError, match=r"no dataset at file://.*/datasets/nope/index"):
        _run(pipeline, FakeExecutor())


def test_run_ids_sort_by_start_and_runs_are_listed_oldest_first(tmp_path: Path) -> None:
    run_id = engine.new_run_id()
    assert len(run_id) == len("20260101T000000Z-abcd")
    pipeline = _chain(tmp_path, Step(name="a", kind="select"))
    for run in ("20260101T000000Z-0001", "20250101T000000Z-0002"):
        _run(pipeline, FakeExecutor(), run_id=run)
    assert engine.list_runs(pipeline) == ["20250101T000000Z-0002", "20260101T000000Z-0001"]


def test_a_second_runner_on_the_same_run_stops_and_leaves_the_state_to_the_first(
    tmp_path: Path,
) -> None:
    """Two runners of one run (a run started by hand while the schedule's runner drives it):
    the one whose state.json write finds the file changed by the other stops with RunTaken and
    writes nothing more, so neither overwrites the other's progress."""
    pipeline = _chain(
        tmp_path, Step(name="a", kind="train"), Step(name="b", kind="select", after=("a",))
    )
    state_file = tmp_path / "work/runs/r1/state.json"
    first_started = threading.Event()
    second_done = threading.Event()
    outcome: dict[str, Any] = {}

    def first_hold(step: Step, ctx: StepContext) -> None:
        if step.name == "a":
            first_started.set()
            if not second_done.wait(WAIT_S):
                raise AssertionError("the second runner never ended")

    def first() -> None:
        executor = FakeExecutor()
        executor.hold = first_hold
        try:
            outcome["first"] = _run(pipeline, executor)
        except engine.RunStateError as exc:
            outcome["first"] = exc

    runner = threading.Thread(target=first, daemon=True)
    runner.start()
    assert first_started.wait(WAIT_S)
    # The second runner resumes the same run: it reads the state the first one wrote, and
    # runs `a` too; its writes win, and the first one's next write finds the file changed.
    second = _run(pipeline, FakeExecutor())
    written = state_file.read_text()
    second_done.set()
    runner.join(WAIT_S)
    assert not runner.is_alive()
    assert second.status == "succeeded"
    taken = outcome["first"]
    assert isinstance(taken, engine.RunTaken), taken
    message = str(taken)
    assert state_file.as_uri() in message and "another runner" in message
    assert "\n" not in message
    assert state_file.read_text() == written, "the runner that lost wrote over the state"


def test_two_new_runs_of_one_id_cannot_both_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = _chain(tmp_path, Step(name="a", kind="train"))
    started = threading.Event()
    executor = FakeExecutor()
    executor.hold = lambda step, ctx: started.set()
    original = engine._load_state  # pyright: ignore[reportPrivateUsage]

    def racing(store: Any) -> Any:
        """Another runner creates the run's state between this one's read and first write."""
        found = original(store)
        state_file = tmp_path / "work/runs/r1/state.json"
        state_file.parent.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps(engine.RunState("p", "r1").to_json()))
        return found

    monkeypatch.setattr(engine, "_load_state", racing)
    with pytest.raises(engine.RunTaken):
        _run(pipeline, executor)
    assert not started.is_set(), "a step ran although the run was taken"
