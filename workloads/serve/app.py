"""The HTTP API: an ASGI app (Starlette) over an engine and its continuous batcher.

- POST /v1/completions: a completion (`protocol`); 4xx with `{"error": one line}` for bad
  input, 429 when the queue is full, 503 before the model is ready and while draining.
- GET /healthz: 200 while the process answers.
- GET /readyz: 200 once a model is loaded and warmed up; 503 before, and while draining.
- GET /metrics: Prometheus text.
- GET /openapi.json: the OpenAPI 3.1 description.

Every error, unknown routes and methods included, is JSON `{"error": "..."}`. Input never
causes a 5xx: a 500 means a bug, and says so without a traceback. A request whose client closes
the connection before its answer is cancelled (left out of the batch if it is still queued)
and counted as status 499.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mlstack.workloads.serve.batcher import Batcher, Closed, QueueFull
from mlstack.workloads.serve.engine import Engine
from mlstack.workloads.serve.metrics import ServerMetrics
from mlstack.workloads.serve.protocol import (
    Completion,
    CompletionRequest,
    RequestError,
    check_fits,
    openapi,
    parse_json,
    parse_request,
    response_body,
)

#: A completion request's body is a prompt of at most the context, a few numbers and stop
#: sequences: 64 KiB is far more than any valid one needs.
DEFAULT_MAX_BODY_BYTES = 64 * 1024
#: Seconds a client is told to wait after a 429 or 503.
RETRY_AFTER_S = 1
#: The status counted for a request whose client closed the connection before its answer
#: (nginx's "client closed request"; nobody receives it).
CLIENT_GONE = 499


@dataclass(frozen=True)
class ApiOptions:
    max_batch: int = 32
    max_queue: int = 256
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


class Service:
    """An engine, its batcher and metrics, and the draining flag: what the app serves."""

    def __init__(self, engine: Engine, options: ApiOptions) -> None:
        self.engine = engine
        self.options = options
        self.metrics = ServerMetrics(
            lambda: self.batcher.depth, lambda: self.batcher.running, self._model_state
        )
        self.batcher: Batcher[CompletionRequest, Completion | RequestError] = Batcher(
            engine.session,
            max_batch=options.max_batch,
            max_queue=options.max_queue,
            on_step=self.metrics.decoded,
        )
        self.draining = threading.Event()

    def _model_state(self) -> tuple[str | None, int]:
        model = self.engine.current
        return (model.version if model else None), self.engine.reloads

    def not_ready(self) -> str | None:
        """Why the server cannot answer completions now, or None."""
        if self.draining.is_set():
            return "the server is draining (shutting down); retry on another replica"
        if not self.engine.ready:
            why = self.engine.last_error
            return f"no model is loaded yet ({why})" if why else "the model is loading"
        return None

    def drain(self, timeout_s: float | None = None) -> bool:
        """Refuse new completions, finish the queued and running ones; whether they finished
        within `timeout_s`."""
        self.draining.set()
        return self.batcher.close(timeout_s)


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"body is {declared} bytes; the limit is {limit}")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _disconnected(request: Request) -> None:
    """Return when the client closes its connection (the body has been read: the next ASGI
    message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _result_unless_gone(
    request: Request, future: Future[Completion | RequestError]
) -> Completion | RequestError | None:
    """The request's result; None if its client went away first, after cancelling it: a
    request still queued is then left out of the batch (one already decoding finishes)."""
    result = asyncio.wrap_future(future)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if result.done():
        return result.result()
    future.cancel()
    return None


def create_app(service: Service) -> Starlette:
    """The ASGI app over `service`."""
    options = service.options

    async def completions(request: Request) -> Response:
        start = time.perf_counter()
        try:
            response = await _complete(request)
        except Exception as err:  # A bug: answered, counted and logged, never a traceback.
            reason = f"{type(err).__name__}: {err}".splitlines()[0]
            service.engine.log("request_failed", error=reason)
            response = _error(500, f"internal error ({reason}); this is a bug")
        service.metrics.answered(response.status_code, time.perf_counter() - start)
        return response

    async def _complete(request: Request) -> Response:
        try:
            body = await _read_body(request, options.max_body_bytes)
            reason = service.not_ready()
            model = service.engine.current
            if reason is not None or model is None:
                return _error(503, reason or "no model", {"Retry-After": str(RETRY_AFTER_S)})
            checked = parse_request(
                parse_json(body),
                max_tokens_limit=model.max_tokens,
                seed=secrets.randbelow(2**32),
            )
            check_fits(checked, model.context)
            future = service.batcher.submit(checked)
        except RequestError as err:
            return _error(err.status, err.reason)
        except QueueFull as err:
            return _error(429, f"{err}; retry later", {"Retry-After": str(RETRY_AFTER_S)})
        except Closed:
            return _error(503, "the server is draining (shutting down); retry elsewhere")
        except ClientDisconnect:
            return Response(status_code=CLIENT_GONE)
        result = await _result_unless_gone(request, future)
        if result is None:
            return Response(status_code=CLIENT_GONE)
        if isinstance(result, RequestError):
            return _error(result.status, result.reason)
        service.metrics.completed(result.completion_tokens)
        return JSONResponse(response_body(result, f"cmpl-{uuid.uuid4().hex}", int(time.time())))

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        reason = service.not_ready()
        model = service.engine.current
        if reason is not None or model is None:
            return _error(503, reason or "no model")
        body = {"status": "ready", "model": model.version}
        if service.engine.options.model_alias:
            body["alias"] = service.engine.options.model_alias
        return JSONResponse(body)

    async def metrics(request: Request) -> Response:
        return Response(
            service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    async def openapi_json(request: Request) -> Response:
        model = service.engine.current
        limit = model.max_tokens if model else service.engine.options.max_tokens_limit
        return JSONResponse(openapi(max_tokens_limit=limit, max_body_bytes=options.max_body_bytes))

    async def http_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            return _error(exc.status_code, exc.detail, dict(exc.headers or {}))
        return _error(500, "internal error")

    async def internal_error(request: Request, exc: Exception) -> Response:
        return _error(500, f"internal error ({type(exc).__name__}); this is a bug")

    return Starlette(
        routes=[
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: internal_error},
    )
