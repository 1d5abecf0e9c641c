"""Real object-store services on 127.0.0.1 for the workload tests: moto's S3 server and the
GCS emulator from PyPI, each started once per test module that asks for it and stopped after,
and admin clients for them (to create buckets and inspect objects behind a store's back).

Two test doubles fill gaps in those services, each modelling a documented behaviour of the
real one (and named as doubles in the README's "What is verified here"):

- `atomic_conditional_writes`: moto 5.2.5 checks a PutObject's If-Match / If-None-Match and
  then stores the object in two steps with no lock between them (moto/s3/responses.py,
  put_object), so two concurrent conditional writes can both pass. S3 makes the check and the
  write one step; the middleware serializes conditional PUTs to give moto that atomicity.
- `GcsPreconditions`: gcp-storage-emulator 2026.7.19 ignores `ifGenerationMatch` on uploads
  (its handlers never read it). The double enforces GCS's documented rule in the emulator's
  object-insert handler: the upload proceeds only if the live object's generation equals the
  value, 0 meaning no live object, else 412 Precondition Failed
  (https://cloud.google.com/storage/docs/request-preconditions). The emulator serves one
  request at a time (http.server.HTTPServer), so check and write are one step.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import Any

import boto3
import pytest
from gcp_storage_emulator import server as gcs_server
from gcp_storage_emulator.handlers import objects as gcs_objects
from gcp_storage_emulator.server import create_server
from tests_support import moto_server

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def atomic_conditional_writes(app: WsgiApp) -> WsgiApp:
    """Test double (middleware over moto's WSGI app): one conditional PUT at a time."""
    lock = threading.Lock()

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        conditional = "HTTP_IF_MATCH" in environ or "HTTP_IF_NONE_MATCH" in environ
        if environ.get("REQUEST_METHOD") != "PUT" or not conditional:
            return app(environ, start_response)
        with lock:
            return list(app(environ, start_response))

    return serve


class GcsPreconditions:
    """Test double: the emulator's object insert with GCS's `ifGenerationMatch` enforced, and a
    record of the precondition each upload carried (`seen`: (object name, value or None))."""

    def __init__(self, insert: Callable[..., Any]) -> None:
        self._insert = insert
        self.seen: list[tuple[str, str | None]] = []

    def __call__(self, request: Any, response: Any, storage: Any, *args: Any, **kw: Any) -> Any:
        name = self._object_name(request)
        wanted = request.query.get("ifGenerationMatch", [None])[0]
        self.seen.append((name, wanted))
        if wanted is not None:
            live = storage.objects.get(request.params["bucket_name"], {}).get(name)
            generation = int(live["generation"]) if live else 0
            if generation != int(wanted):
                message = f"At least one of the pre-conditions you specified did not hold: {name}"
                response.status = HTTPStatus.PRECONDITION_FAILED
                response.json(
                    {
                        "error": {
                            "code": 412,
                            "message": message,
                            "errors": [{"reason": "conditionNotMet", "message": message}],
                        }
                    }
                )
                return None
        return self._insert(request, response, storage, *args, **kw)

    @staticmethod
    def _object_name(request: Any) -> str:
        if "name" in request.query:
            return request.query["name"][0]
        data = request.data
        meta = data.get("meta", data) if isinstance(data, dict) else {}
        return str(meta.get("name", ""))


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on an ephemeral port, with dummy credentials in the environment, and
    conditional writes made atomic (`atomic_conditional_writes`)."""
    with moto_server(wrap=atomic_conditional_writes) as url:
        yield url


@pytest.fixture(scope="module")
def s3_admin(s3_endpoint: str) -> Any:
    """A plain boto3 S3 client for the moto server."""
    return boto3.client("s3", endpoint_url=s3_endpoint)


@pytest.fixture(scope="module")
def gcs_emulator() -> Iterator[tuple[str, GcsPreconditions]]:
    """The GCS emulator (in memory, in this process) on an ephemeral port, with
    STORAGE_EMULATOR_HOST pointing at it. It logs each request it serves at INFO on the
    `gcp_storage_emulator.server` logger."""
    server = create_server("127.0.0.1", 0, in_memory=True)
    server.start()
    inserts = gcs_objects.insert
    double = GcsPreconditions(inserts)
    try:
        # The emulator has no accessor for the port it bound.
        httpd = server._api._httpd
        assert httpd is not None, "the GCS emulator did not start its HTTP server"
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        with pytest.MonkeyPatch.context() as env:
            # The router looks handlers up in its route table, and falls back on the module's
            # `insert` for uploads posted without the /upload prefix: replace it in both.
            env.setattr(gcs_objects, "insert", double)
            for _, handlers in gcs_server.HANDLERS:
                for method, handler in list(handlers.items()):
                    if handler is inserts:
                        env.setitem(handlers, method, double)
            env.setenv("STORAGE_EMULATOR_HOST", url)
            env.setenv("GOOGLE_CLOUD_PROJECT", "mlstack-test")
            yield url, double
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gcs_endpoint(gcs_emulator: tuple[str, GcsPreconditions]) -> str:
    """The emulator's URL (STORAGE_EMULATOR_HOST is set to it while the module runs)."""
    return gcs_emulator[0]


@pytest.fixture(scope="module")
def gcs_preconditions(gcs_emulator: tuple[str, GcsPreconditions]) -> GcsPreconditions:
    """The emulator's precondition double, with the uploads it has seen."""
    return gcs_emulator[1]


@pytest.fixture(scope="module")
def gcs_admin(gcs_endpoint: str) -> Any:
    """A plain google-cloud-storage client for the emulator."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project="mlstack-test", credentials=AnonymousCredentials())
