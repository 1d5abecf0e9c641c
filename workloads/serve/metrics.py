"""The server's Prometheus metrics and its JSON event log.

Each server has its own registry, so that several servers (tests) live in one process.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

#: Seconds over which `generated_tokens_per_second` averages.
RATE_WINDOW_S = 10.0
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class EventLog:
    """One JSON line per event (`{"event": ..., "time": ..., ...}`, the training log's
    shape) on a stream (stdout by default; None with `echo=False`), and to an optional
    callback; safe to call from any thread."""

    def __init__(
        self,
        stream: TextIO | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        *,
        echo: bool = True,
    ) -> None:
        self.stream = (stream or sys.stdout) if echo else None
        self.on_event = on_event
        self._lock = threading.Lock()

    def __call__(self, event: str, **fields: Any) -> None:
        """Log one event; never raises for the stream (see `_write`)."""
        record = {"event": event, "time": round(time.time(), 3), **fields}
        if self.stream is not None:
            self._write(json.dumps(record) + "\n")
        if self.on_event is not None:
            self.on_event(record)

    def _write(self, line: str) -> None:
        """Write a line; when the stream fails (its reader went away: `grep` exited, the
        terminal closed), stop writing to it instead of raising. The drain logs from the
        SIGTERM handler: an exception there would leave the server half-drained and deaf to
        later signals. The stream's descriptor is pointed at /dev/null, as the note on SIGPIPE
        in Python's `signal` docs advises, so that the interpreter's last flush at exit does
        not fail too (exit code 120 and an "Exception ignored" message)."""
        with self._lock:
            stream = self.stream
            if stream is None:
                return
            try:
                stream.write(line)
                stream.flush()
            except (OSError, ValueError):  # ValueError: the stream was closed.
                self.stream = None
                _silence(stream)


def _silence(stream: TextIO) -> None:
    """Point the stream's file descriptor at /dev/null (if it has one)."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # No descriptor: a closed stream, or an in-memory one.
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


class _TokenRate:
    """Tokens per second over the last RATE_WINDOW_S."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def add(self, tokens: int) -> None:
        now = time.monotonic()
        with self._lock:
            self._samples.append((now, tokens))
            self._trim(now)

    def rate(self) -> float:
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            return sum(n for _, n in self._samples) / RATE_WINDOW_S

    def _trim(self, now: float) -> None:
        while self._samples and self._samples[0][0] < now - RATE_WINDOW_S:
            self._samples.popleft()


class _ModelCollector(Collector):
    """The served version and the reload count, read from the engine at each scrape."""

    def __init__(self, model: Callable[[], tuple[str | None, int]]) -> None:
        self._model = model

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        version, reloads = self._model()
        yield CounterMetricFamily(
            "mlstack_serve_model_reloads",
            "Newer bundles swapped in after the first.",
            value=reloads,
        )
        info = GaugeMetricFamily(
            "mlstack_serve_model_info", "1 for the bundle version served.", labels=["version"]
        )
        if version is not None:
            info.add_metric([version], 1)
        yield info


class ServerMetrics:
    """Requests by status, latency, batch sizes, queue depth, generated tokens, the model."""

    def __init__(
        self,
        queue_depth: Callable[[], float],
        running: Callable[[], float],
        model: Callable[[], tuple[str | None, int]],
    ) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mlstack_serve_requests",
            "Completion requests answered, by HTTP status.",
            ["status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mlstack_serve_request_seconds",
            "Seconds from a completion request's arrival to its answer (any status).",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "mlstack_serve_batch_size",
            "Requests running in each decode call (the batch, as it changes).",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "mlstack_serve_queue_depth",
            "Requests waiting for a slot in the batch.",
            registry=self.registry,
        )
        self.queue_depth.set_function(queue_depth)
        self.running = Gauge(
            "mlstack_serve_running",
            "Requests decoding in the batch now.",
            registry=self.registry,
        )
        self.running.set_function(running)
        self.generated = Counter(
            "mlstack_serve_generated_tokens",
            "Tokens generated for answered completions.",
            registry=self.registry,
        )
        self._rate = _TokenRate()
        self.tokens_per_second = Gauge(
            "mlstack_serve_generated_tokens_per_second",
            f"Generated tokens per second over the last {RATE_WINDOW_S:g} s.",
            registry=self.registry,
        )
        self.tokens_per_second.set_function(self._rate.rate)
        self.registry.register(_ModelCollector(model))

    def answered(self, status: int, seconds: float) -> None:
        self.requests.labels(status=str(status)).inc()
        self.latency.observe(seconds)

    def decoded(self, rows: int) -> None:
        """A decode call of the batch, with `rows` requests running."""
        self.batch_size.observe(rows)

    def completed(self, tokens: int) -> None:
        """A completion of `tokens` generated tokens was answered."""
        self.generated.inc(tokens)
        self._rate.add(tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
