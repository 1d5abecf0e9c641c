"""Running the server: uvicorn over the app, with a drain on SIGTERM, in this process (the
entry point, or a thread) or as a child process.

`run` serves in the calling thread until SIGTERM or SIGINT (or `stop`), then drains: readyz and
new completions answer 503, queued and running requests finish, and only then does uvicorn close
its listener and return (exit code 0). SIGHUP checks for a newer bundle at once.

For callers such as `mlstack local up`, `serve(options)` starts a server and returns a handle
with `.url`, `.wait_ready(timeout_s)` and `.stop()`: by default a child process running
`python -m mlstack.workloads.serve.main` (its JSON events are parsed from its stdout), or with
`in_process=True` a thread of this process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import IO, Any, Protocol

import uvicorn

from mlstack.workloads.serve.app import DEFAULT_MAX_BODY_BYTES, ApiOptions, Service, create_app
from mlstack.workloads.serve.engine import Engine, EngineOptions
from mlstack.workloads.serve.http_limits import HttpLimits, limited_protocol
from mlstack.workloads.serve.metrics import EventLog

#: Seconds a drain waits for queued and running requests before the server exits anyway.
DEFAULT_DRAIN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ServeOptions:
    """Everything `python -m mlstack.workloads.serve.main` takes on its command line."""

    model_url: str
    #: Serve only this bundle version (a canary's); None follows `latest` (or the alias).
    model_version: str | None = None
    #: Follow this registry alias (`aliases/<NAME>.json`); exclusive with model_version.
    model_alias: str | None = None
    host: str = "127.0.0.1"
    #: 0 picks a free port (the `listening` event and `Server.url` tell which).
    port: int = 8080
    max_batch: int = 32
    max_queue: int = 256
    reload_interval_s: float = 60.0
    max_tokens_limit: int = 256
    length_buckets: tuple[int, ...] | None = None
    #: A directory for XLA's persistent compilation cache: a restart with the same model
    #: config and buckets loads its executables instead of compiling them.
    compile_cache_dir: str | None = None
    compile_threads: int = 2
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S
    #: Limits on each request's head (`http_limits.HttpLimits`): over them, 431 or 408.
    max_header_line_bytes: int = HttpLimits.max_header_line_bytes
    max_header_bytes: int = HttpLimits.max_header_bytes
    max_headers: int = HttpLimits.max_headers
    header_timeout_s: float = HttpLimits.header_timeout_s

    def engine_options(self) -> EngineOptions:
        return EngineOptions(
            model_url=self.model_url,
            model_version=self.model_version,
            model_alias=self.model_alias,
            max_batch=self.max_batch,
            max_tokens_limit=self.max_tokens_limit,
            length_buckets=self.length_buckets,
            reload_interval_s=self.reload_interval_s,
            compile_threads=self.compile_threads,
        )

    def api_options(self) -> ApiOptions:
        return ApiOptions(
            max_batch=self.max_batch,
            max_queue=self.max_queue,
            max_body_bytes=self.max_body_bytes,
        )

    def http_limits(self) -> HttpLimits:
        return HttpLimits(
            max_header_line_bytes=self.max_header_line_bytes,
            max_header_bytes=self.max_header_bytes,
            max_headers=self.max_headers,
            header_timeout_s=self.header_timeout_s,
        )

    def as_args(self) -> list[str]:
        """The entry point's flags for these options."""
        args = [
            *("--model-url", self.model_url),
            *("--host", self.host),
            *("--port", str(self.port)),
            *("--max-batch", str(self.max_batch)),
            *("--max-queue", str(self.max_queue)),
            *("--reload-interval-s", str(self.reload_interval_s)),
            *("--max-tokens-limit", str(self.max_tokens_limit)),
            *("--compile-threads", str(self.compile_threads)),
            *("--max-body-bytes", str(self.max_body_bytes)),
            *("--drain-timeout-s", str(self.drain_timeout_s)),
            *("--max-header-line-bytes", str(self.max_header_line_bytes)),
            *("--max-header-bytes", str(self.max_header_bytes)),
            *("--max-headers", str(self.max_headers)),
            *("--header-timeout-s", str(self.header_timeout_s)),
        ]
        if self.model_version:
            args += ["--model-version", self.model_version]
        if self.model_alias:
            args += ["--model-alias", self.model_alias]
        if self.length_buckets:
            args += ["--length-buckets", ",".join(map(str, self.length_buckets))]
        if self.compile_cache_dir:
            args += ["--compile-cache", self.compile_cache_dir]
        return args


