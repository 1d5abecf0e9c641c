"""The pipeline engine: which step runs when, how often, and what a run has done so far.

One run of a pipeline lives under `<work_url>/runs/<run-id>/`: `pipeline.json` (the pipeline
the run started with, written first and read back by every resume) and `state.json` (every
step's status, attempts, cache key, outputs, times and error), rewritten atomically after
every change, so that a runner killed at any moment leaves a state that a rerun of the same
run id resumes: steps that succeeded (or were cached) are kept, the others (pending, running
when it died, failed) run again.

Order and parallelism: a step starts once every step it waits for (`after`) has succeeded;
independent branches run at the same time, one worker thread per running step (the executor
blocks in it), at most `max_parallel` at once. A failed step is retried `Step.retries` times;
when it still fails the run fails, but only after the steps already running have ended: they
are left to finish (their results are cached and a rerun reuses them) and nothing new starts.

Cache: a step of a cacheable kind (prepare, train, evaluate) has a key, the sha256 of its
kind, config, the image, the source dataset's index checksum (prepare) and the keys of the
steps it waits for; so changing one step's config changes its key and every descendant's, and
nothing else. A finished cacheable step's outputs go to `<work_url>/cache/<key>.json`; a later
run finds them there and does not run the step again (status `cached`), provided what the
outputs point at still exists (the split's index.json, the version's bundle.json, the eval
files). select and promote read the registry's aliases, which move, so they always run.
"""

from __future__ import annotations

import hashlib
import json
import queue
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

from mlstack.workloads.pipeline.executor import Executor, StepCancelled, StepContext, StepFailed
from mlstack.workloads.pipeline.spec import (
    CACHEABLE_KINDS,
    NAME,
    Pipeline,
    SpecError,
    Step,
    topological_order,
)
from mlstack.workloads.storage import NotFound, Precondition, Store, StoreError, open_store

StepStatus = Literal["pending", "running", "succeeded", "cached", "failed"]
RunStatus = Literal["running", "succeeded", "failed", "stopped"]
STEP_STATUSES: tuple[str, ...] = get_args(StepStatus)
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
#: Statuses of a step whose outputs the run has.
DONE = frozenset({"succeeded", "cached"})
STATE_FORMAT = "mlstack-pipeline-run"


class RunStateError(Exception):
    """A run's state.json or pipeline.json cannot be read; one line naming its URL. The file
    is left as it is: a person decides what to do with it."""


class RunTaken(RunStateError):  # noqa: N818 - reads as `engine.RunTaken`
    """Another runner wrote this run's state.json since this one last read or wrote it (a run
    started by hand while the schedule's runner drives it, say): this runner stops at once,
    touching neither the file nor the steps, and leaves the run to the other."""


@dataclass
class StepState:
    status: StepStatus = "pending"
    attempts: int = 0
    key: str | None = None
    outputs: dict[str, Any] | None = None
    started: float | None = None
    finished: float | None = None
    error: str | None = None

    @property
    def seconds(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "attempts": self.attempts,
            "key": self.key,
            "outputs": self.outputs,
            "started": self.started,
            "finished": self.finished,
            "error": self.error,
        }


@dataclass
class RunState:
    """What one run has done: the steps' states in topological order of the pipeline."""

    pipeline: str
    run_id: str
    status: RunStatus = "running"
    started: float = field(default_factory=time.time)
    finished: float | None = None
    #: The source datasets' index checksums when the run started, by dataset URL: the prepare
    #: keys of a resumed run stay those of its start.
    sources: dict[str, str] = field(default_factory=dict)
    steps: dict[str, StepState] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "pipeline": self.pipeline,
            "run_id": self.run_id,
            "status": self.status,
            "started": self.started,
            "finished": self.finished,
            "sources": dict(self.sources),
            "steps": {name: step.to_json() for name, step in self.steps.items()},
        }

    @classmethod
    def from_json(cls, data: Any) -> RunState:
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise ValueError("not an mlstack pipeline run state")
        if data["status"] not in RUN_STATUSES or any(
            raw["status"] not in STEP_STATUSES for raw in data["steps"].values()
        ):
            raise ValueError("a status is not one of the known ones")
        steps = {
            str(name): StepState(
                status=cast(StepStatus, raw["status"]),
                attempts=int(raw["attempts"]),
                key=raw.get("key"),
                outputs=raw.get("outputs"),
                started=raw.get("started"),
                finished=raw.get("finished"),
                error=raw.get("error"),
            )
            for name, raw in data["steps"].items()
        }
        return cls(
            pipeline=str(data["pipeline"]),
            run_id=str(data["run_id"]),
            status=cast(RunStatus, data["status"]),
            started=float(data["started"]),
            finished=data.get("finished"),
            sources={str(k): str(v) for k, v in dict(data.get("sources") or {}).items()},
            steps=steps,
        )


