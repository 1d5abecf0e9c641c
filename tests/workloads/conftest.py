"""Real object-store services on 127.0.0.1 for the workload tests: moto's S3 server and the
GCS emulator from PyPI, each started once per test module that asks for it and stopped after,
and admin clients for them (to create buckets and inspect objects behind a store's back)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from gcp_storage_emulator.server import create_server
from tests_support import moto_server


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on an ephemeral port, with dummy credentials in the environment."""
    with moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def s3_admin(s3_endpoint: str) -> Any:
    """A plain boto3 S3 client for the moto server."""
    return boto3.client("s3", endpoint_url=s3_endpoint)


@pytest.fixture(scope="module")
def gcs_endpoint() -> Iterator[str]:
    """The GCS emulator (in memory, in this process) on an ephemeral port, with
    STORAGE_EMULATOR_HOST pointing at it. It logs each request it serves at INFO on the
    `gcp_storage_emulator.server` logger."""
    server = create_server("127.0.0.1", 0, in_memory=True)
    server.start()
    try:
        # The emulator has no accessor for the port it bound.
        httpd = server._api._httpd
        assert httpd is not None, "the GCS emulator did not start its HTTP server"
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        with pytest.MonkeyPatch.context() as env:
            env.setenv("STORAGE_EMULATOR_HOST", url)
            env.setenv("GOOGLE_CLOUD_PROJECT", "mlstack-test")
            yield url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gcs_admin(gcs_endpoint: str) -> Any:
    """A plain google-cloud-storage client for the emulator."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project="mlstack-test", credentials=AnonymousCredentials())
