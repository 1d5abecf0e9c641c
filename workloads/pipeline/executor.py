"""What the engine asks of an executor, and what every executor runs for a step.

The engine (`workloads.pipeline.engine`) decides which steps run, when, and how often; an
executor runs one step to its end: as processes on this machine (`workloads.pipeline.local`) or
as a Job or JobSet in the team's namespace (`workloads.pipeline.cluster`). Both run the same
command with the same environment contract for a step (`workloads.pipeline.step.command_for`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from mlstack.workloads.pipeline.spec import Pipeline, Step


class StepFailed(Exception):  # noqa: N818 - reads as `executor.StepFailed`
    """A step ended without its outputs; the message is one line (what, where, the fix)."""


class StepCancelled(Exception):  # noqa: N818
    """A step stopped because the run was asked to stop (a signal, another step failing)."""


@dataclass(frozen=True)
class StepContext:
    """One attempt of one step of one run."""

    pipeline: Pipeline
    run_id: str
    #: `<work_url>/runs/<run_id>`: the run's pipeline.json, state.json and steps/<name>/.
    run_url: str
    #: The step's cache key (sha256 hex): also names a prepare step's data directory.
    key: str
    #: 1 for the first attempt.
    attempt: int
    #: The outputs of the steps this one waits for, by step name.
    inputs: Mapping[str, Mapping[str, Any]]
    #: Set when the run must stop: the executor stops the step and raises StepCancelled.
    cancel: threading.Event = field(default_factory=threading.Event)
    #: Progress lines for the person (or log) watching the run.
    say: Callable[[str], None] = print


@dataclass(frozen=True)
class StepCommand:
    """What a step runs: argv and the contract environment, and how many processes (pods)."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    processes: int = 1


class Executor(Protocol):
    def run(self, step: Step, ctx: StepContext) -> dict[str, Any]:
        """Run `step` to its end (blocking; the engine calls it from a worker thread, one per
        running step) and return its outputs (the JSON of its output.json). Raises StepFailed
        when it fails, StepCancelled when ctx.cancel stopped it."""
        ...
