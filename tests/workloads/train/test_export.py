"""workloads.train.export: a serving bundle, then the `latest` pointer, last."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests_support import RecordingStore

from mlstack.workloads.storage import Store, open_store
from mlstack.workloads.train.configs import get_config
from mlstack.workloads.train.data import tokenizer_facts
from mlstack.workloads.train.export import (
    BUNDLE_FORMAT,
    LATEST,
    ExportError,
    bundle_version,
    export_bundle,
    latest_version,
    read_bundle,
)

PARAMS = {"embed.embedding": np.arange(12, dtype=np.float32).reshape(3, 4), "pos": np.ones(2)}


def test_bundle_round_trip_and_latest_written_last(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path / "models")
    cfg = get_config("tiny")
    version = export_bundle(
        store,
        tmp_path / "staging",
        step=40,
        params=PARAMS,
        config=cfg,
        metrics={"loss": 2.5},
        dataset_url="file:///data",
    )
    assert version == bundle_version(40) == "step-00000040"
    assert store.writes[-1] == LATEST
    assert {f"versions/{version}/params.npz", f"versions/{version}/bundle.json"} <= set(
        store.writes[:-1]
    )
    assert latest_version(store) == version
    manifest, model, params = read_bundle(store, version, tmp_path / "read")
    assert manifest["format"] == BUNDLE_FORMAT
    assert manifest["tokenizer"] == tokenizer_facts()
    assert manifest["training"] == {
        "config": "tiny",
        "step": 40,
        "dataset": "file:///data",
        "metrics": {"loss": 2.5},
    }
    assert model == cfg.model
    assert params.keys() == PARAMS.keys()
    for name, value in PARAMS.items():
        np.testing.assert_array_equal(params[name], value)
    assert not list((tmp_path / "staging").iterdir())


def test_a_newer_export_moves_latest(tmp_path: Path) -> None:
    store = open_store((tmp_path / "models").as_uri())
    assert latest_version(store) is None
    for step in (10, 20):
        export_bundle(
            store,
            tmp_path,
            step=step,
            params=PARAMS,
            config=get_config("tiny"),
            metrics={},
            dataset_url=None,
        )
    pointer = json.loads(store.get_bytes(LATEST))
    assert pointer == {"version": "step-00000020", "path": "versions/step-00000020/", "step": 20}
    assert store.exists("versions/step-00000010/params.npz")


def test_a_foreign_directory_is_not_read_as_a_bundle(tmp_path: Path) -> None:
    store = open_store((tmp_path / "models").as_uri())
    store.put_bytes("versions/v1/bundle.json", json.dumps({"format": "other"}).encode())
    with pytest.raises(ValueError, match="is not an mlstack serving bundle"):
        read_bundle(store, "v1", tmp_path)


def nan_bundle(store: Store, staging: Path, step: int, params: dict[str, np.ndarray]) -> str:
    """Export `params` with a NaN in one array the way a run before the check could, and
    point `latest` at it (export_bundle itself refuses); its version."""
    version = export_bundle(
        store,
        staging,
        step=step,
        params=params,
        config=get_config("tiny"),
        metrics={},
        dataset_url=None,
    )
    name = sorted(params)[0]
    poisoned = dict(params)
    poisoned[name] = params[name].copy()
    poisoned[name].flat[0] = np.nan
    local = staging / "poisoned.npz"
    np.savez(local, **poisoned)  # pyright: ignore[reportArgumentType]
    store.upload_file(local, f"versions/{version}/params.npz")
    local.unlink()
    return version


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_parameters_that_are_not_finite_are_not_exported(tmp_path: Path, bad: float) -> None:
    store = open_store((tmp_path / "models").as_uri())
    params = {**PARAMS, "embed.embedding": PARAMS["embed.embedding"].copy()}
    params["embed.embedding"][1, 2] = bad
    with pytest.raises(ExportError) as caught:
        export_bundle(
            store,
            tmp_path / "staging",
            step=40,
            params=params,
            config=get_config("tiny"),
            metrics={},
            dataset_url=None,
        )
    assert str(caught.value) == (
        f"refusing to export step 40 to {store.url()}: 1 parameter array(s) hold NaN or "
        "infinity (embed.embedding); fix: resume from an earlier checkpoint (the training "
        "diverged or its state is damaged)"
    )
    assert store.list() == []


def test_a_bundle_with_a_nan_is_not_read(tmp_path: Path) -> None:
    store = open_store((tmp_path / "models").as_uri())
    version = nan_bundle(store, tmp_path / "staging", 40, PARAMS)
    with pytest.raises(ValueError, match="is not servable: 1 parameter array"):
        read_bundle(store, version, tmp_path / "read")