def use_compile_cache(directory: str | None) -> None:
    """Point XLA's persistent compilation cache at `directory` (every executable, however fast
    it compiled)."""
    if not directory:
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (OSError when it cannot be had)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _DrainingServer(uvicorn.Server):
    """uvicorn, except that SIGTERM and SIGINT drain the service before it exits (uvicorn's
    own handler stops accepting at once, then re-raises the signal: exit code -15)."""

    def __init__(self, config: uvicorn.Config, service: Service, log: EventLog) -> None:
        super().__init__(config)
        self.service = service
        self.log = log
        self.drain_timeout_s = DEFAULT_DRAIN_TIMEOUT_S
        self._drain_started = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_started:
            if sig == signal.SIGINT:
                self.force_exit = True
            return
        self.drain()

    def drain(self) -> None:
        """Refuse new completions, finish the queued ones, then stop serving. Called from the
        signal handler, so it only starts the drain's thread: that thread logs, and whatever
        logging does (block on the event log's lock, which the interrupted main thread may
        hold; fail on a closed stdout), the drain goes on and later signals still count."""
        if self._drain_started:
            return
        self._drain_started = True
        threading.Thread(target=self._drain, name="mlstack-drain", daemon=True).start()

    def _drain(self) -> None:
        try:
            self.log("draining", queued=self.service.batcher.depth)
            start = time.perf_counter()
            finished = self.service.drain(self.drain_timeout_s)
            self.log("drained", finished=finished, seconds=round(time.perf_counter() - start, 3))
        finally:
            self.should_exit = True


class _Running:
    """One server in this process: engine, service, app and uvicorn, on a bound socket."""

    def __init__(self, options: ServeOptions, log: EventLog, sock: socket.socket) -> None:
        use_compile_cache(options.compile_cache_dir)
        self.sock = sock
        self.url = url_of(sock)
        self.log = log
        self.engine = Engine(options.engine_options(), log)
        self.service = Service(self.engine, options.api_options())
        config = uvicorn.Config(
            create_app(self.service),
            http=limited_protocol(options.http_limits()),
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
            # After the drain, responses still being written get this long.
            timeout_graceful_shutdown=10,
        )
        self.server = _DrainingServer(config, self.service, log)
        self.server.drain_timeout_s = options.drain_timeout_s
        self.ready = threading.Event()

    def serve(self) -> None:
        """Serve until drained and stopped (blocks)."""
        self.log("listening", url=self.url)
        self.engine.start()
        threading.Thread(target=self._announce, name="mlstack-ready", daemon=True).start()
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.service.drain(0)
            self.engine.close()
            self.sock.close()
            self.log("stopped")

    def _announce(self) -> None:
        while not self.engine.ready:
            if self.server.should_exit or self.service.draining.is_set():
                return
            time.sleep(0.02)
        model = self.engine.current
        self.ready.set()
        self.log("ready", url=self.url, version=model.version if model else None)


def run(options: ServeOptions, log: EventLog | None = None) -> int:
    """Serve in this (main) thread until SIGTERM or SIGINT has drained it; the exit code.
    SIGHUP checks for a newer bundle. Raises OSError when the address cannot be had and
    StoreError for a bad model URL."""
    log = log or EventLog()
    running = _Running(options, log, bind(options.host, options.port))
    previous = signal.signal(signal.SIGHUP, lambda signum, frame: running.engine.request_reload())
    try:
        running.serve()
    finally:
        signal.signal(signal.SIGHUP, previous)
    return 0


