"""The local executor: each pipeline step as processes on this machine.

A train step runs the training entry point as `processes` processes through
`workloads.local.Launch` (the same launcher as `mlstack local train`, with the environment
contract `step.command_for` gives); every other step is one process of
`python -m mlstack.workloads.pipeline.step`. Each attempt's output goes to
`<run>/steps/<step>/attempt-<n>.log` in the store, which a failure names.

Stopping: when the run is asked to stop (the engine sets the step's cancel event on Ctrl-C,
SIGTERM or SIGHUP), training processes are stopped the way a preemption stops them (they save
a checkpoint, and the step resumes from it on a rerun) and other steps get SIGTERM; whatever
is still running `stop_grace_s` later, or at once after `kill()` (a second signal), is killed.
Every child dies with the runner even when the runner is killed outright
(`workloads.local.die_with_parent`), and each step's scratch directory is removed when it ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlstack.workloads.local import (
    STOP_GRACE_S,
    Launch,
    LocalRun,
    die_with_parent,
    join_url,
)
from mlstack.workloads.pipeline.executor import (
    StepCancelled,
    StepCommand,
    StepContext,
    StepFailed,
)
from mlstack.workloads.pipeline.spec import Pipeline, Step
from mlstack.workloads.pipeline.step import (
    PYTHON,
    StepError,
    command_for,
    exported_outputs,
    version_name,
)
from mlstack.workloads.storage import NotFound, StoreError, open_store

if TYPE_CHECKING:
    from mlstack.workloads.pipeline.engine import RunState

#: Lines of a step's output kept for its log.
LOG_LINES = 5000


class LocalExecutor:
    """Runs steps as local processes; thread-safe (the engine calls `run` from one thread per
    running step)."""

    def __init__(self, *, stop_grace_s: float = STOP_GRACE_S) -> None:
        self.stop_grace_s = stop_grace_s
        self._killed = threading.Event()

    def kill(self) -> None:
        """Kill every running step's processes now (a second Ctrl-C)."""
        self._killed.set()

    def run(self, step: Step, ctx: StepContext) -> dict[str, Any]:
        try:
            command = command_for(step, ctx)
        except (StepError, StoreError) as exc:
            raise StepFailed(str(exc)) from None
        log_key = f"steps/{step.name}/attempt-{ctx.attempt}.log"
        log_url = join_url(ctx.run_url, log_key)
        lines: deque[str] = deque(maxlen=LOG_LINES)
        try:
            if step.kind == "train":
                code, why = self._train(step, ctx, command, lines)
            else:
                code, why = self._process(ctx, command.argv, command.env, lines)
        finally:
            _write_log(ctx.run_url, log_key, lines)
        if ctx.cancel.is_set():
            raise StepCancelled(f"{step.name} stopped")
        if code:
            raise StepFailed(f"{why} (log: {log_url})")
        return self._outputs(step, ctx, log_url)

    def _train(
        self,
        step: Step,
        ctx: StepContext,
        command: StepCommand,
        lines: deque[str],
    ) -> tuple[int, str]:
        # argv is `python -m mlstack.workloads.train.main ...`: Launch starts the module itself.
        launch = Launch(
            LocalRun(ctx.run_url, run=step.name),
            command.processes,
            list(command.argv[3:]),
            on_line=lambda index, line: lines.append(f"[p{index}] {line}"),
            on_event=lambda event: lines.append(str(event)),
            extra_env=dict(command.env),
            orphan_safe=True,
        )
        done = threading.Event()
        watcher = threading.Thread(
            target=self._watch, args=(ctx, done, launch.stop, launch.kill), daemon=True
        )
        watcher.start()
        try:
            result = launch.wait()
        finally:
            done.set()
            watcher.join(timeout=5)
        return result.returncode, result.failure or f"training ended with {result.returncode}"

    def _watch(
        self,
        ctx: StepContext,
        done: threading.Event,
        stop: Callable[[float], None],
        kill: Callable[[], None],
    ) -> None:
        """Turn the run's stop (ctx.cancel) and kill requests into signals to the step."""
        while not done.wait(0.1):
            if self._killed.is_set():
                kill()
                return
            if ctx.cancel.is_set():
                stop(self.stop_grace_s)
                while not done.wait(0.1):
                    if self._killed.is_set():
                        kill()
                        return
                return

    def _process(
        self, ctx: StepContext, argv: tuple[str, ...], env: Mapping[str, str], lines: deque[str]
    ) -> tuple[int, str]:
        scratch = Path(tempfile.mkdtemp(prefix="mlstack-pipeline-"))
        try:
            args = [sys.executable if argv[0] == PYTHON else argv[0], *argv[1:]]
            proc = subprocess.Popen(
                args,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(scratch), **env},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                # Its own session: Ctrl-C reaches the runner, which stops the step itself.
                start_new_session=True,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - see die_with_parent
            )
            reader = threading.Thread(target=_drain, args=(proc, lines), daemon=True)
            reader.start()
            done = threading.Event()

            def stop(grace_s: float) -> None:
                proc.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + grace_s
                while proc.poll() is None and time.monotonic() < deadline:
                    if self._killed.is_set():
                        break
                    time.sleep(0.05)
                if proc.poll() is None:
                    proc.kill()

            watcher = threading.Thread(
                target=self._watch, args=(ctx, done, stop, proc.kill), daemon=True
            )
            watcher.start()
            try:
                code = proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                done.set()
                watcher.join(timeout=5)
                reader.join(timeout=5)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
        last = next((line for line in reversed(lines) if line.strip()), "it printed nothing")
        why = errors[-1] if errors else (f"killed by signal {-code}" if code < 0 else last)
        return (128 - code if code < 0 else code), why

    def _outputs(self, step: Step, ctx: StepContext, log_url: str) -> dict[str, Any]:
        """A finished step's outputs: a train step's are its exported version (checked to be
        there); the others wrote their output.json."""
        if step.kind == "train":
            outputs = exported_outputs(step, ctx)
            if outputs is None:
                version = version_name(ctx.run_id, step.name)
                raise StepFailed(
                    f"{step.name} ended without exporting "
                    f"{open_store(ctx.pipeline.model_url).url(f'versions/{version}')} "
                    f"(log: {log_url}); fix: see the log"
                )
            return outputs
        store = open_store(ctx.run_url)
        key = f"steps/{step.name}/output.json"
        try:
            return json.loads(store.get_bytes(key))
        except (NotFound, ValueError):
            raise StepFailed(
                f"{step.name} exited 0 without a readable {store.url(key)} (log: {log_url})"
            ) from None


