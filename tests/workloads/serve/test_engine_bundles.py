"""The engine never serves a bundle with a non-finite parameter: it does not become ready on
one, and a reload to one keeps the model it serves."""

from __future__ import annotations

from pathlib import Path

from mlstack.workloads.serve.engine import Engine, EngineOptions
from mlstack.workloads.serve.metrics import EventLog
from mlstack.workloads.storage import open_store
from mlstack.workloads.train.configs import get_config
from mlstack.workloads.train.export import export_bundle, read_bundle
from tests.workloads.serve.conftest import LENGTH_BUCKETS, MAX_BATCH, Bundle
from tests.workloads.train.test_export import nan_bundle


def _engine(url: str, events: list[dict[str, object]]) -> Engine:
    options = EngineOptions(
        model_url=url, max_batch=MAX_BATCH, length_buckets=LENGTH_BUCKETS, reload_interval_s=3600
    )
    return Engine(options, EventLog(on_event=events.append, echo=False))


def test_a_nan_bundle_never_becomes_ready(tiny_bundle: Bundle, tmp_path: Path) -> None:
    url = (tmp_path / "models").as_uri()
    _, _, params = read_bundle(open_store(tiny_bundle.url), tiny_bundle.version, tmp_path)
    version = nan_bundle(open_store(url), tmp_path / "staging", 5, params)
    events: list[dict[str, object]] = []
    engine = _engine(url, events)
    try:
        assert not engine.check_for_update()
        assert not engine.ready
        assert engine.last_error is not None
        assert f"versions/{version} is not servable: 1 parameter array" in engine.last_error
        assert [e["event"] for e in events] == ["load_failed"]
    finally:
        engine.close()


def test_a_reload_to_a_nan_bundle_keeps_the_model_served(
    tiny_bundle: Bundle, tmp_path: Path
) -> None:
    url = (tmp_path / "models").as_uri()
    store = open_store(url)
    _, _, params = read_bundle(open_store(tiny_bundle.url), tiny_bundle.version, tmp_path)
    good = export_bundle(
        store,
        tmp_path / "staging",
        step=1,
        params=params,
        config=get_config("tiny"),
        metrics={},
        dataset_url=None,
    )
    events: list[dict[str, object]] = []
    engine = _engine(url, events)
    try:
        assert engine.check_for_update()
        nan_bundle(store, tmp_path / "staging", 2, params)
        assert not engine.check_for_update()
        assert engine.current is not None and engine.current.version == good
        assert engine.last_error is not None and "is not servable" in engine.last_error
        assert engine.reloads == 0
    finally:
        engine.close()