class Server(Protocol):
    """A started server: where it listens, when it is ready, how to stop it."""

    @property
    def url(self) -> str: ...

    def wait_ready(self, timeout_s: float) -> None:
        """Return once /readyz would answer 200; TimeoutError (with the last load error) or
        RuntimeError (the server exited) otherwise."""
        ...

    def stop(self, timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S) -> int:
        """Drain and stop; the exit code (0 after a clean drain)."""
        ...


class ServerThread:
    """A server in a thread of this process (no signal handling: `stop` drains it)."""

    def __init__(
        self, options: ServeOptions, on_event: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self._log = EventLog(on_event=on_event, echo=False)
        self._running = _Running(options, self._log, bind(options.host, options.port))
        self.url = self._running.url
        self.engine = self._running.engine
        self.service = self._running.service
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="mlstack-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            self._running.serve()
        except BaseException as err:  # Reported by wait_ready and stop.
            self._error = err

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self._running.ready.wait(0.05):
            if not self._thread.is_alive():
                raise RuntimeError(f"the server stopped: {self._error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the server at {self.url} was not ready within {timeout_s:g} s "
                    f"(last load error: {self.engine.last_error})"
                )

    def drain(self) -> None:
        """Start draining, as SIGTERM does, without waiting."""
        self._running.server.drain()

    def stop(self, timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S) -> int:
        self.drain()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._running.server.force_exit = True
            self._thread.join(10)
        return 1 if self._error is not None or self._thread.is_alive() else 0


@dataclass
class ServerProcess:
    """`python -m mlstack.workloads.serve.main` as a child process, its events read from stdout."""

    options: ServeOptions
    on_event: Callable[[dict[str, Any]], None] | None = None
    #: Lines of its output that are not events (warnings, errors); default: to our stderr.
    on_line: Callable[[str], None] | None = None
    env: dict[str, str] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._url: str | None = None
        self._listening = threading.Event()
        self._ready = threading.Event()
        self._last_error: str | None = None
        self._tail: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlstack.workloads.serve.main", *self.options.as_args()],
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        self._reader = threading.Thread(
            target=self._read, args=(self.proc.stdout,), name="mlstack-server-output", daemon=True
        )
        self._reader.start()

    @property
    def url(self) -> str:
        """Where it listens (waits for its `listening` event)."""
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}: {self._why()}")
        assert self._url is not None
        return self._url

    def _read(self, stream: IO[str]) -> None:
        for raw in stream:
            line = raw.rstrip("\n")
            event = _event(line)
            if event is None:
                self._tail = [*self._tail[-19:], line]
                (self.on_line or _to_stderr)(line)
                continue
            self.events.append(event)
            kind = event["event"]
            if kind == "listening":
                self._url = str(event["url"])
                self._listening.set()
            elif kind == "ready":
                self._ready.set()
            elif kind == "load_failed":
                self._last_error = str(event.get("error"))
            if self.on_event is not None:
                self.on_event(event)

    def _why(self) -> str:
        return " | ".join(self._tail[-3:]) or "no output"

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}: {self._why()}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the server was not ready within {timeout_s:g} s "
                    f"(last load error: {self._last_error})"
                )

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def stop(self, timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S) -> int:
        self.signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(5)
        return code


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _event(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    with contextlib.suppress(json.JSONDecodeError):
        event = json.loads(line)
        if isinstance(event, dict) and "event" in event:
            return event
    return None


def serve(
    options: ServeOptions,
    *,
    in_process: bool = False,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> Server:
    """Start a server (a child process, or with `in_process` a thread of this one);
    `.wait_ready(timeout_s)`, then `.url`, and `.stop()` when done. `on_event` gets each JSON
    event (listening, loaded, compiled, warmed, ready, ...) as a dict, from another thread."""
    if in_process:
        return ServerThread(options, on_event)
    return ServerProcess(options, on_event=on_event)