def _drain(proc: subprocess.Popen[str], lines: deque[str]) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:
        lines.append(raw.rstrip("\n"))


def _write_log(run_url: str, key: str, lines: deque[str]) -> None:
    # A log that cannot be written must not hide the step's own result.
    with contextlib.suppress(StoreError):
        open_store(run_url).put_bytes(key, ("\n".join(lines) + "\n").encode())


#: Train-step knobs sized for the declared model and hardware, which another model (`--model`)
#: takes from its own config instead.
MODEL_SIZED = ("global_batch_size", "fsdp", "dtype")


def localize(
    pipeline: Pipeline, *, model: str | None, steps: int | None, processes: int
) -> Pipeline:
    """`pipeline` for this machine: every train step on `processes` local processes, with
    `model` instead of its declared model config (its batch size, fsdp and dtype become that
    config's defaults; learning rate and seed stay, so that candidates still differ) and
    `steps` training steps when given."""

    def local(step: Step) -> Step:
        if step.kind != "train":
            return step
        config = dict(step.config) | {"num_hosts": processes}
        if model is not None:
            config |= {"model": model} | dict.fromkeys(MODEL_SIZED)
        if steps is not None:
            config["steps"] = steps
            if config.get("eval_every_steps"):
                config["eval_every_steps"] = min(int(config["eval_every_steps"]), steps)
            if config.get("checkpoint_every_steps"):
                config["checkpoint_every_steps"] = min(int(config["checkpoint_every_steps"]), steps)
        return replace(step, config=config, manifest=None)

    return replace(pipeline, steps=tuple(local(step) for step in pipeline.steps))


def unfinished_run(pipeline: Pipeline) -> str | None:
    """The newest run of `pipeline` that neither succeeded nor failed (it was stopped, or
    killed while running), to resume; None when there is none."""
    from mlstack.workloads.pipeline.engine import list_runs, load_state, run_url

    for run_id in reversed(list_runs(pipeline)):
        state = load_state(run_url(pipeline, run_id))
        if state is None or state.status in ("running", "stopped"):
            return run_id
    return None


def summary(pipeline: Pipeline, state: RunState) -> list[str]:
    """The end of a run in lines: each step's status and time, the selected version and the
    alias moves."""
    lines = [f"run {state.run_id}: {state.status}"]
    for step in pipeline.steps:
        current = state.steps[step.name]
        seconds = current.seconds
        took = (
            f" in {seconds:.1f} s" if seconds is not None and current.status == "succeeded" else ""
        )
        error = f": {current.error}" if current.error and current.status == "failed" else ""
        lines.append(f"  {step.name:<16} {step.kind:<9} {current.status}{took}{error}")
    for step in pipeline.steps:
        outputs = state.steps[step.name].outputs or {}
        if step.kind == "select" and outputs:
            chosen = outputs.get("selected")
            lines.append(f"selected: {chosen or 'none'} ({outputs.get('reason')})")
        if step.kind == "promote" and outputs:
            for move in outputs.get("moves") or []:
                lines.append(f"alias {move['alias']}: {move['from'] or '(unset)'} -> {move['to']}")
            if outputs.get("skipped") or not outputs.get("moves"):
                lines.append(f"aliases unchanged ({outputs.get('skipped') or 'already there'})")
    return lines
