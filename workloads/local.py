"""The local executor: the training entry point as N processes on this machine.

Each process gets the same environment contract a JobSet pod gets (`workloads.contract`):
process 0 coordinates on a free loopback port, and the data, checkpoint and model URLs point
into one local or S3 store laid out like the platform's buckets:

    <store>/datasets/<dataset>/            index.json + shards (prepared here if missing)
    <store>/checkpoints/local/<run>/       step_<n>/..., step_<n>/COMMIT
    <store>/models/local/<run>/            versions/<v>/..., latest

Ctrl-C (or SIGTERM, or SIGHUP when the terminal closes) asks every process to stop the way a
preemption does: they agree on a step, save and commit it, and exit; the next launch resumes
from it. A second one kills them at once. When one process fails, the others are stopped too
(they would wait for it in a collective forever) and the first failure is reported once, with
its process index. Scratch space (staging, the data cache, the children's TMPDIR) lives in one
temporary directory that is removed when the launch ends, however it ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mlstack.workloads.contract import Environment
from mlstack.workloads.storage import NotFound, open_store
from mlstack.workloads.train.main import EXIT_PREEMPTED

DEFAULT_DATASET = "pystdlib"
#: Seconds the processes get to save after a stop request before they are killed.
STOP_GRACE_S = 60.0
#: Seconds the others get to notice that one process failed before they are killed.
FAILURE_GRACE_S = 10.0
#: A run or dataset name: one path segment, never '.' or '..'.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: Seconds a process's output line is held before it is shown: when one process fails, what the
#: others print in that time is their echo of it (a lost peer), and is dropped.
ECHO_HOLD_S = 1.0
#: The signals that stop a launch: Ctrl-C, `kill`, and the terminal closing.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def die_with_parent() -> None:
    """In a child between fork and exec (`preexec_fn`): have Linux kill it when the thread
    that started it dies, so that a launcher killed with SIGKILL (which it cannot catch)
    leaves no orphan behind (prctl(2), PR_SET_PDEATHSIG; the setting survives the exec).
    Elsewhere a no-op. A `preexec_fn` can deadlock when another thread holds a lock the child
    needs (the subprocess docs' warning): this one only calls a libc function looked up at
    import, with two ints, and takes no lock."""
    if sys.platform == "linux":
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_PR_SET_PDEATHSIG = 1
if sys.platform == "linux":
    import ctypes

    # Looked up before any fork: the child only makes the call.
    _prctl = ctypes.CDLL(None, use_errno=True).prctl


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


def guarded(callback: Callable[..., None]) -> Callable[..., None]:
    """`callback`, but a failure to write our own output (a closed pipe or terminal: OSError,
    or ValueError on a closed file) is dropped: output readers must keep draining the
    children's pipes, or a child blocks on a full one and the run hangs."""

    def call(*args: Any, **kwargs: Any) -> None:
        with contextlib.suppress(OSError, ValueError):
            callback(*args, **kwargs)

    return call


@dataclass
class LaunchResult:
    returncodes: list[int]
    #: JSON events process 0 printed, in order.
    events: list[dict[str, Any]] = field(default_factory=list)
    #: The process that failed first, if one did.
    failed: int | None = None
    #: Its error in one line: `process 1 of 2 failed (exit code 2): ...`.
    failure: str | None = None

    @property
    def returncode(self) -> int:
        """The first failed process's exit code (128 + N for a process killed by signal N,
        as a shell reports it); 0 when every process succeeded."""
        if self.failed is not None:
            code = self.returncodes[self.failed]
        else:
            code = next((code for code in self.returncodes if code != 0), 0)
        return 128 - code if code < 0 else code


def _status(code: int) -> str:
    """'exit code 2', or 'signal' for a process a signal ended (its reason names the signal)."""
    return "signal" if code < 0 else f"exit code {code}"


def _why(code: int, tail: Sequence[str], error: str | None) -> str:
    """A failed process's reason in one line: its `error:` line, or the last line it printed."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    if error is not None:
        return error
    last = next((line.strip() for line in reversed(tail) if line.strip()), None)
    return last or "it printed nothing"


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
        orphan_safe: bool = False,
    ) -> None:
        """`orphan_safe`: the processes die with the thread that starts them (`die_with_parent`;
        the pipeline executor, whose runner may be killed outright and then resumed)."""
        self.run = run
        self.events: list[dict[str, Any]] = []
        self._on_event = guarded(on_event) if on_event else None
        self._on_line = guarded(on_line) if on_line else None
        #: Removed when the launch ends; `workdir` (a caller's) is left alone.
        self.scratch = None if workdir else Path(tempfile.mkdtemp(prefix="mlstack-local-"))
        root = workdir or self.scratch
        assert root is not None
        self.procs: list[subprocess.Popen[str]] = []
        self._kill_at: float | None = None
        self._readers: list[threading.Thread] = []
        self._lock = threading.Lock()
        #: (received at, process, line) for the forwarder thread; None ends it.
        self._lines: queue.Queue[tuple[float, int, str] | None] = queue.Queue()
        self._forwarder = threading.Thread(target=self._forward, daemon=True)
        self._forwarder.start()
        self._tails: list[deque[str]] = [deque(maxlen=20) for _ in range(processes)]
        self._errors: list[str | None] = [None] * processes
        self._failed: int | None = None
        for env in run.environments(processes):
            tmp = root / f"p{env.process_id}" / "tmp"
            tmp.mkdir(parents=True, exist_ok=True)
            child_env = {
                **os.environ,
                # One CPU device per process: two with async dispatch were seen to deadlock.
                "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"),
                "PYTHONUNBUFFERED": "1",
                # Whatever a library puts in the temp directory goes with the scratch.
                "TMPDIR": str(tmp),
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
                preexec_fn=die_with_parent if orphan_safe else None,  # noqa: PLW1509
            )
            self.procs.append(proc)
            assert proc.stdout is not None
            # Only after `procs` holds it: the reader waits for the process when its output ends.
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
                continue
            self._tails[index].append(line)
            if line.startswith("error: "):
                # Held back: the launch reports the first failure once, with its index.
                self._errors[index] = line.removeprefix("error: ")
                continue
            self._lines.put((time.monotonic(), index, line))
        # Its output ends when it exits: note a failure before the others can echo it.
        self._note_exit(index, self.procs[index].wait())

    def _forward(self) -> None:
        """Hand lines to `on_line` ECHO_HOLD_S after they arrived, unless another process has
        failed by then: the first failure is reported once, not buried in its echoes."""
        while (item := self._lines.get()) is not None:
            received, index, line = item
            time.sleep(max(0.0, received + ECHO_HOLD_S - time.monotonic()))
            with self._lock:
                echo = self._failed is not None and self._failed != index
            if self._on_line and not echo:
                self._on_line(index, line)

    def _note_exit(self, index: int, code: int) -> None:
        """Note the first process that failed (a preempted one, stopped on request, did not)."""
        with self._lock:
            if code not in (0, EXIT_PREEMPTED) and self._failed is None:
                self._failed = index

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

    def kill(self) -> None:
        """Kill every process now (a second Ctrl-C)."""
        self.signal_all(signal.SIGKILL)

    def wait(self, timeout_s: float | None = None) -> LaunchResult:
        """Wait for every process; if one fails, the others are stopped, then killed. The
        scratch directory is removed however this ends."""
        try:
            self._supervise(timeout_s)
        finally:
            self.kill()
            for proc in self.procs:
                proc.wait()
            for reader in self._readers:
                reader.join(timeout=5)
            self._lines.put(None)
            self._forwarder.join(timeout=5)
            if self.scratch is not None:
                shutil.rmtree(self.scratch, ignore_errors=True)
        return self._result()

    def _supervise(self, timeout_s: float | None) -> None:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        stopping = False
        while any(proc.poll() is None for proc in self.procs):
            now = time.monotonic()
            if deadline is not None and now > deadline:
                return
            codes = [proc.poll() for proc in self.procs]
            for index, code in enumerate(codes):
                if code is not None:
                    self._note_exit(index, code)
            # One that ended early, even preempted, leaves the others waiting for it.
            if any(code not in (None, 0) for code in codes) and not stopping:
                stopping = True
                self.stop(FAILURE_GRACE_S)
            if self._kill_at is not None and now > self._kill_at:
                self.kill()
            time.sleep(0.05)

    def _result(self) -> LaunchResult:
        codes = [proc.returncode for proc in self.procs]
        result = LaunchResult(codes, self.events, failed=self._failed)
        if self._failed is not None:
            index = self._failed
            why = _why(codes[index], self._tails[index], self._errors[index])
            result.failure = (
                why
                if len(codes) == 1
                else f"process {index} of {len(codes)} failed ({_status(codes[index])}): {why}"
            )
        return result


def _event(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


def run_until_done(launch: Launch) -> LaunchResult:
    """Wait for a launch in the foreground; Ctrl-C, SIGTERM or SIGHUP stops it like a
    preemption, a second one kills it. The handler only signals the children: it writes
    nothing, so a closed terminal or pipe cannot break it."""
    signalled: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        if signalled:
            launch.kill()
        else:
            launch.stop()
        signalled.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
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
