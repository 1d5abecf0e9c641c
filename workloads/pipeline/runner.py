"""The pipeline runner on the cluster: the entry point of a team's `pipeline-<name>` CronJob.

    python -m mlstack.workloads.pipeline.runner --spec FILE [--run ID] [--namespace NS]

It reads the pipeline (the ConfigMap the stack deploys, mounted as a file), then runs it with the
pipeline engine and the cluster executor: each step a Job or JobSet in this pod's namespace,
created through the Kubernetes API with the pod's `pipeline-runner` ServiceAccount. A rerun with
the same `--run` resumes that run (the engine's state in the object store; the executor finds
the step objects a previous runner left).

SIGTERM (the pod deleted, `concurrencyPolicy: Replace`, a drain) stops the run: every step
object it follows is deleted and the run ends as stopped.

Exit codes: 0 the run succeeded; 1 a step failed (its error line says which and why); 2 bad
input (the spec unreadable, not in a cluster); 143 stopped by SIGTERM.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from mlstack.workloads.pipeline.cluster import (
    ApiError,
    ClusterExecutor,
    InCluster,
    JobsApi,
    KubeJobsApi,
)
from mlstack.workloads.pipeline.spec import Pipeline, SpecError

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
#: 128 + SIGTERM, what a shell reports for a process SIGTERM ended.
EXIT_STOPPED = 128 + signal.SIGTERM


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mlstack.workloads.pipeline.runner",
        description="Run a pipeline on the cluster: each step a Job or JobSet queued by Kueue.",
    )
    parser.add_argument("--spec", required=True, type=Path, help="The pipeline.json to run.")
    parser.add_argument(
        "--run", default=None, help="The run id: resume that run; default: a new run."
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
def stop_on_sigterm(stop: threading.Event) -> Iterator[None]:
    """SIGTERM sets `stop` (the executor deletes what it follows and ends each step) instead
    of killing the runner before it has cleaned up."""

    def handler(signum: int, frame: Any) -> None:
        say("SIGTERM: stopping the run, deleting its running steps")
        stop.set()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
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


def _engine() -> ModuleType:
    return importlib.import_module("mlstack.workloads.pipeline.engine")


def main(
    argv: list[str] | None = None,
    *,
    api: JobsApi | None = None,
    engine: Any = None,
    poll_s: float = 2.0,
) -> int:
    """Run the pipeline; `api` and `engine` default to the in-cluster API and the pipeline
    engine (tests pass their own)."""
    args = parse_args(argv)
    try:
        pipeline = _load(args.spec)
        namespace = args.namespace
        if api is None:
            cluster = InCluster.from_env(os.environ)
            api = KubeJobsApi(cluster)
            namespace = namespace or cluster.namespace
    except (SpecError, ApiError) as exc:
        error(str(exc))
        return EXIT_BAD_INPUT
    engine = engine or _engine()
    executor = ClusterExecutor(api, namespace or pipeline.team, poll_s=poll_s)
    run_id = args.run or engine.new_run_id()
    say(f"pipeline {pipeline.name}: run {run_id} in namespace {executor.namespace}")
    with stop_on_sigterm(executor.stop):
        state = engine.run_pipeline(pipeline, executor, run_id=run_id, say=say)
    if executor.stop.is_set():
        error(f"run {run_id} stopped by SIGTERM; rerun with --run {run_id} to resume it")
        return EXIT_STOPPED
    return 0 if _succeeded(state) else EXIT_FAILED


def _succeeded(state: Any) -> bool:
    return getattr(state, "status", None) == "succeeded"


if __name__ == "__main__":
    sys.exit(main())
