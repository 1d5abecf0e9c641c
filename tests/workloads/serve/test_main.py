"""The entry point: bad input is one `error:` line and exit 2; as a real child process, SIGHUP
swaps in a newer bundle, a full queue answers 429, and SIGTERM drains (readyz and new requests
503, queued and running requests 200) and exits 0.

The child serves an untrained model larger than `tiny` (d_model 256, 4 layers, context 512) so
that a request runs for a few tenths of a second: long enough to see it queued and draining
without any timing assertion."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from mlstack.workloads.contract import MODEL_URL, MODEL_VERSION
from mlstack.workloads.serve.http_limits import HttpLimits
from mlstack.workloads.serve.main import build_options, main, parse_args
from mlstack.workloads.serve.server import ServeOptions, ServerProcess
from mlstack.workloads.storage import open_store
from mlstack.workloads.train.configs import ModelConfig, TrainConfig
from mlstack.workloads.train.export import export_bundle
from mlstack.workloads.train.model import init_model
from mlstack.workloads.train.state import flatten
from tests.workloads.serve.conftest import READY_TIMEOUT_S, Bundle, Client, server_options

WAIT_S = 60.0
SLOW = TrainConfig(
    name="serve-test-slow",
    model=ModelConfig(d_model=256, n_layers=4, n_heads=4, seq_len=512),
    global_batch_size=1,
    learning_rate=0.0,
    warmup_steps=0,
    total_steps=1,
)


@pytest.fixture(autouse=True)
def _no_contract_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODEL_URL, raising=False)
    monkeypatch.delenv(MODEL_VERSION, raising=False)


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err.strip()


def test_bad_input_is_one_error_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = tmp_path.as_uri()
    assert _error(capsys, []) == (
        f"error: no --model-url given and ${MODEL_URL} is not set; fix: set one"
    )
    assert "unsupported scheme 'ftp'" in _error(capsys, ["--model-url", "ftp://host/models"])
    assert _error(capsys, ["--model-url", url, "--max-batch", "0"]) == (
        "error: --max-batch 0 must be at least 1; fix: raise it"
    )
    assert _error(capsys, ["--model-url", url, "--length-buckets", "16,x"]).startswith(
        "error: --length-buckets '16,x' is not a comma-separated list of integers"
    )
    assert _error(capsys, ["--model-url", url, "--max-headers", "0"]) == (
        "error: --max-headers 0 must be at least 1; fix: raise it"
    )
    assert _error(capsys, ["--model-url", url, "--port", "70000"]) == (
        "error: --port 70000 is not a TCP port; fix: use 0 to 65535"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert _error(capsys, ["--model-url", url, "--port", str(port)]).startswith(
            f"error: cannot listen on 127.0.0.1:{port}: "
        )


def test_the_contract_gives_the_url_and_the_pinned_version(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(MODEL_URL, tmp_path.as_uri())
    monkeypatch.setenv(MODEL_VERSION, "step-00000010")
    options = build_options(parse_args(["--max-batch", "8", "--length-buckets", "32,16"]))
    assert (options.model_url, options.model_version) == (tmp_path.as_uri(), "step-00000010")
    assert (options.max_batch, options.length_buckets) == (8, (32, 16))
    assert options.http_limits() == HttpLimits()
    limits = ["--max-header-bytes", "9000", "--max-headers", "7", "--header-timeout-s", "2.5"]
    tight = build_options(parse_args(limits)).http_limits()
    assert (tight.max_header_bytes, tight.max_headers, tight.header_timeout_s) == (9000, 7, 2.5)
    # The child process gets the same limits (ServerProcess passes as_args()).
    given = ServeOptions(
        model_url=tmp_path.as_uri(), model_version="v3", max_header_line_bytes=300, max_headers=7
    )
    assert build_options(parse_args(given.as_args())) == given
    flag = build_options(parse_args(["--model-url", "file:///other", "--model-version", "v2"]))
    assert (flag.model_url, flag.model_version) == ("file:///other", "v2")


def _export_slow(url: str, step: int, seed: int, staging: Path) -> str:
    params = nnx.to_pure_dict(nnx.state(init_model(SLOW.model, seed), nnx.Param))
    flat = {name: np.asarray(value) for name, value in flatten(params).items()}
    return export_bundle(
        open_store(url),
        staging,
        step=step,
        params=flat,
        config=SLOW,
        metrics={},
        dataset_url=None,
    )


def _gauge(client: Client, name: str) -> float:
    for line in client.get("/metrics").body.decode().splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def _wait_for(predicate: Callable[[], bool], what: str) -> None:
    pause = threading.Event()
    for _ in range(int(WAIT_S / 0.01)):
        if predicate():
            return
        pause.wait(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_server_process_reloads_on_sighup_refuses_when_full_and_drains_on_sigterm(
    tmp_path: Path,
) -> None:
    url = (tmp_path / "models").as_uri()
    first = _export_slow(url, 1, seed=0, staging=tmp_path)
    options = ServeOptions(
        model_url=url,
        port=0,
        max_batch=1,
        max_queue=2,
        max_tokens_limit=500,
        length_buckets=(16,),
        reload_interval_s=3600.0,
    )
    lines: list[str] = []
    server = ServerProcess(options, on_line=lines.append, env={"JAX_PLATFORMS": "cpu"})
    try:
        server.wait_ready(READY_TIMEOUT_S)
        client = Client(server.url)
        assert client.get("/readyz").json() == {"status": "ready", "model": first}

        second = _export_slow(url, 2, seed=1, staging=tmp_path)
        server.signal(signal.SIGHUP)
        _wait_for(lambda: any(e["event"] == "reloaded" for e in server.events), "the reload")
        assert client.complete(prompt="a", max_tokens=2).json()["model"] == second

        long = {"prompt": "abc", "max_tokens": 500, "temperature": 0}
        with ThreadPoolExecutor(3) as pool:
            # One runs (max_batch 1), then two wait: the queue is full.
            started = [pool.submit(Client(server.url).complete, **long)]
            _wait_for(lambda: _gauge(client, "mlstack_serve_running") == 1, "the running one")
            started += [pool.submit(Client(server.url).complete, **long) for _ in range(2)]
            _wait_for(lambda: _gauge(client, "mlstack_serve_queue_depth") == 2, "a full queue")
            full = client.complete(prompt="one more", max_tokens=2)
            assert full.status == 429

            server.signal(signal.SIGTERM)
            _wait_for(lambda: client.get("/readyz").status == 503, "draining")
            refused = client.complete(prompt="new", max_tokens=2)
            assert refused.status == 503
            assert "draining" in refused.json()["error"]
            answers = [f.result(WAIT_S) for f in started]
        assert [a.status for a in answers] == [200, 200, 200]
        assert {a.json()["model"] for a in answers} == {second}
        assert server.proc.wait(WAIT_S) == 0
        kinds = [e["event"] for e in server.events]
        assert kinds[:2] == ["listening", "loaded"]
        assert kinds[-3:] == ["draining", "drained", "stopped"]
        assert {"compiled", "warmed", "ready", "reloaded"} <= set(kinds)
    finally:
        server.stop(10)
    assert not [line for line in lines if "Traceback" in line], lines


def _read_until_ready(proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    """The server's URL, once its `ready` event is out (read without a thread, so that the
    pipe can be closed afterwards)."""
    assert proc.stdout is not None
    fd, buffer, url = proc.stdout.fileno(), b"", None
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            raise AssertionError(f"the server exited: {buffer.decode()[-2000:]}")
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            event = json.loads(line) if line.startswith(b"{") else {}
            if event.get("event") == "listening":
                url = str(event["url"])
            elif event.get("event") == "ready":
                assert url is not None
                return url
    raise AssertionError(f"the server was not ready within {timeout_s:g} s")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_server_whose_output_pipe_is_closed_still_drains_and_exits_on_a_signal(
    tiny_bundle: Bundle, signum: int
) -> None:
    # `mlstack local up | grep ...` then Ctrl-C, or a closed terminal: the reader of the
    # server's stdout is gone before the signal comes, and the drain's first event fails to
    # write (EPIPE). The drain must go on: exit 0, the port closed.
    options = server_options(tiny_bundle.url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlstack.workloads.serve.main", *options.as_args()],
        env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = _read_until_ready(proc, READY_TIMEOUT_S)
        assert proc.stdout is not None
        proc.stdout.close()
        proc.send_signal(signum)
        # The old server raised BrokenPipeError in its handler and then ignored every signal,
        # answering on its port until killed.
        assert proc.wait(30) == 0
        host, _, port = url.removeprefix("http://").rpartition(":")
        with pytest.raises(ConnectionRefusedError), socket.create_connection((host, int(port)), 5):
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
