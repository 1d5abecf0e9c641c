"""workloads.train.checkpoint: orbax locally, the store remotely, COMMIT written last.

Run against a directory and against moto's S3 server on 127.0.0.1."""

from __future__ import annotations

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
