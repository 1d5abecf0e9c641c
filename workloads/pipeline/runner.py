"""The pipeline runner on the cluster: the entry point of a team's `pipeline-<name>` CronJob.

    python -m mlstack.workloads.pipeline.runner --spec FILE [--run ID] [--namespace NS]

It reads the pipeline (the ConfigMap the stack deploys, mounted as a file), then runs it with the
pipeline engine and the cluster executor: each step a Job or JobSet in this pod's namespace,
created through the Kubernetes API with the pod's `pipeline-runner` ServiceAccount. A rerun with
the same `--run` resumes that run, and without `--run` the newest unfinished run is resumed (a
runner pod restarted after a drain carries on): the engine keeps the run's state in the object
store, and the executor follows the step objects the previous runner left.

SIGTERM (the pod deleted, `concurrencyPolicy: Replace`, a drain) stops the run: every step
object it follows is deleted and the run ends as stopped.

Exit codes, as `mlstack local pipeline`'s: 0 the run succeeded; 1 a step failed (an error line
per failed step); 2 bad input (the spec or run state unreadable, not in a cluster); 143 stopped
by SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlstack.workloads.pipeline.cluster import (
    ApiError,
    ClusterExecutor,
    CommandFor,
    InCluster,
    JobsApi,
    KubeJobsApi,
)
from mlstack.workloads.pipeline.engine import RunStateError, new_run_id, run_pipeline
from mlstack.workloads.pipeline.local import summary, unfinished_run
from mlstack.workloads.pipeline.spec import Pipeline, SpecError
from mlstack.workloads.storage import StoreError

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
#: 128 + SIGTERM, as `mlstack local pipeline` exits on a signal.
EXIT_STOPPED = 128 + signal.SIGTERM
#: Bad input: one `error:` line and exit 2 (the spec, the store, the run state, the cluster).
BAD_INPUT = (SpecError, StoreError, RunStateError, ApiError)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mlstack.workloads.pipeline.runner",
        description="Run a pipeline on the cluster: each step a Job or JobSet queued by Kueue.",
    )
    parser.add_argument("--spec", required=True, type=Path, help="The pipeline.json to run.")
    parser.add_argument(
        "--run",
        default=None,
        help="The run id to start or resume; default: the newest unfinished run, else a new one.",
    )
    parser.add_argument(
        "--namespace",
        default=None,
        help="Where the steps run; default: this pod's namespace (its ServiceAccount's).",
    )
    return parser.parse_args(argv)


def say(line: str) -> None:
    print(line, flush=True)


def error(line: str) -> None:
    print(f"error: {line}", file=sys.stderr, flush=True)


@contextmanager
def stop_on_sigterm(stop: threading.Event) -> Iterator[list[int]]:
    """SIGTERM sets `stop` (the engine starts nothing more, the executor deletes the step
    objects it follows) instead of killing the runner before it has cleaned up; the signals
    received are in the list it yields."""
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        stop.set()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def _load(path: Path) -> Pipeline:
    try:
        return Pipeline.loads(path.read_bytes(), str(path))
    except OSError as exc:
        raise SpecError(
            f"{path}: cannot read the pipeline ({exc.strerror}); fix: mount the pipeline's "
            "ConfigMap there (mlstack up deploys it)"
        ) from None


def main(
    argv: list[str] | None = None,
    *,
    api: JobsApi | None = None,
    command_for: CommandFor | None = None,
    poll_s: float = 2.0,
) -> int:
    """Run the pipeline; `api` defaults to the in-cluster API and `command_for` to the step
    module's (tests pass their own)."""
    args = parse_args(argv)
    try:
        pipeline = _load(args.spec)
        namespace = args.namespace
        if api is None:
            cluster = InCluster.from_env(os.environ)
            api = KubeJobsApi(cluster)
            namespace = namespace or cluster.namespace
        run_id = args.run or unfinished_run(pipeline) or new_run_id()
    except BAD_INPUT as exc:
        error(str(exc))
        return EXIT_BAD_INPUT
    executor = ClusterExecutor(
        api, namespace or pipeline.team, command_for=command_for, poll_s=poll_s
    )
    say(f"run {run_id} of pipeline {pipeline.name} in namespace {executor.namespace}")
    with stop_on_sigterm(executor.stop) as signals:
        try:
            state = run_pipeline(pipeline, executor, run_id=run_id, say=say, stop=executor.stop)
        except BAD_INPUT as exc:
            error(str(exc))
            return EXIT_BAD_INPUT
    for line in summary(pipeline, state):
        say(line)
    if signals:
        error(f"run {run_id} stopped by SIGTERM; its running steps were deleted; rerun to resume")
        return EXIT_STOPPED
    if state.status != "succeeded":
        for name, step in state.steps.items():
            if step.status == "failed":
                error(f"step {name} failed: {step.error}; fix: see its logs, then rerun to resume")
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
