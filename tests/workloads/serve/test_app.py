"""The HTTP API of a real server (uvicorn on 127.0.0.1, in a thread of this process): the
contract, batching, no compiles on the request path, the queue bound, readiness, hot reload,
draining, and a bounded fuzz."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from mlstack.workloads.serve.generate import Batch, Row
from mlstack.workloads.serve.protocol import openapi
from mlstack.workloads.serve.server import ServerThread
from mlstack.workloads.storage import open_store
from mlstack.workloads.train.configs import get_config
from mlstack.workloads.train.export import export_bundle, read_bundle
from tests.workloads.serve.conftest import READY_TIMEOUT_S, Bundle, Client, Reply, server_options

WAIT_S = 60.0


def _completion_schema() -> dict[str, Any]:
    return openapi(max_tokens_limit=63, max_body_bytes=65536)["components"]["schemas"]["Completion"]


def _error_line(reply: Reply) -> str:
    body = reply.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"], str) and body["error"] and "\n" not in body["error"]
    return body["error"]


def _metrics(client: Client) -> dict[str, float]:
    reply = client.get("/metrics")
    assert reply.status == 200
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


@contextmanager
def _gate(when: Callable[[Sequence[Row]], bool]) -> Iterator[threading.Event]:
    """Hold decode steps of batches running a row that matches `when` until the yielded event
    is set (the worker waits inside the step: nothing else joins meanwhile)."""
    gate = threading.Event()
    real = Batch.step

    def gated(self: Batch, max_steps: int | None = None) -> dict[int, np.ndarray]:
        if when(list(self.rows.values())):
            assert gate.wait(WAIT_S)
        return real(self, max_steps)

    Batch.step = gated  # type: ignore[method-assign]
    try:
        yield gate
    finally:
        gate.set()
        Batch.step = real  # type: ignore[method-assign]


def _prompt_is(text: str) -> Callable[[Sequence[Row]], bool]:
    marker = list(text.encode())
    return lambda rows: any(row.prompt.tolist() == marker for row in rows)


def _wait_for(predicate: Callable[[], bool], what: str) -> None:
    event = threading.Event()
    for _ in range(int(WAIT_S / 0.01)):
        if predicate():
            return
        event.wait(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_completion_has_the_documented_shape(client: Client, tiny_bundle: Bundle) -> None:
    reply = client.complete(prompt="import os\n", max_tokens=12, temperature=0.8, seed=5)
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    jsonschema.validate(body, _completion_schema())
    assert body["model"] == tiny_bundle.version
    assert body["id"].startswith("cmpl-")
    (choice,) = body["choices"]
    usage = body["usage"]
    assert usage["prompt_tokens"] == len(b"import os\n")
    assert usage["completion_tokens"] == 12 or choice["finish_reason"] == "stop"
    assert len(choice["text"].encode()) <= usage["completion_tokens"] * 3
    again = client.complete(prompt="import os\n", max_tokens=12, temperature=0.8, seed=5)
    assert again.json()["choices"] == body["choices"]


def test_a_stop_sequence_ends_the_text_before_it(client: Client) -> None:
    base = client.complete(prompt="def main(", max_tokens=30, temperature=0.9, seed=11).json()
    text = base["choices"][0]["text"]
    # Two characters from the middle, ASCII: a replacement character stands for bytes that
    # are not in the generated text.
    stop = next(text[i : i + 2] for i in range(8, len(text) - 1) if text[i : i + 2].isascii())
    cut = text.index(stop)
    reply = client.complete(
        prompt="def main(", max_tokens=30, temperature=0.9, seed=11, stop=["\x00", stop]
    )
    (choice,) = reply.json()["choices"]
    assert (choice["text"], choice["finish_reason"]) == (text[:cut], "stop")


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{not json", 400, "body is not valid JSON"),
        (b"[" * 5000, 400, "body is not valid JSON"),
        (b'{"prompt": "' + b"a" * 70_000 + b'"}', 413, "body is 70014 bytes; the limit is 65536"),
        (b'{"prompt": "abc", "max_tokens": 64}', 422, "max_tokens 64 is out of range: use 1 to 63"),
        (b'{"prompt": "' + b"a" * 60 + b'", "max_tokens": 5}', 422, "prompt is 60 tokens and"),
        (b'{"prompt": "abc", "temperature": "hot"}', 422, "temperature must be a number"),
        (b'{"prompt": "abc", "n": 2}', 422, "unknown field 'n'"),
        (b'{"prompt": ""}', 422, "prompt is empty"),
        (b'{"prompt": "\\ud800"}', 422, "prompt is not valid Unicode"),
    ],
)
def test_bad_input_gets_a_4xx_with_a_one_line_reason(
    client: Client, body: bytes, status: int, reason: str
) -> None:
    reply = client.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    assert reply.status == status
    assert _error_line(reply).startswith(reason)


def test_unknown_routes_and_methods_answer_json(client: Client) -> None:
    assert _error_line(missing := client.get("/v2/chat")) == "Not Found"
    assert missing.status == 404
    wrong = client.request("GET", "/v1/completions")
    assert (wrong.status, _error_line(wrong)) == (405, "Method Not Allowed")


def test_probes_and_the_openapi_description(client: Client, tiny_bundle: Bundle) -> None:
    assert client.get("/healthz").json() == {"status": "alive"}
    assert client.get("/readyz").json() == {"status": "ready", "model": tiny_bundle.version}
    spec = client.get("/openapi.json").json()
    assert spec == openapi(max_tokens_limit=63, max_body_bytes=65536)


def test_concurrent_requests_share_batches_and_get_what_they_get_alone(
    server: ServerThread,
) -> None:
    requests = [
        {"prompt": prompt, "max_tokens": tokens, "temperature": temp, "top_k": k, "seed": seed}
        for prompt, tokens, temp, k, seed in [
            ("import ", 30, 1.0, 0, 1),
            ("from email", 20, 0.0, 0, 0),
            ("class Parser(object):\n    def __init__(self", 10, 0.7, 10, 2),
            ("x", 40, 1.3, 0, 3),
            ("def ", 25, 1.0, 3, 4),
            ("#", 35, 0.5, 0, 5),
            ("return self._", 15, 1.0, 0, 6),
            ("    ", 45, 0.0, 0, 0),
        ]
    ]
    client = Client(server.url)
    alone = [client.complete(**r).json()["choices"] for r in requests]
    before = _metrics(client)
    # Hold the first request's decode until every other request waits in the queue, so that
    # they start together and run as one batch of at most 4, taking each other's slots as
    # they end.
    with ThreadPoolExecutor(len(requests) + 1) as pool, _gate(_prompt_is("gate")) as gate:
        first = pool.submit(Client(server.url).complete, prompt="gate", max_tokens=1)
        _wait_for(
            lambda: server.service.batcher.depth == 0 and not server.service.batcher.idle,
            "the gated request",
        )
        futures = [pool.submit(Client(server.url).complete, **r) for r in requests]
        _wait_for(lambda: server.service.batcher.depth == len(requests), "a full queue")
        gate.set()
        together = [f.result(WAIT_S).json()["choices"] for f in futures]
        assert first.result(WAIT_S).status == 200
    assert together == alone
    after = _metrics(client)

    def delta(name: str) -> float:
        return after[name] - before.get(name, 0.0)

    calls = delta("mlstack_serve_batch_size_count")
    # Every decode call ran at most 4 rows, and the batch did fill up.
    assert delta("mlstack_serve_batch_size_bucket{le=4.0}") == calls
    assert calls - delta("mlstack_serve_batch_size_bucket{le=2.0}") >= 1
    # One call for the gate, then the 8 requests' 225 tokens: a call makes at most 8 steps
    # of 4 rows, and it stops either when a row ends (8 times at most) or after 8 steps.
    assert 225 / (8 * 4) <= calls - 1 <= 8 + 225 / 8


def test_metrics_count_requests_tokens_and_the_queue(client: Client) -> None:
    before = _metrics(client)
    assert client.complete(prompt="ab", max_tokens=7, temperature=0).status == 200
    assert client.complete(prompt="ab", max_tokens=0).status == 422
    after = _metrics(client)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta("mlstack_serve_requests_total{status=200}") == 1
    assert delta("mlstack_serve_requests_total{status=422}") == 1
    assert delta("mlstack_serve_request_seconds_count") == 2
    assert 1 <= delta("mlstack_serve_generated_tokens_total") <= 7
    assert after["mlstack_serve_queue_depth"] == 0
    assert after["mlstack_serve_generated_tokens_per_second"] > 0


def test_no_request_compiles_or_traces_anything(server: ServerThread) -> None:
    events: list[str] = []

    def record(event: str, duration_secs: float, **kwargs: str | int) -> None:
        if event.startswith("/jax/core/compile/"):
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(record)
    try:
        with ThreadPoolExecutor(6) as pool:
            # Every batch and length bucket, greedy, sampled and top-k.
            shapes = [("a", 1), ("a" * 20, 4), ("b" * 40, 2), ("c", 3), ("import os", 4)]
            for prompt, n in shapes:
                replies = pool.map(
                    lambda i, p=prompt: Client(server.url).complete(
                        prompt=p, max_tokens=8, temperature=i % 2, top_k=i % 3, seed=i
                    ),
                    range(n),
                )
                assert {r.status for r in replies} == {200}
        assert events == []
        jax.jit(lambda x: x * 3 + 1)(jnp.arange(7))
        assert events, "the listener saw no compile of a new function: it counts nothing"
    finally:
        jax.monitoring.unregister_event_duration_listener(record)


def test_a_full_queue_answers_429_and_the_queued_requests_still_finish(
    tiny_bundle: Bundle,
) -> None:
    server = ServerThread(server_options(tiny_bundle.url, max_queue=2))
    try:
        server.wait_ready(READY_TIMEOUT_S)
        with ThreadPoolExecutor(3) as pool, _gate(_prompt_is("held")) as gate:
            held = pool.submit(Client(server.url).complete, prompt="held", max_tokens=2)
            _wait_for(lambda: not server.service.batcher.idle, "the held batch")
            queued = [
                pool.submit(Client(server.url).complete, prompt="q", max_tokens=2) for _ in range(2)
            ]
            _wait_for(lambda: server.service.batcher.depth == 2, "a full queue")
            refused = Client(server.url).complete(prompt="one more", max_tokens=2)
            assert refused.status == 429
            assert refused.headers["retry-after"] == "1"
            assert _error_line(refused) == "the queue is full (2 requests wait); retry later"
            gate.set()
            assert [f.result(WAIT_S).status for f in [held, *queued]] == [200, 200, 200]
    finally:
        assert server.stop() == 0


def test_a_request_whose_client_goes_away_while_queued_is_left_out(
    server: ServerThread, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    admitted: list[bytes] = []
    real_admit = Batch.admit

    def admit(self: Batch, rows: Sequence[Row]) -> list[int]:
        admitted.extend(bytes(row.prompt.astype(np.uint8)) for row in rows)
        return real_admit(self, rows)

    monkeypatch.setattr(Batch, "admit", admit)
    before = _metrics(client)
    with ThreadPoolExecutor(1) as pool, _gate(_prompt_is("held")) as gate:
        held = pool.submit(Client(server.url).complete, prompt="held", max_tokens=2)
        _wait_for(lambda: server.service.batcher.running == 1, "the held request")
        host, _, port = server.url.removeprefix("http://").rpartition(":")
        leaving = http.client.HTTPConnection(host, int(port))
        body = json.dumps({"prompt": "gone", "max_tokens": 2})
        leaving.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        _wait_for(lambda: server.service.batcher.depth == 1, "the queued request")
        leaving.close()
        _wait_for(
            lambda: (
                _metrics(client).get("mlstack_serve_requests_total{status=499}", 0.0)
                - before.get("mlstack_serve_requests_total{status=499}", 0.0)
                == 1
            ),
            "the disconnect",
        )
        gate.set()
        assert held.result(WAIT_S).status == 200
    _wait_for(lambda: server.service.batcher.idle, "an idle batcher")
    assert b"held" in admitted and b"gone" not in admitted


def test_draining_refuses_new_work_and_finishes_the_old(tiny_bundle: Bundle) -> None:
    server = ServerThread(server_options(tiny_bundle.url))
    server.wait_ready(READY_TIMEOUT_S)
    client = Client(server.url)
    with ThreadPoolExecutor(2) as pool, _gate(_prompt_is("slow")) as gate:
        running = pool.submit(Client(server.url).complete, prompt="slow", max_tokens=3)
        _wait_for(lambda: not server.service.batcher.idle, "the running batch")
        queued = pool.submit(Client(server.url).complete, prompt="queued", max_tokens=3)
        _wait_for(lambda: server.service.batcher.depth == 1, "the queued request")
        server.drain()
        assert (ready := client.get("/readyz")).status == 503
        assert "draining" in _error_line(ready)
        refused = client.complete(prompt="new", max_tokens=3)
        assert refused.status == 503 and "draining" in _error_line(refused)
        gate.set()
        assert [running.result(WAIT_S).status, queued.result(WAIT_S).status] == [200, 200]
    assert server.stop() == 0


def _export(url: str, step: int, params: dict[str, np.ndarray], staging: Path) -> str:
    return export_bundle(
        open_store(url),
        staging,
        step=step,
        params=params,
        config=get_config("tiny"),
        metrics={},
        dataset_url=None,
    )


def test_a_server_waits_for_a_bundle_then_serves_it(tiny_bundle: Bundle, tmp_path: Path) -> None:
    url = (tmp_path / "models").as_uri()
    server = ServerThread(server_options(url, reload_interval_s=0.2))
    try:
        client = Client(server.url)
        assert client.get("/healthz").status == 200
        not_ready = client.get("/readyz")
        assert not_ready.status == 503
        assert _error_line(not_ready) == f"no model is loaded yet (no bundle at {url} yet)"
        refused = client.complete(prompt="a")
        assert refused.status == 503 and refused.headers["retry-after"] == "1"
        _, _, params = read_bundle(open_store(tiny_bundle.url), tiny_bundle.version, tmp_path)
        version = _export(url, 7, params, tmp_path / "staging")
        server.wait_ready(READY_TIMEOUT_S)
        assert client.complete(prompt="a", max_tokens=2).json()["model"] == version
    finally:
        assert server.stop() == 0


def test_a_newer_bundle_is_swapped_in_while_a_request_runs_on_the_old(
    tiny_bundle: Bundle, tmp_path: Path
) -> None:
    url = (tmp_path / "models").as_uri()
    _, _, params = read_bundle(open_store(tiny_bundle.url), tiny_bundle.version, tmp_path)
    old = _export(url, 1, params, tmp_path / "staging")
    server = ServerThread(server_options(url))
    try:
        server.wait_ready(READY_TIMEOUT_S)
        client = Client(server.url)
        request = {"prompt": "import ", "max_tokens": 20, "temperature": 1.0, "seed": 3}
        before = client.complete(**request).json()
        assert before["model"] == old
        # Other parameters: the newer bundle answers differently.
        rng = np.random.default_rng(0)
        changed = {k: v + rng.normal(0, 0.05, v.shape).astype(v.dtype) for k, v in params.items()}
        with ThreadPoolExecutor(1) as pool, _gate(_prompt_is("in flight")) as gate:
            in_flight = pool.submit(Client(server.url).complete, prompt="in flight", max_tokens=5)
            _wait_for(lambda: not server.service.batcher.idle, "the running batch")
            new = _export(url, 2, changed, tmp_path / "staging")
            server.engine.request_reload()
            _wait_for(lambda: client.get("/readyz").json().get("model") == new, "the reload")
            gate.set()
            assert in_flight.result(WAIT_S).json()["model"] == old
        after = client.complete(**request).json()
        assert after["model"] == new
        assert after["choices"] != before["choices"]
        assert _metrics(client)["mlstack_serve_model_reloads_total"] == 1
    finally:
        assert server.stop() == 0


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_ODD_TEXT = st.text(
    alphabet=st.characters(categories=["Cs", "Co", "Cc", "Mn", "So", "Lo", "Zs", "Nd"]),
    max_size=70,
)
_VALUE = st.one_of(st.integers(-3, 70), st.floats(), st.booleans(), st.none(), _ODD_TEXT, _JSON)
_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "prompt": st.one_of(_ODD_TEXT, st.text(min_size=1, max_size=64), _VALUE),
        "max_tokens": _VALUE,
        "temperature": st.one_of(st.floats(-1, 3), _VALUE),
        "top_k": _VALUE,
        "seed": st.one_of(st.integers(-1, 2**33), _VALUE),
        "stop": st.one_of(st.lists(_ODD_TEXT, max_size=5), _VALUE),
        "extra": _VALUE,
    },
)
_BODIES = st.one_of(
    st.binary(max_size=200),
    _JSON.map(lambda v: json.dumps(v).encode()),
    _FIELDS.map(lambda v: json.dumps(v).encode()),
    _FIELDS.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.integers(60_000, 70_000).map(lambda n: b'{"prompt": "' + b"a" * n + b'"}'),
)


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(body=_BODIES, content_type=st.sampled_from(["application/json", "text/plain", ""]))
def test_fuzzed_bodies_never_get_a_5xx(
    server: ServerThread, body: bytes, content_type: str
) -> None:
    client = Client(server.url)
    try:
        headers = {"Content-Type": content_type} if content_type else {}
        reply = client.request("POST", "/v1/completions", body, headers)
        assert reply.status in (200, 400, 413, 422), (reply.status, reply.body[:200])
        if reply.status == 200:
            jsonschema.validate(reply.json(), _completion_schema())
        else:
            _error_line(reply)
        assert client.get("/healthz").status == 200
    finally:
        client.close()


def test_a_pinned_version_is_served_when_latest_moves_on(
    tiny_bundle: Bundle, tmp_path: Path
) -> None:
    url = (tmp_path / "models").as_uri()
    _, _, params = read_bundle(open_store(tiny_bundle.url), tiny_bundle.version, tmp_path)
    pinned = _export(url, 1, params, tmp_path / "staging")
    newest = _export(url, 2, params, tmp_path / "staging")
    server = ServerThread(server_options(url, model_version=pinned, reload_interval_s=0.1))
    try:
        server.wait_ready(READY_TIMEOUT_S)
        client = Client(server.url)
        assert client.complete(prompt="a", max_tokens=2).json()["model"] == pinned
        server.engine.request_reload()
        assert not server.engine.check_for_update()
        assert client.get("/readyz").json()["model"] == pinned != newest
    finally:
        assert server.stop() == 0


def test_a_failing_decode_is_a_counted_500_with_one_line(
    server: ServerThread, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Batch, max_steps: int | None = None) -> dict[int, np.ndarray]:
        raise RuntimeError("device lost\nsecond line")

    monkeypatch.setattr(Batch, "step", broken)
    before = _metrics(client)
    reply = client.complete(prompt="a", max_tokens=2)
    assert reply.status == 500
    assert _error_line(reply) == "internal error (RuntimeError: device lost); this is a bug"
    assert (
        _metrics(client)["mlstack_serve_requests_total{status=500}"]
        - before.get("mlstack_serve_requests_total{status=500}", 0.0)
        == 1
    )
    monkeypatch.undo()
    assert client.complete(prompt="a", max_tokens=2).status == 200
