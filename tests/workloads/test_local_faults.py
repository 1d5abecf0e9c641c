"""Faults in a multi-process local run end it in seconds, loudly, and leave nothing behind.

One process of two is broken from outside, in the place each test names: its data (a shard it
reads is gone), its step (it is SIGKILLed, as the OOM killer would), the checkpoint save (the
destination is a file, not a folder) and the export (likewise). Every process must exit
within FAULT_BOUND_S of the first failure, non-zero, and the launch names the process that
failed and its real error. (Before, the failing process waited at an exit barrier for a peer
that waited in the step's collective for it: both hung until killed.)"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mlstack.workloads.local import Launch, LaunchResult, LocalRun
from mlstack.workloads.train.configs import get_config
from mlstack.workloads.train.data import Loader
from tests.workloads.train.conftest import prepare_small_dataset

STEPS = 12
ARGS = ["--config", "tiny", "--steps", str(STEPS), "--log-every", "1", "--checkpoint-every", "4"]
#: Seconds from the first failure until every process has exited (the old code: never).
FAULT_BOUND_S = 60
#: The whole launch, healthy start-up and compile included, on two loaded CPUs.
TIMEOUT_S = 240


def _run(tmp_path: Path) -> LocalRun:
    run = LocalRun((tmp_path / "store").as_uri(), run="faulty")
    prepare_small_dataset(run.data_url)
    return run


def _store_path(url: str) -> Path:
    return Path(url.removeprefix("file://"))


def _shards(loader: Loader, process: int, step: int) -> set[int]:
    """The shards `process` reads for its rows of the global batch at `step`."""
    rows = loader.global_windows(step)
    mine = rows[process * loader.local_batch_size : (process + 1) * loader.local_batch_size]
    tokens = loader.index.shard_tokens
    return {
        shard
        for window in mine.tolist()
        for shard in range(
            window * loader.seq_len // tokens,
            (window * loader.seq_len + loader.seq_len) // tokens + 1,
        )
    }


def _shard_only_process_1_reads_first(run: LocalRun) -> str:
    """The key of a shard process 1 reads for step 0 and process 0 does not read before it
    blocks in step 0's collective (it prefetches two batches ahead)."""
    cfg = get_config("tiny")
    with Loader(
        run.data_url,
        seq_len=cfg.model.seq_len,
        global_batch_size=cfg.global_batch_size,
        process_count=2,
    ) as loader:
        theirs = set().union(*(_shards(loader, 0, step) for step in range(4)))
        candidates = sorted(_shards(loader, 1, 0) - theirs)
        assert candidates, "no shard that only process 1 reads at first"
        return loader.index.shards[candidates[0]].key


class _FirstExit:
    """When the first process of a launch exited (watched from a thread)."""

    def __init__(self, launch: Launch) -> None:
        self.at: float | None = None
        self._launch = launch
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while self.at is None:
            if any(proc.poll() is not None for proc in self._launch.procs):
                self.at = time.monotonic()
            time.sleep(0.05)


def _launch_and_wait(run: LocalRun, **kwargs: Any) -> tuple[LaunchResult, float]:
    """The result, and seconds from the first process's exit to the last one's."""
    return _wait(Launch(run, 2, ARGS, **kwargs))


def _wait(launch: Launch) -> tuple[LaunchResult, float]:
    """`_launch_and_wait` for a launch already started."""
    first = _FirstExit(launch)
    started = time.monotonic()
    try:
        result = launch.wait(TIMEOUT_S)
    finally:
        launch.kill()
    assert time.monotonic() - started < TIMEOUT_S, "the run hung: killed at the timeout"
    assert first.at is not None
    return result, time.monotonic() - first.at


def _assert_failed_fast(result: LaunchResult, seconds: float, process: int, *reasons: str) -> None:
    assert all(code != 0 for code in result.returncodes), result.returncodes
    assert seconds < FAULT_BOUND_S, f"the others took {seconds:.0f} s to stop"
    assert result.failed == process, result.failure
    assert result.failure is not None
    assert result.failure.startswith(f"process {process} of 2 failed"), result.failure
    for reason in reasons:
        assert reason in result.failure, result.failure


def test_a_missing_shard_of_one_process_ends_the_run(tmp_path: Path) -> None:
    run = _run(tmp_path)
    key = _shard_only_process_1_reads_first(run)
    (_store_path(run.data_url) / key).unlink()
    result, seconds = _launch_and_wait(run)
    _assert_failed_fast(result, seconds, 1, "object not found", key)


def test_a_process_killed_in_a_step_ends_the_run(tmp_path: Path) -> None:
    run = _run(tmp_path)
    launch: Launch | None = None

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "train" and event["step"] == 3 and launch is not None:
            launch.procs[1].send_signal(signal.SIGKILL)

    launch = Launch(run, 2, ARGS, on_event=on_event)
    result, seconds = _wait(launch)
    _assert_failed_fast(result, seconds, 1, "killed by SIGKILL")
    assert result.returncode == 128 + signal.SIGKILL


def test_a_checkpoint_that_cannot_be_written_ends_the_run(tmp_path: Path) -> None:
    """Process 0 saves the checkpoints; its destination is a file, not a folder."""
    run = _run(tmp_path)
    destination = _store_path(run.checkpoint_url)
    destination.parent.mkdir(parents=True)
    destination.write_text("not a folder")
    result, seconds = _launch_and_wait(run)
    _assert_failed_fast(result, seconds, 0, str(destination))


def test_an_export_that_cannot_be_written_ends_the_run(tmp_path: Path) -> None:
    """Process 0 exports after the last commit while process 1 waits for it to finish."""
    run = _run(tmp_path)
    destination = _store_path(run.model_url)
    destination.parent.mkdir(parents=True)
    destination.write_text("not a folder")
    result, seconds = _launch_and_wait(run)
    _assert_failed_fast(result, seconds, 0, str(destination))
    assert _store_path(run.checkpoint_url).joinpath(f"step_{STEPS:08d}", "COMMIT").exists()


def test_the_scratch_directory_goes_on_success_and_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Staging, the data cache and the children's TMPDIR live under one directory in TMPDIR,
    removed when the launch ends (about 120 MB per two-process run were left before)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr("tempfile.tempdir", None)
    run = _run(tmp_path)
    ok = Launch(run, 2, [*ARGS[:2], "--steps", "2"]).wait(TIMEOUT_S)
    assert ok.returncodes == [0, 0]
    assert not list(tmp.iterdir())
    (_store_path(run.data_url) / _shard_only_process_1_reads_first(run)).unlink()
    failed = Launch(LocalRun(run.store_url, run="other"), 2, ARGS).wait(TIMEOUT_S)
    assert failed.failed == 1
    assert not list(tmp.iterdir())
