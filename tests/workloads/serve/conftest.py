"""A trained tiny bundle, one in-process server over it for the whole session, and a small
HTTP client. The server's buckets are few (batch 1, 2, 4; prompt length 16 and the context,
64) so that compiling them stays a few seconds; every other server of the session with the same
config and buckets reuses the compiled executables (`engine.shared_generator`)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlstack.workloads.serve.server import ServeOptions, ServerThread
from mlstack.workloads.train.configs import get_config
from mlstack.workloads.train.train import RunOptions, train_and_evaluate
from tests.workloads.train.conftest import prepare_small_dataset

#: The session server's settings; tests that start their own server copy them.
MAX_BATCH = 4
LENGTH_BUCKETS = (16,)
READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Bundle:
    """A models store with one trained tiny bundle."""

    url: str
    version: str
    root: Path


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    root = tmp_path_factory.mktemp("serve-bundle")
    result = train_and_evaluate(
        RunOptions(
            config=get_config("tiny"),
            steps=30,
            data_url=prepare_small_dataset((root / "data").as_uri()),
            checkpoint_url=(root / "ckpt").as_uri(),
            model_url=(root / "models").as_uri(),
            workdir=root / "work",
            log_every=30,
            checkpoint_every=30,
        )
    )
    assert result.exported is not None
    return Bundle((root / "models").as_uri(), result.exported, root)


def server_options(url: str, **overrides: Any) -> ServeOptions:
    fields: dict[str, Any] = {
        "model_url": url,
        "port": 0,
        "max_batch": MAX_BATCH,
        "max_queue": 16,
        "length_buckets": LENGTH_BUCKETS,
        "reload_interval_s": 3600.0,
    }
    fields.update(overrides)
    return ServeOptions(**fields)


@pytest.fixture(scope="session")
def server(tiny_bundle: Bundle) -> Iterator[ServerThread]:
    """The session's server over the tiny bundle, ready."""
    running = ServerThread(server_options(tiny_bundle.url))
    try:
        running.wait_ready(READY_TIMEOUT_S)
        yield running
    finally:
        assert running.stop() == 0


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """Plain HTTP/1.1 to one server, one keep-alive connection (reopened after errors)."""

    def __init__(self, url: str, timeout_s: float = 60.0) -> None:
        host, _, port = url.removeprefix("http://").rpartition(":")
        self.host, self.port, self.timeout_s = host, int(port), timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, self.timeout_s)
            try:
                self._conn.request(method, path, body=body, headers=headers or {})
                response = self._conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt:
                    raise
                continue
            reply = Reply(response.status, data, {k.lower(): v for k, v in response.getheaders()})
            if reply.headers.get("connection", "").lower() == "close":
                self.close()
            return reply
        raise AssertionError("unreachable")

    def complete(self, **fields: Any) -> Reply:
        body = json.dumps(fields).encode()
        return self.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@pytest.fixture
def client(server: ServerThread) -> Iterator[Client]:
    c = Client(server.url)
    try:
        yield c
    finally:
        c.close()
