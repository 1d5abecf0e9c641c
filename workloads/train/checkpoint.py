"""Checkpoints: orbax on local disk, then the object store, committed by a marker written last.

Orbax cannot write `s3://`, and pods have no shared disk, so process 0 saves each checkpoint
asynchronously: `save` only queues the host copy of the state, and a background thread writes it
with an orbax CheckpointManager into a local staging directory, uploads the step's files to
`<checkpoint url>/step_<step>/`, then writes `step_<step>/COMMIT` last. (Orbax's own async mode
would run a second writer thread and make this one poll for its finalization; one thread doing
both in order is simpler and leaves the training loop only the enqueue.)

A step counts only once its COMMIT exists, so a crash mid-upload never leaves a corrupt
"latest": restore takes the newest committed step, and the next save cleans up what the crash
left. After a commit, committed steps beyond `keep` are deleted
(COMMIT first, so a step is never seen committed and half deleted).

The state arrives as a flat `{name: numpy array}` dict already on the host (the caller gathers
it from the devices), so every process can restore it regardless of how it was sharded.
Every process restores on its own: it downloads the step and reads it with its own orbax
manager.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp

from mlstack.workloads.storage import Store

COMMIT = "COMMIT"
_STEP_PREFIX = "step_"

HostState = dict[str, np.ndarray]


class CheckpointError(RuntimeError):
    """A checkpoint could not be saved, committed or restored."""


def step_prefix(step: int) -> str:
    return f"{_STEP_PREFIX}{step:08d}"


def _parse_step(name: str) -> int | None:
    if not name.startswith(_STEP_PREFIX):
        return None
    digits = name[len(_STEP_PREFIX) :]
    return int(digits) if digits.isdigit() else None


#: Mean array size at and above which a checkpoint is written as one tensorstore per array
#: rather than one OCDBT database. Per array, orbax writes large arrays about 1.5x faster on
#: small hosts and the files upload in parallel; but each file costs about a millisecond of CPU
#: to write and upload, which for many small arrays (the `tiny` model's 61) costs more than
#: the whole OCDBT write (benchmarks/checkpoint_io.py and train_harness.py, RESULTS.md).
PER_ARRAY_FILES_FROM_BYTES = 1 << 20


def _manager(root: Path, process: int, *, use_ocdbt: bool = True) -> ocp.CheckpointManager:
    """An orbax manager that only `process` takes part in: no cross-process barriers. Restore
    reads either layout, whichever `use_ocdbt` says."""
    root.mkdir(parents=True, exist_ok=True)
    only = ocp.options.MultiprocessingOptions(primary_host=process, active_processes={process})
    return ocp.CheckpointManager(
        root,
        item_handlers=ocp.StandardCheckpointHandler(
            use_ocdbt=use_ocdbt, multiprocessing_options=only
        ),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=None,
            enable_async_checkpointing=False,
            create=False,
            multiprocessing_options=only,
        ),
    )


class Checkpoints:
    """The checkpoints of one run in `store`, staged through `local_dir`."""

    def __init__(
        self,
        store: Store,
        local_dir: Path,
        *,
        keep: int,
        process_index: int = 0,
    ) -> None:
        if keep < 1:
            raise CheckpointError(f"keep={keep}: keep at least 1 checkpoint")
        self.store = store
        self.keep = keep
        self.process_index = process_index
        self.primary = process_index == 0
        self._local = local_dir
        self._save_root = local_dir / "save"
        self._saver: ocp.CheckpointManager | None = None
        self._uploads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ckpt-upload")
        self._pending: list[Future[None]] = []
        self._lock = threading.Lock()
        self.last_committed: int | None = None

    # -- reading ----------------------------------------------------------------------------

    def steps(self) -> tuple[list[int], list[int]]:
        """(committed, uncommitted) steps in the store, each ascending."""
        committed: set[int] = set()
        seen: set[int] = set()
        for key in self.store.list():
            head, _, rest = key.partition("/")
            step = _parse_step(head)
            if step is None:
                continue
            seen.add(step)
            if rest == COMMIT:
                committed.add(step)
        return sorted(committed), sorted(seen - committed)

    def latest_step(self) -> int | None:
        committed, _ = self.steps()
        return committed[-1] if committed else None

    def restore(
        self, step: int, target: Mapping[str, tuple[tuple[int, ...], np.dtype]]
    ) -> HostState:
        """The host state of committed `step`, shaped like `target` (name -> shape, dtype)."""
        prefix = step_prefix(step)
        if not self.store.exists(f"{prefix}/{COMMIT}"):
            raise CheckpointError(
                f"{self.store.url(prefix)} is not committed (no {COMMIT}); restore a committed step"
            )
        root = self._local / f"restore-p{self.process_index}"
        shutil.rmtree(root, ignore_errors=True)
        local_step = root / str(step)
        self.store.download_dir(prefix, local_step)
        (local_step / COMMIT).unlink(missing_ok=True)
        manager = _manager(root, self.process_index)
        try:
            item = {name: np.empty(shape, dtype) for name, (shape, dtype) in target.items()}
            restored = manager.restore(step, args=ocp.args.StandardRestore(item))
        except Exception as exc:
            raise CheckpointError(
                f"cannot read checkpoint {self.store.url(prefix)}: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            manager.close()
            shutil.rmtree(root, ignore_errors=True)
        state = {name: np.asarray(restored[name]) for name in target}
        for name, (shape, dtype) in target.items():
            got = state[name]
            if tuple(got.shape) != tuple(shape) or got.dtype != dtype:
                raise CheckpointError(
                    f"{self.store.url(prefix)}: {name} is {got.dtype}{list(got.shape)}, the run "
                    f"expects {np.dtype(dtype)}{list(shape)}: it was written by another model "
                    "config; fix: resume with the config that wrote it, or use a new checkpoint URL"
                )
        return state

    # -- writing ----------------------------------------------------------------------------

    def save(self, step: int, state: HostState) -> None:
        """Start saving `step` (process 0 only; others return at once). Returns while orbax
        writes and the upload runs; `wait()` blocks until it is committed."""
        if not self.primary:
            return
        self._raise_failed()
        # At most one upload waits behind the running one: a slow store slows training down
        # instead of filling the local disk.
        while len(self._pending) >= 2:
            self._pending.pop(0).result()
        self._pending.append(self._uploads.submit(self._commit, step, state))

    def wait(self) -> int | None:
        """Block until every save so far is committed; returns the newest committed step."""
        while self._pending:
            self._pending.pop(0).result()
        return self.last_committed

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._uploads.shutdown(wait=True)
            if self._saver is not None:
                self._saver.close()
            shutil.rmtree(self._save_root, ignore_errors=True)

    def _raise_failed(self) -> None:
        for future in [f for f in self._pending if f.done()]:
            self._pending.remove(future)
            future.result()

    def _commit(self, step: int, state: HostState) -> None:
        """On the upload thread: orbax to local disk, upload, COMMIT, prune."""
        if self._saver is None:
            shutil.rmtree(self._save_root, ignore_errors=True)
            mean_bytes = sum(x.nbytes for x in state.values()) / max(len(state), 1)
            self._saver = _manager(
                self._save_root, 0, use_ocdbt=mean_bytes < PER_ARRAY_FILES_FROM_BYTES
            )
        self._saver.save(step, args=ocp.args.StandardSave(state), force=True)
        local_step = self._save_root / str(step)
        prefix = step_prefix(step)
        keys = self.store.upload_dir(local_step, prefix)
        size = sum(p.stat().st_size for p in local_step.rglob("*") if p.is_file())
        marker = {"step": step, "files": len(keys), "bytes": size, "time": time.time()}
        self.store.put_bytes(f"{prefix}/{COMMIT}", json.dumps(marker).encode())
        with self._lock:
            self.last_committed = step
        shutil.rmtree(local_step, ignore_errors=True)
        self._prune()

    def _prune(self) -> None:
        committed, uncommitted = self.steps()
        newest = committed[-1]
        for step in committed[: -self.keep]:
            self._delete_step(step)
        # Leftovers of a crash mid-upload, older than what is now committed.
        for step in uncommitted:
            if step < newest:
                self._delete_step(step)

    def _delete_step(self, step: int) -> None:
        prefix = step_prefix(step)
        keys = self.store.list(prefix + "/")
        if f"{prefix}/{COMMIT}" in keys:
            self.store.delete(f"{prefix}/{COMMIT}")
        for key in keys:
            if key != f"{prefix}/{COMMIT}":
                self.store.delete(key)
