"""The local executor: the training entry point as N processes on this machine.

Each process gets the same environment contract a JobSet pod gets (`workloads.contract`):
process 0 coordinates on a free loopback port, and the data, checkpoint and model URLs point
into one local or S3 store laid out like the platform's buckets:

    <store>/datasets/<dataset>/            index.json + shards (prepared here if missing)
    <store>/checkpoints/local/<run>/       step_<n>/..., step_<n>/COMMIT
    <store>/models/local/<run>/            versions/<v>/..., latest

Ctrl-C (or SIGTERM to this process) asks every process to stop the way a preemption does:
they agree on a step, save and commit it, and exit; the next launch resumes from it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mlstack.workloads.contract import Environment
from mlstack.workloads.storage import NotFound, open_store

DEFAULT_DATASET = "pystdlib"
#: Seconds the processes get to save after a stop request before they are killed.
STOP_GRACE_S = 60.0
#: Seconds the others get to notice that one process failed before they are killed.
FAILURE_GRACE_S = 10.0
#: A run or dataset name: one path segment, never '.' or '..'.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def join_url(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


@dataclass(frozen=True)
class LocalRun:
    """Where one local run's objects live in `store_url`."""

    store_url: str
    run: str = "run"
    dataset: str = DEFAULT_DATASET

    def __post_init__(self) -> None:
        # Each name is one path segment under the store: `--run ../../x` would put checkpoints
        # and bundles outside it (a file store resolves the '..').
        for flag, name in (("--run", self.run), ("dataset", self.dataset)):
            if not _NAME.fullmatch(name):
                raise ValueError(
                    f"{flag} {name!r} is not a plain name (letters, digits, '.', '_', '-', "
                    "starting with a letter or digit); fix: pass one, e.g. --run exp-1"
                )

    @property
    def data_url(self) -> str:
        return join_url(self.store_url, "datasets", self.dataset)

    @property
    def checkpoint_url(self) -> str:
        return join_url(self.store_url, "checkpoints", "local", self.run)

    @property
    def model_url(self) -> str:
        return join_url(self.store_url, "models", "local", self.run)

    def environments(self, processes: int) -> list[Environment]:
        coordinator = f"127.0.0.1:{free_port()}" if processes > 1 else None
        return [
            Environment(
                num_processes=processes,
                process_id=index,
                coordinator_address=coordinator,
                data_url=self.data_url,
                checkpoint_url=self.checkpoint_url,
                model_url=self.model_url,
            )
            for index in range(processes)
        ]


def ensure_dataset(run: LocalRun, say: Callable[[str], None]) -> None:
    """Prepare the default corpus into the run's dataset URL unless a dataset is there."""
    from mlstack.workloads.train.data import default_corpus, prepare_dataset

    store = open_store(run.data_url)
    try:
        store.get_bytes("index.json")
        return
    except NotFound:
        pass
    say(f"preparing the Python standard library's source as {run.data_url}")
    index = prepare_dataset(default_corpus(), store)
    say(f"dataset ready: {index.total_tokens:,} tokens in {len(index.shards)} shards")


@dataclass
class LaunchResult:
    returncodes: list[int]
    #: JSON events process 0 printed, in order.
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def returncode(self) -> int:
        failed = [code for code in self.returncodes if code != 0]
        return failed[0] if failed else 0


class Launch:
    """N training processes, their output, and stopping them together."""

    def __init__(
        self,
        run: LocalRun,
        processes: int,
        train_args: Sequence[str],
        *,
        workdir: Path | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        on_line: Callable[[int, str], None] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.run = run
        self.events: list[dict[str, Any]] = []
        self._on_event = on_event
        self._on_line = on_line
        root = workdir or Path(tempfile.mkdtemp(prefix="mlstack-local-"))
        self.procs: list[subprocess.Popen[str]] = []
        self._kill_at: float | None = None
        self._readers: list[threading.Thread] = []
        for env in run.environments(processes):
            child_env = {
                **os.environ,
                # One CPU device per process: two with async dispatch were seen to deadlock.
                "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"),
                "PYTHONUNBUFFERED": "1",
                **env.as_env(),
                **(extra_env or {}),
            }
            args = [
                sys.executable,
                "-m",
                "mlstack.workloads.train.main",
                *train_args,
                "--workdir",
                str(root / f"p{env.process_id}"),
            ]
            proc = subprocess.Popen(
                args,
                env=child_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            self.procs.append(proc)
            assert proc.stdout is not None
            reader = threading.Thread(
                target=self._read, args=(env.process_id, proc.stdout), daemon=True
            )
            reader.start()
            self._readers.append(reader)

    def _read(self, index: int, stream: IO[str]) -> None:
        for raw in stream:
            line = raw.rstrip("\n")
            event = _event(line) if index == 0 else None
            if event is not None:
                self.events.append(event)
                if self._on_event:
                    self._on_event(event)
            elif self._on_line:
                self._on_line(index, line)

    def signal_all(self, signum: int) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Ask every process to save and stop, as a preemption would; kill what is still
        running `grace_s` later."""
        self.signal_all(signal.SIGTERM)
        kill_at = time.monotonic() + grace_s
        self._kill_at = kill_at if self._kill_at is None else min(self._kill_at, kill_at)

    def wait(self, timeout_s: float | None = None) -> LaunchResult:
        """Wait for every process; if one fails, the others are stopped, then killed."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        failed_at: float | None = None
        while any(proc.poll() is None for proc in self.procs):
            now = time.monotonic()
            if deadline is not None and now > deadline:
                self.signal_all(signal.SIGKILL)
                break
            codes = [proc.poll() for proc in self.procs]
            if failed_at is None and any(code not in (None, 0) for code in codes):
                failed_at = now
                self.stop(FAILURE_GRACE_S)
            if self._kill_at is not None and now > self._kill_at:
                self.signal_all(signal.SIGKILL)
            time.sleep(0.05)
        for proc in self.procs:
            proc.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        return LaunchResult([proc.returncode for proc in self.procs], self.events)


def _event(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


def run_until_done(launch: Launch) -> LaunchResult:
    """Wait for a launch in the foreground; Ctrl-C or SIGTERM stops it like a preemption."""

    def on_signal(signum: int, frame: object) -> None:
        launch.stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return launch.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def complete(url: str, prompt: str, **params: Any) -> dict[str, Any]:
    """POST `url`/v1/completions; the decoded JSON answer (RuntimeError with the server's
    reason on an error status)."""
    import urllib.error
    import urllib.request

    body = json.dumps({"prompt": prompt, **params}).encode()
    request = urllib.request.Request(
        f"{url}/v1/completions",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        reason = exc.read().decode(errors="replace").strip()
        raise RuntimeError(f"the server answered {exc.code}: {reason}") from None
