"""`mlstack local train` and `local up` stop every child process on Ctrl-C, SIGTERM and SIGHUP
(the terminal closing), even with their own output gone, and leave no scratch in TMPDIR.

Each test starts the real command with TMPDIR pointed at a fresh folder, reads the pids of its
children from /proc, signals it, and checks that the command ended, that those pids are gone
and that TMPDIR is empty."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from tests.workloads.train.conftest import prepare_small_dataset

MLSTACK = Path(sys.executable).parent / "mlstack"
#: Seconds from the signal until the command and every child have ended.
STOP_BOUND_S = 90
#: For the command to reach the point where it is signalled (start-up, compile, warm-up).
START_TIMEOUT_S = 300


def _descendants(pid: int) -> set[int]:
    """The pids of every process below `pid`, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces and parentheses.
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for_line(stream: IO[str], prefix: str, *, then_close: bool) -> None:
    """Read `stream` on a thread until a line starts with `prefix`; then close it (its writer
    gets EPIPE from then on) or keep draining it."""
    found = threading.Event()
    seen: list[str] = []

    def read() -> None:
        for raw in stream:
            seen.append(raw.rstrip("\n"))
            if raw.startswith(prefix):
                found.set()
                if then_close:
                    stream.close()
                    return
        found.set()

    threading.Thread(target=read, daemon=True).start()
    found.wait(START_TIMEOUT_S)
    if not any(line.startswith(prefix) for line in seen):
        pytest.fail(f"no line starting {prefix!r}; the output ended with {seen[-20:]}")


def _start(args: list[str], tmp: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(MLSTACK), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp)},
    )


def _stop_and_check(proc: subprocess.Popen[str], signum: int, tmp: Path, children: set[int]) -> int:
    """Note the command's children in `children`, signal it; assert it ended within the bound
    with every child gone and TMPDIR empty; its exit code."""
    children |= _descendants(proc.pid)
    assert children, "the command has no child processes"
    proc.send_signal(signum)
    try:
        code = proc.wait(STOP_BOUND_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {STOP_BOUND_S} s after {signal.Signals(signum).name}")
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if _alive(pid)], "orphaned child processes"
    left = sorted(path.name for path in tmp.iterdir())
    assert not left, f"left in TMPDIR: {left}"
    return code


def _kill_all(proc: subprocess.Popen[str], children: set[int]) -> None:
    """Kill what a failed test left: the command and its children (orphaned ones too)."""
    for pid in [proc.pid, *_descendants(proc.pid), *children]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(10)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    prepare_small_dataset((store / "datasets" / "pystdlib").as_uri())
    return store


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return tmp


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_local_train_with_its_output_closed(
    store: Path, tmp: Path, signum: int
) -> None:
    """The terminal is gone (or the pipe's reader has quit) before the signal arrives: the
    launcher must not die of a write, and every process saves and stops as if preempted."""
    args = ["local", "train", "tiny", "-n", "2", "--steps", "100000", "--log-every", "1"]
    proc = _start([*args, "--store", str(store)], tmp)
    children: set[int] = set()
    try:
        assert proc.stdout is not None
        _wait_for_line(proc.stdout, "step      2", then_close=True)
        code = _stop_and_check(proc, signum, tmp, children)
        assert code == 143
        assert list(store.glob("checkpoints/local/run/step_*/COMMIT"))
    finally:
        _kill_all(proc, children)


def test_sighup_stops_local_up_and_its_server(store: Path, tmp: Path) -> None:
    args = ["local", "up", "-n", "1", "--steps", "2", "--store", str(store)]
    proc = _start(args, tmp)
    children: set[int] = set()
    try:
        assert proc.stdout is not None
        _wait_for_line(proc.stdout, "stop it with Ctrl-C", then_close=False)
        _stop_and_check(proc, signal.SIGHUP, tmp, children)
    finally:
        _kill_all(proc, children)
