"""Serving a registry alias: not ready (and saying which alias is missing) until
`aliases/<NAME>.json` exists, then the version it names, the next one when it moves, and the
same one when the alias file is corrupt (logged with its URL). `--model-alias` is exclusive
with a pinned version."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlstack.workloads.serve.main import main
from mlstack.workloads.serve.server import ServerThread
from tests.workloads.serve.conftest import READY_TIMEOUT_S, Bundle, Client, server_options

WAIT_S = 60.0


def _wait_for(predicate: Callable[[], bool], what: str) -> None:
    pause = threading.Event()
    for _ in range(int(WAIT_S / 0.02)):
        if predicate():
            return
        pause.wait(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _set_alias(root: Path, alias: str, version: str, revision: int) -> None:
    """What the registry writes (`workloads.registry`), atomically enough for a test."""
    path = root / "aliases" / f"{alias}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "alias": alias,
        "version": version,
        "revision": str(revision),
        "updated": "2026-12-03T02:00:00Z",
        "by": "test",
        "reason": "test",
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)


def test_a_server_follows_an_alias(tiny_bundle: Bundle, tmp_path: Path) -> None:
    root = tmp_path / "models"
    for version in ("v1", "v2"):
        shutil.copytree(
            tiny_bundle.root / "models" / "versions" / tiny_bundle.version,
            root / "versions" / version,
        )
    events: list[dict[str, Any]] = []
    server = ServerThread(
        server_options(root.as_uri(), model_alias="champion", reload_interval_s=0.2),
        on_event=events.append,
    )
    try:
        client = Client(server.url)
        _wait_for(lambda: server.engine.last_error is not None, "the first check")
        not_ready = client.get("/readyz")
        assert not_ready.status == 503
        reason = not_ready.json()["error"]
        assert "alias 'champion' does not exist" in reason
        assert f"{root.as_uri()}/aliases/champion.json" in reason
        assert "fix: move it to a version with `mlstack models promote`" in reason
        waiting = [e for e in events if e["event"] == "waiting"]
        assert len(waiting) == 1 and "alias 'champion' does not exist" in waiting[0]["reason"]

        _set_alias(root, "champion", "v1", 1)
        server.wait_ready(READY_TIMEOUT_S)
        assert client.get("/readyz").json() == {
            "status": "ready",
            "model": "v1",
            "alias": "champion",
        }

        _set_alias(root, "champion", "v2", 2)
        _wait_for(lambda: client.get("/readyz").json().get("model") == "v2", "the alias move")
        assert client.complete(prompt="a", max_tokens=2).json()["model"] == "v2"
        reloaded = [e for e in events if e["event"] == "reloaded"]
        assert reloaded[-1]["version"] == "v2" and reloaded[-1]["alias"] == "champion"

        (root / "aliases" / "champion.json").write_text("{not json")
        _wait_for(lambda: any(e["event"] == "load_failed" for e in events), "the corrupt alias")
        failed = next(e for e in events if e["event"] == "load_failed")
        assert f"{root.as_uri()}/aliases/champion.json is not an alias file" in failed["error"]
        ready = client.get("/readyz")
        assert (ready.status, ready.json()["model"]) == (200, "v2")
    finally:
        assert server.stop() == 0


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    return err.strip()


def test_an_alias_and_a_version_together_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = tmp_path.as_uri()
    monkeypatch.delenv("MLSTACK_MODEL_VERSION", raising=False)
    monkeypatch.setenv("MLSTACK_MODEL_ALIAS", "champion")
    assert _error(capsys, ["--model-url", url, "--model-version", "v1"]) == (
        "error: both a version ('v1': --model-version or $MLSTACK_MODEL_VERSION) and an alias "
        "('champion': --model-alias or $MLSTACK_MODEL_ALIAS) to serve; fix: set only one"
    )
    assert _error(capsys, ["--model-url", url, "--model-alias", "../x"]).startswith(
        "error: --model-alias '../x' is not an alias name; fix:"
    )