def new_run_id() -> str:
    """`YYYYMMDDTHHMMSSZ-<4 hex>`: sorts by start time; the suffix keeps two runs started in
    the same second apart."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(2)


def run_url(pipeline: Pipeline, run_id: str) -> str:
    return f"{pipeline.work_url.rstrip('/')}/runs/{run_id}"


def load_state(url: str) -> RunState | None:
    """The state of the run at `url` (`<work_url>/runs/<id>`), None when it has none yet;
    RunStateError (naming the file's URL) when state.json is there but unreadable."""
    return _load_state(open_store(url))[0]


def _load_state(store: Store) -> tuple[RunState | None, str | None]:
    """The run's state and the token of the state.json it was read from (for the
    compare-and-swap of the next write), (None, None) when it has none yet."""
    try:
        raw, token = store.get_with_token("state.json")
    except NotFound:
        return None, None
    try:
        return RunState.from_json(json.loads(raw)), token
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RunStateError(
            f"{store.url('state.json')} is corrupt ({type(exc).__name__}: {exc}); it is left "
            "as it is: fix: move it aside to rerun the run from scratch, or start a new run"
        ) from None


def load_pipeline(url: str) -> Pipeline | None:
    """The pipeline the run at `url` started with, None when it has not started."""
    store = open_store(url)
    try:
        raw = store.get_bytes("pipeline.json")
    except NotFound:
        return None
    try:
        return Pipeline.loads(raw, store.url("pipeline.json"))
    except SpecError as exc:
        raise RunStateError(f"{exc} (it is left as it is)") from None


def list_runs(pipeline: Pipeline) -> list[str]:
    """The run ids of `pipeline` that have a pipeline.json, oldest first."""
    store = open_store(pipeline.work_url)
    ids = {
        key.split("/")[1]
        for key in store.list("runs/")
        if key.count("/") == 2 and key.endswith("/pipeline.json")
    }
    return sorted(ids)


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def source_url(pipeline: Pipeline, step: Step) -> str:
    """A prepare step's source dataset: `<datasets_url>/<dataset>`."""
    return f"{pipeline.datasets_url.rstrip('/')}/{step.config['dataset']}"


def read_source_sha256(url: str) -> str:
    """The sha256 of the dataset index at `url` (StoreError naming it when absent)."""
    store = open_store(url)
    try:
        return hashlib.sha256(store.get_bytes("index.json")).hexdigest()
    except NotFound:
        raise StoreError(
            f"no dataset at {store.url('index.json')}; fix: prepare it first "
            "(`mlstack data prepare`), or name a prepared dataset in the prepare step"
        ) from None


def cache_keys(pipeline: Pipeline, sources: Mapping[str, str]) -> dict[str, str]:
    """Every step's key (for select and promote too: their descendants' keys depend on them,
    though they are never looked up). `sources` maps a prepare step's source dataset URL to
    its index sha256."""
    keys: dict[str, str] = {}
    for name in topological_order(pipeline.steps):
        step = pipeline.step(name)
        keys[name] = digest(
            {
                "kind": step.kind,
                "config": dict(step.config),
                "image": pipeline.image,
                "source": sources.get(source_url(pipeline, step))
                if step.kind == "prepare"
                else None,
                "after": {upstream: keys[upstream] for upstream in sorted(step.after)},
            }
        )
    return keys


def outputs_exist(pipeline: Pipeline, step: Step, outputs: Mapping[str, Any]) -> bool:
    """Whether what a cached step's outputs name is still in the store (a deleted split or
    version makes the cache entry stale: the step runs again)."""
    try:
        if step.kind == "prepare":
            return all(
                open_store(outputs[name]).exists("index.json") for name in ("train_url", "test_url")
            )
        models = open_store(pipeline.model_url)
        if step.kind == "train":
            return models.exists(f"versions/{outputs['version']}/bundle.json")
        if step.kind == "evaluate":
            split = step.config.get("split", "test")
            return all(
                models.exists(f"versions/{version}/evals/{split}.json")
                for version in outputs["evals"]
            )
    except (KeyError, TypeError, StoreError):
        return False
    return False


Check = Callable[[Pipeline, Step, Mapping[str, Any]], bool]


class _Run:
    """One invocation of the engine over one run: the loop that starts steps and records
    what they did. All state changes and writes happen on the calling thread."""

    def __init__(
        self,
        pipeline: Pipeline,
        executor: Executor,
        *,
        run_id: str,
        say: Callable[[str], None],
        max_parallel: int,
        stop: threading.Event,
        check: Check,
    ) -> None:
        if not NAME.fullmatch(run_id):
            # One path segment under runs/: `../x` would put the run's files elsewhere.
            raise ValueError(
                f"run id {run_id!r} is not a plain name (letters, digits, '.', '_', '-', "
                "starting with a letter or digit); fix: pass one, e.g. --run nightly-1"
            )
        self.url = run_url(pipeline, run_id)
        self.run_store = open_store(self.url)
        self.work = open_store(pipeline.work_url)
        self.executor = executor
        self.run_id = run_id
        self.say = say
        self.max_parallel = max(1, max_parallel)
        self.stop = stop
        self.check = check
        self.pipeline, self.state = self._open(pipeline)
        self.keys = cache_keys(self.pipeline, self.state.sources)
        self.results: queue.Queue[tuple[str, dict[str, Any] | BaseException]] = queue.Queue()
        self.running: dict[str, StepContext] = {}

    def _open(self, pipeline: Pipeline) -> tuple[Pipeline, RunState]:
        """The run's pipeline and state: a new run writes pipeline.json first; a resumed one
        reads both back, and its unfinished steps become pending again."""
        stored = load_pipeline(self.url)
        state, self.token = _load_state(self.run_store)
        if stored is None:
            self.run_store.put_bytes("pipeline.json", pipeline.dumps().encode())
            stored = pipeline
        elif stored.to_json() != pipeline.to_json():
            self.say(f"run {self.run_id}: resuming with the pipeline it started with")
        if state is None:
            sources = {
                source_url(stored, step): read_source_sha256(source_url(stored, step))
                for step in stored.steps
                if step.kind == "prepare"
            }
            state = RunState(stored.name, self.run_id, sources=sources)
        else:
            done = [name for name, step in state.steps.items() if step.status in DONE]
            self.say(f"run {self.run_id}: resuming; {len(done)} step(s) already done")
        for step in stored.steps:
            current = state.steps.setdefault(step.name, StepState())
            if current.status not in DONE:
                current.status = "pending"
        state.status, state.finished = "running", None
        return stored, state

    def write(self) -> None:
        """Rewrite state.json, on the condition that it is still the one this runner read or
        last wrote (workloads/storage.py's conditional writes): two runners on one run would
        otherwise overwrite each other's progress. The one that finds it changed raises
        RunTaken."""
        data = (json.dumps(self.state.to_json(), indent=2) + "\n").encode()
        try:
            if self.token is None:
                self.token = self.run_store.put_if_absent("state.json", data)
            else:
                self.token = self.run_store.put_if_match("state.json", data, self.token)
        except Precondition:
            raise RunTaken(
                f"{self.run_store.url('state.json')} was changed by another runner of run "
                f"{self.run_id} since this one read it; this runner stops and leaves the run "
                "to it; fix: let that runner finish (or stop it) and rerun, or start a new run"
            ) from None

    def ready(self) -> list[Step]:
        steps = self.state.steps
        return [
            step
            for step in self.pipeline.steps
            if steps[step.name].status == "pending"
            and all(steps[upstream].status in DONE for upstream in step.after)
        ]

    def inputs(self, step: Step) -> dict[str, dict[str, Any]]:
        return {name: dict(self.state.steps[name].outputs or {}) for name in step.after}

    def cached(self, step: Step) -> dict[str, Any] | None:
        if step.kind not in CACHEABLE_KINDS:
            return None
        try:
            entry = json.loads(self.work.get_bytes(f"cache/{self.keys[step.name]}.json"))
            outputs = entry["outputs"]
        except (NotFound, ValueError, KeyError, TypeError):
            # A missing or unreadable entry is a cache miss: the step runs and rewrites it.
            return None
        return (
            outputs
            if isinstance(outputs, dict) and self.check(self.pipeline, step, outputs)
            else None
        )

    def finish(self, step: Step, outputs: dict[str, Any], status: StepStatus) -> None:
        self.run_store.put_bytes(
            f"steps/{step.name}/output.json", (json.dumps(outputs, indent=2) + "\n").encode()
        )
        key = self.keys[step.name]
        if status == "succeeded" and step.kind in CACHEABLE_KINDS:
            entry = {"key": key, "step": step.name, "kind": step.kind, "run": self.run_id}
            self.work.put_bytes(
                f"cache/{key}.json", (json.dumps({**entry, "outputs": outputs}) + "\n").encode()
            )
        current = self.state.steps[step.name]
        current.status, current.outputs, current.error = status, outputs, None
        current.key = key
        current.finished = time.time()
        if status == "cached":
            current.started = current.finished
        self.write()

    def start(self, step: Step) -> None:
        current = self.state.steps[step.name]
        current.status, current.key, current.error = "running", self.keys[step.name], None
        current.attempts += 1
        current.started, current.finished = time.time(), None
        self.write()
        ctx = StepContext(
            pipeline=self.pipeline,
            run_id=self.run_id,
            run_url=self.url,
            key=self.keys[step.name],
            attempt=current.attempts,
            inputs=self.inputs(step),
            say=self.say,
        )
        self.running[step.name] = ctx
        if self.stop.is_set():
            ctx.cancel.set()
        retry = f" (attempt {current.attempts})" if current.attempts > 1 else ""
        self.say(f"{step.name}: started{retry}")
        threading.Thread(target=self._work, args=(step, ctx), daemon=True).start()

    def _work(self, step: Step, ctx: StepContext) -> None:
        try:
            outcome: dict[str, Any] | BaseException = self.executor.run(step, ctx)
        except Exception as exc:
            outcome = exc
        self.results.put((step.name, outcome))

    def settle(self, name: str, outcome: dict[str, Any] | BaseException) -> bool:
        """Record one ended step; False when it failed for good."""
        step = self.pipeline.step(name)
        ctx = self.running.pop(name)
        current = self.state.steps[name]
        if isinstance(outcome, dict):
            self.finish(step, outcome, "succeeded")
            self.say(f"{name}: done in {current.seconds or 0:.1f} s")
            return True
        current.finished = time.time()
        if isinstance(outcome, StepCancelled) or ctx.cancel.is_set():
            current.status, current.error = "pending", f"stopped: {outcome}"
            self.write()
            self.say(f"{name}: stopped; a rerun of run {self.run_id} runs it again")
            return True
        why = (
            str(outcome)
            if isinstance(outcome, StepFailed)
            else (f"{type(outcome).__name__}: {outcome}")
        )
        if current.attempts <= step.retries and not self.stop.is_set():
            current.status, current.error = "pending", why
            self.write()
            self.say(f"{name}: attempt {current.attempts} failed ({why}); retrying")
            return True
        current.status, current.error = "failed", why
        self.write()
        self.say(f"{name}: failed: {why}")
        return False

    def loop(self) -> RunState:
        failed = False
        self.write()
        while True:
            if not failed and not self.stop.is_set():
                for step in self.ready():
                    if len(self.running) >= self.max_parallel:
                        break
                    outputs = self.cached(step)
                    if outputs is not None:
                        self.finish(step, outputs, "cached")
                        self.say(f"{step.name}: cached")
                        continue
                    self.start(step)
                if self.ready() and len(self.running) < self.max_parallel:
                    continue  # a cache hit made more steps ready
            if not self.running:
                break
            try:
                name, outcome = self.results.get(timeout=0.2)
            except queue.Empty:
                if self.stop.is_set():
                    for ctx in self.running.values():
                        ctx.cancel.set()
                continue
            failed = not self.settle(name, outcome) or failed
        return self.close(failed)

    def close(self, failed: bool) -> RunState:
        statuses = {step.status for step in self.state.steps.values()}
        if failed or "failed" in statuses:
            self.state.status = "failed"
        elif statuses <= DONE:
            self.state.status = "succeeded"
        else:
            self.state.status = "stopped"
        self.state.finished = time.time()
        self.write()
        return self.state


def run_pipeline(
    pipeline: Pipeline,
    executor: Executor,
    *,
    run_id: str,
    say: Callable[[str], None],
    max_parallel: int = 4,
    stop: threading.Event | None = None,
    check: Check = outputs_exist,
) -> RunState:
    """Run (or resume) run `run_id` of `pipeline` to its end and return its final state:
    `succeeded`, `failed` (a step failed after its retries; steps already running finished
    first, nothing new started) or `stopped` (`stop` was set: running steps were cancelled
    and stay to run again on a rerun of the same id). `check` decides whether a cache entry's
    outputs still exist (tests with fake outputs pass their own)."""
    run = _Run(
        pipeline,
        executor,
        run_id=run_id,
        say=say,
        max_parallel=max_parallel,
        stop=stop or threading.Event(),
        check=check,
    )
    return run.loop()
