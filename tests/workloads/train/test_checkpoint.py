"""workloads.train.checkpoint: orbax locally, the store remotely, COMMIT written last.

Run against a directory and against moto's S3 server on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from tests_support import RecordingStore

from mlstack.workloads.storage import Store, open_store
from mlstack.workloads.train.checkpoint import COMMIT, CheckpointError, Checkpoints, step_prefix


def _state(step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(step)
    return {
        "params.w": rng.standard_normal((64, 32)).astype(np.float32),
        "params.b": rng.standard_normal(32).astype(np.float32),
        "step": np.asarray(step, np.int32),
    }


def _target(state: dict[str, np.ndarray]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    return {name: (x.shape, x.dtype) for name, x in state.items()}


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "file":
        return open_store((tmp_path / "ckpt").as_uri())
    bucket = f"ckpt-{uuid.uuid4().hex[:8]}"
    request.getfixturevalue("s3_admin").create_bucket(Bucket=bucket)
    return open_store(f"s3://{bucket}/team/job", endpoint=request.getfixturevalue("s3_endpoint"))


def test_saved_steps_are_committed_and_restore_exactly(store: Store, tmp_path: Path) -> None:
    ckpt = Checkpoints(store, tmp_path / "local", keep=3)
    ckpt.save(10, _state(10))
    ckpt.save(20, _state(20))
    assert ckpt.wait() == 20
    ckpt.close()
    assert ckpt.steps() == ([10, 20], [])
    reader = Checkpoints(store, tmp_path / "reader", keep=3, process_index=1)
    assert reader.latest_step() == 20
    restored = reader.restore(20, _target(_state(20)))
    for name, value in _state(20).items():
        np.testing.assert_array_equal(restored[name], value)
        assert restored[name].dtype == value.dtype


def test_only_the_newest_keep_steps_stay(store: Store, tmp_path: Path) -> None:
    ckpt = Checkpoints(store, tmp_path / "local", keep=2)
    for step in (1, 2, 3, 4, 5):
        ckpt.save(step, _state(step))
    ckpt.close()
    assert ckpt.steps() == ([4, 5], [])
    assert not [key for key in store.list() if key.startswith(step_prefix(1))]


def test_an_upload_cut_short_is_never_the_latest_and_is_cleaned_up(
    store: Store, tmp_path: Path
) -> None:
    ckpt = Checkpoints(store, tmp_path / "local", keep=3)
    ckpt.save(10, _state(10))
    ckpt.wait()
    # A crash mid-upload of step 20: some files, no COMMIT.
    store.put_bytes(f"{step_prefix(20)}/default/manifest.ocdbt", b"partial")
    assert ckpt.steps() == ([10], [20])
    assert ckpt.latest_step() == 10
    with pytest.raises(CheckpointError, match="is not committed"):
        ckpt.restore(20, _target(_state(20)))
    # The restarted run saves again; what the crash left goes once a newer step commits.
    ckpt.save(30, _state(30))
    ckpt.close()
    assert ckpt.steps() == ([10, 30], [])


def test_commit_is_the_last_write_of_a_step(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path / "store")
    ckpt = Checkpoints(store, tmp_path / "local", keep=3)
    ckpt.save(7, _state(7))
    ckpt.close()
    step_writes = [key for key in store.writes if key.startswith(step_prefix(7))]
    assert len(step_writes) > 3
    assert step_writes[-1] == f"{step_prefix(7)}/{COMMIT}"


def test_only_process_zero_writes(tmp_path: Path) -> None:
    store = open_store((tmp_path / "store").as_uri())
    other = Checkpoints(store, tmp_path / "local", keep=3, process_index=1)
    other.save(5, _state(5))
    other.close()
    assert store.list() == []


def test_a_restore_into_a_different_shape_fails_with_the_url(tmp_path: Path) -> None:
    store = open_store((tmp_path / "store").as_uri())
    ckpt = Checkpoints(store, tmp_path / "local", keep=3)
    ckpt.save(5, _state(5))
    ckpt.close()
    target = _target(_state(5))
    target["params.w"] = ((8, 8), np.dtype(np.float32))
    with pytest.raises(
        CheckpointError,
        match=r"step_00000005: params.w is float32\[64, 32\], the run expects float32\[8, 8\]",
    ):
        ckpt.restore(5, target)


def test_keep_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="keep at least 1"):
        Checkpoints(open_store(tmp_path.as_uri()), tmp_path / "local", keep=0)


@pytest.mark.parametrize(("rows", "ocdbt"), [(64, True), (4096, False)])
def test_small_arrays_go_in_one_database_large_ones_in_a_file_each(
    tmp_path: Path, rows: int, ocdbt: bool
) -> None:
    state = {f"params.w{i}": np.full((rows, 256), i, np.float32) for i in range(3)}
    store = open_store((tmp_path / "store").as_uri())
    ckpt = Checkpoints(store, tmp_path / "local", keep=1)
    ckpt.save(1, state)
    ckpt.close()
    assert any("ocdbt" in key for key in store.list()) == ocdbt
    restored = ckpt.restore(1, _target(state))
    assert all(np.array_equal(restored[k], v) for k, v in state.items())


def _step_files(root: Path, step: int) -> list[Path]:
    """The files of `step` in the file store at `root`, largest first (COMMIT left out)."""
    files = [p for p in (root / step_prefix(step)).rglob("*") if p.is_file() and p.name != COMMIT]
    return sorted(files, key=lambda p: -p.stat().st_size)


def _damage(root: Path, step: int, how: str) -> str:
    """Damage the largest file of `step` in the file store at `root`; its name in COMMIT."""
    path = _step_files(root, step)[0]
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0x04
        path.write_bytes(bytes(data))
    elif how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        path.unlink()
    return path.relative_to(root / step_prefix(step)).as_posix()


def _saved(tmp_path: Path, *steps: int) -> tuple[Path, Store]:
    root = tmp_path / "ckpt"
    store = open_store(root.as_uri())
    ckpt = Checkpoints(store, tmp_path / "writer", keep=3)
    for step in steps:
        ckpt.save(step, _state(step))
    ckpt.close()
    return root, store


@pytest.mark.parametrize("how", ["flip", "truncate", "missing"])
def test_a_damaged_newest_step_is_named_and_the_previous_one_restored(
    tmp_path: Path, how: str
) -> None:
    root, store = _saved(tmp_path, 10, 20)
    name = _damage(root, 20, how)
    reader = Checkpoints(store, tmp_path / "reader", keep=3)
    with pytest.raises(CheckpointError, match=f"checkpoint step 20 is damaged: {name}"):
        reader.restore(20, _target(_state(20)))
    warnings: list[str] = []
    restored = reader.restore_newest(_target(_state(20)), warnings.append)
    assert restored is not None
    step, state = restored
    assert step == 10
    assert all(np.array_equal(state[k], v) for k, v in _state(10).items())
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert warnings[0].startswith(f"checkpoint step 20 is damaged: {name} ")
    assert "resuming from step 10" in warnings[0]
    # Step 20 no longer counts: the run saves it again, and pruning never keeps it instead.
    assert reader.steps() == ([10], [20])


def test_when_every_committed_step_is_damaged_restore_refuses_and_changes_nothing(
    tmp_path: Path,
) -> None:
    root, store = _saved(tmp_path, 10, 20)
    first = _damage(root, 10, "flip")
    second = _damage(root, 20, "truncate")
    reader = Checkpoints(store, tmp_path / "reader", keep=3)
    with pytest.raises(CheckpointError) as caught:
        reader.restore_newest(_target(_state(20)), pytest.fail)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"every committed checkpoint at {store.url()} is damaged")
    assert f"step 20 is damaged: {second}" in message and f"step 10 is damaged: {first}" in message
    assert "fix: " in message
    assert reader.steps() == ([10, 20], [])


def test_a_commit_without_checksums_is_accepted_with_a_warning(tmp_path: Path) -> None:
    """COMMIT markers written before checksums: restored (a run started before the upgrade
    keeps its checkpoints), a missing or truncated file is still caught by the file count and
    size they carry, and the warning says that a flipped bit would not be."""
    root, store = _saved(tmp_path, 10)
    key = f"{step_prefix(10)}/{COMMIT}"
    marker = json.loads(store.get_bytes(key))
    store.put_bytes(
        key, json.dumps({k: marker[k] for k in ("step", "files", "bytes", "time")}).encode()
    )
    reader = Checkpoints(store, tmp_path / "reader", keep=3)
    warnings: list[str] = []
    state = reader.restore(10, _target(_state(10)), warnings.append)
    assert all(np.array_equal(state[k], v) for k, v in _state(10).items())
    assert warnings == [
        "checkpoint step 10 has no checksums (written by an older mlstack): "
        "a damaged byte in it would go unnoticed"
    ]
    _damage(root, 10, "truncate")
    with pytest.raises(
        CheckpointError, match=r"checkpoint step 10 is damaged: .* bytes, its COMMIT"
    ):
        reader.restore(10, _target(_state(10)), warnings.append)


def test_a_step_saved_again_holds_only_its_new_files(tmp_path: Path) -> None:
    _, store = _saved(tmp_path, 10)
    stale = f"{step_prefix(20)}/default/ocdbt.process_0/d/left-by-an-earlier-try"
    store.put_bytes(stale, b"old bytes")
    _saved(tmp_path, 20)
    assert stale not in store.list()
    reader = Checkpoints(store, tmp_path / "reader", keep=3)
    restored = reader.restore(20, _target(_state(20)))
    assert all(np.array_equal(restored[k], v) for k, v in _state(20).items())


#: A damaged checkpoint restored in a child process: with 60 arrays, orbax used to fail on the
#: first and leave the others' reads to call into its closed event loop.
_TRUNCATED_RESTORE = """
import sys
from pathlib import Path
import numpy as np
from mlstack.workloads.storage import open_store
from mlstack.workloads.train.checkpoint import CheckpointError, Checkpoints
root = Path(sys.argv[1])
rng = np.random.default_rng(0)
state = {f"params.w{i}": rng.standard_normal((256, 64)).astype(np.float32) for i in range(60)}
store = open_store((root / "ckpt").as_uri())
ckpt = Checkpoints(store, root / "local", keep=3)
ckpt.save(1, state)
ckpt.close()
big = max((p for p in (root / "ckpt").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
big.write_bytes(big.read_bytes()[: big.stat().st_size // 2])
target = {k: (v.shape, v.dtype) for k, v in state.items()}
try:
    Checkpoints(store, root / "r", keep=3).restore(1, target)
except CheckpointError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
"""


def test_a_truncated_file_is_one_line_without_event_loop_tracebacks(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _TRUNCATED_RESTORE, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 2, err
    assert out == ""
    lines = [line for line in err.splitlines() if not line.startswith("WARNING:absl:")]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: checkpoint step 1 is damaged: ")
    assert "its COMMIT says" in lines[0]
