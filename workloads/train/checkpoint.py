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

COMMIT also records every file's size and sha256, hashed from the local staging files while
they upload, and restore checks them before orbax reads anything. Orbax and tensorstore verify
nothing of the array bytes at the pinned versions: OCDBT checksums (CRC-32C) only its manifest
and tree nodes, not the out-of-line values that hold the arrays (tensorstore's
kvstore/ocdbt/index.rst, "Storage format"), and orbax's default zarr2 arrays carry no checksum
codec (orbax 0.12.8, `serialization/tensorstore_utils.py`: `crc32c` appears only in the zarr3
shard *index* codecs). A flipped bit therefore restores as a wrong (often NaN) weight, and a
truncated file fails deep inside tensorstore, which used to print one "Event loop is closed"
traceback per array still being read (orbax's `asyncio_utils._run_sync_via_new_loop` closes
its loop at the first error while tensorstore's other reads are in flight). Checked first, a
damaged step never reaches orbax: `restore_newest` names the step and the file in one line and
falls back to the previous committed step.

The state arrives as a flat `{name: numpy array}` dict already on the host (the caller gathers
it from the devices), so every process can restore it regardless of how it was sharded.
Every process restores on its own: it downloads the step and reads it with its own orbax
manager.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp

from mlstack.workloads.storage import NotFound, Store

COMMIT = "COMMIT"
_STEP_PREFIX = "step_"

HostState = dict[str, np.ndarray]


class CheckpointError(RuntimeError):
    """A checkpoint could not be saved, committed or restored."""


class DamagedCheckpoint(CheckpointError):  # noqa: N818 - reads as `checkpoint.DamagedCheckpoint`.
    """A committed step whose files do not match its COMMIT marker."""

    def __init__(self, step: int, problem: str) -> None:
        super().__init__(f"checkpoint step {step} is damaged: {problem}")
        self.step = step
        self.problem = problem


Target = Mapping[str, tuple[tuple[int, ...], np.dtype]]

#: Bytes hashed per read; hashlib releases the GIL for each, so files hash in parallel.
_HASH_CHUNK = 8 << 20
_HASH_THREADS = 4


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _file_sums(root: Path, pool: ThreadPoolExecutor) -> dict[str, Future[str]]:
    """relative path -> future sha256 of every file under `root`."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): pool.submit(_sha256, p) for p in files}


def _verify(step: int, local_step: Path, marker: dict[str, object]) -> str | None:
    """Check the downloaded files of `step` against its COMMIT `marker`; raises
    DamagedCheckpoint naming the first bad file. Returns a warning for an old marker, which
    has no checksums: only its file count and total size can be checked."""
    files = {p.relative_to(local_step).as_posix(): p for p in local_step.rglob("*") if p.is_file()}
    sums = marker.get("sha256")
    sizes = marker.get("sizes")
    if not isinstance(sums, dict) or not isinstance(sizes, dict):
        # Written before checksums existed. Accepted, not refused: refusing would strand every
        # run started before this change (its only checkpoints unusable, back to step 0). What
        # the old marker has still catches a missing or truncated file.
        total = sum(p.stat().st_size for p in files.values())
        if len(files) != marker.get("files") or total != marker.get("bytes"):
            raise DamagedCheckpoint(
                step,
                f"{len(files)} files of {total} bytes, its COMMIT says "
                f"{marker.get('files')} files of {marker.get('bytes')} bytes",
            )
        return (
            f"checkpoint step {step} has no checksums (written by an older mlstack): "
            "a damaged byte in it would go unnoticed"
        )
    for name in sorted(sums):
        path = files.get(name)
        if path is None:
            raise DamagedCheckpoint(step, f"{name} is missing")
        if path.stat().st_size != sizes.get(name):
            raise DamagedCheckpoint(
                step, f"{name} has {path.stat().st_size} bytes, its COMMIT says {sizes.get(name)}"
            )
    with ThreadPoolExecutor(_HASH_THREADS, thread_name_prefix="ckpt-verify") as pool:
        got = {name: pool.submit(_sha256, files[name]) for name in sorted(sums)}
        for name, future in got.items():
            if future.result() != sums[name]:
                raise DamagedCheckpoint(step, f"{name} does not match its sha256 in COMMIT")
    return None


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
        self, step: int, target: Target, warn: Callable[[str], None] | None = None
    ) -> HostState:
        """The host state of committed `step`, shaped like `target` (name -> shape, dtype).

        Its files are checked against the checksums in COMMIT before orbax reads them; a
        mismatch raises DamagedCheckpoint. `warn` gets the note that an old step has no
        checksums."""
        prefix = step_prefix(step)
        try:
            marker = json.loads(self.store.get_bytes(f"{prefix}/{COMMIT}"))
        except NotFound:
            raise CheckpointError(
                f"{self.store.url(prefix)} is not committed (no {COMMIT}); restore a committed step"
            ) from None
        except ValueError:
            raise DamagedCheckpoint(step, f"its {COMMIT} is not valid JSON") from None
        root = self._local / f"restore-p{self.process_index}"
        shutil.rmtree(root, ignore_errors=True)
        local_step = root / str(step)
        try:
            self.store.download_dir(prefix, local_step)
            (local_step / COMMIT).unlink(missing_ok=True)
            note = _verify(step, local_step, marker)
            if note is not None and warn is not None:
                warn(note)
            state = self._read(root, step, target, verified=note is None)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        for name, (shape, dtype) in target.items():
            got = state[name]
            if tuple(got.shape) != tuple(shape) or got.dtype != dtype:
                raise CheckpointError(
                    f"{self.store.url(prefix)}: {name} is {got.dtype}{list(got.shape)}, the run "
                    f"expects {np.dtype(dtype)}{list(shape)}: it was written by another model "
                    "config; fix: resume with the config that wrote it, or use a new checkpoint URL"
                )
        return state

    def _read(self, root: Path, step: int, target: Target, *, verified: bool) -> HostState:
        """Orbax's read of the step downloaded under `root`. A step whose checksums matched
        fails here only for a reason of this run (a config that does not fit it); one without
        checksums may be damaged, which lets `restore_newest` fall back past it."""
        manager = _manager(root, self.process_index)
        try:
            item = {name: np.empty(shape, dtype) for name, (shape, dtype) in target.items()}
            restored = manager.restore(step, args=ocp.args.StandardRestore(item))
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}".splitlines()[0]
            if not verified:
                raise DamagedCheckpoint(step, f"orbax cannot read it ({problem})") from exc
            raise CheckpointError(
                f"cannot read checkpoint {self.store.url(step_prefix(step))}: {problem}"
            ) from exc
        finally:
            manager.close()
        return {name: np.asarray(restored[name]) for name in target}

    def restore_newest(
        self, target: Target, warn: Callable[[str], None]
    ) -> tuple[int, HostState] | None:
        """(step, state) of the newest committed step that is intact; None when no step is
        committed. Each damaged newer step is reported through `warn`, in one line naming the
        step and the file, and loses its COMMIT (process 0 only; its files stay until the next
        commit prunes them), so that the steps this run saves again and the pruning never count
        it. Raises CheckpointError, touching nothing, when every committed step is damaged."""
        committed, _ = self.steps()
        damaged: list[DamagedCheckpoint] = []
        for step in reversed(committed):
            try:
                state = self.restore(step, target, warn)
            except DamagedCheckpoint as exc:
                damaged.append(exc)
                continue
            for bad in damaged:
                warn(
                    f"{bad} ({self.store.url(step_prefix(bad.step))}); resuming from step "
                    f"{step}, the newest intact one"
                )
                if self.primary:
                    self.store.delete(f"{step_prefix(bad.step)}/{COMMIT}")
            return step, state
        if not damaged:
            return None
        problems = "; ".join(str(exc) for exc in damaged)
        raise CheckpointError(
            f"every committed checkpoint at {self.store.url()} is damaged ({problems}); fix: "
            "restore their files from a copy, or move them aside (or pass a new "
            "--checkpoint-url) to start again from step 0"
        )

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
        # What an earlier try at this step left (a crash mid-upload, or a damaged step that a
        # resume fell back past) goes first, so the step holds exactly the files hashed below.
        self._delete_step(step)
        # Hash while the files upload: the upload reads the same files, from the page cache.
        with ThreadPoolExecutor(_HASH_THREADS, thread_name_prefix="ckpt-hash") as pool:
            pending = _file_sums(local_step, pool)
            keys = self.store.upload_dir(local_step, prefix)
            sums = {name: future.result() for name, future in pending.items()}
        sizes = {name: (local_step / name).stat().st_size for name in sums}
        marker = {
            "step": step,
            "files": len(keys),
            "bytes": sum(sizes.values()),
            "time": time.time(),
            "sizes": sizes,
            "sha256": sums,
        }
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
