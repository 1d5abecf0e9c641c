"""workloads.storage against real services: a directory, moto's S3 server and the GCS emulator.

Every backend test runs on all three with a fresh bucket (or directory), through a store at
`<bucket>/runs/exp1`, so that prefix handling is exercised too. Parts are small (5 MiB over
8 MiB) so that multipart transfers happen with small objects.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlstack.workloads.storage import (
    MIB,
    PARTIAL_SUFFIX,
    NotFound,
    Precondition,
    Store,
    StoreError,
    TransferSettings,
    open_store,
)

SMALL_PARTS = TransferSettings(
    multipart_threshold_bytes=8 * MIB, chunk_size_bytes=5 * MIB, max_concurrency=8
)
BACKENDS = ("file", "s3", "gs")

pytestmark = pytest.mark.filterwarnings(
    # google.api_core warns on import about the end of Python 3.11 support (2027).
    "ignore:You are using a Python version:FutureWarning"
)


@dataclass(frozen=True)
class Backend:
    #: A fresh bucket (or directory) for this test alone.
    root_url: str
    endpoint: str | None = None

    def open(self, path: str = "runs/exp1") -> Store:
        url = f"{self.root_url}/{path}" if path else self.root_url
        return open_store(url, endpoint=self.endpoint, transfer=SMALL_PARTS)


def _new_bucket() -> str:
    return f"mlstack-{uuid.uuid4().hex[:16]}"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "file":
        return Backend((tmp_path / "bucket").as_uri())
    bucket = _new_bucket()
    if request.param == "s3":
        request.getfixturevalue("s3_admin").create_bucket(Bucket=bucket)
        return Backend(f"s3://{bucket}", request.getfixturevalue("s3_endpoint"))
    request.getfixturevalue("gcs_admin").create_bucket(bucket)
    return Backend(f"gs://{bucket}")


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.open()


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _random_file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(size).randbytes(size))
    return path


def test_bytes_round_trip(store: Store, backend: Backend) -> None:
    data = bytes(range(256)) * 1000
    store.put_bytes("meta/config.json", data)
    store.put_bytes("empty", b"")

    assert store.get_bytes("meta/config.json") == data
    assert store.get_bytes("empty") == b""
    assert store.url("meta/config.json") == f"{backend.root_url}/runs/exp1/meta/config.json"
    store.put_bytes("meta/config.json", b"v2")
    assert store.get_bytes("meta/config.json") == b"v2"


def test_a_new_store_at_the_same_url_reads_what_another_wrote(backend: Backend) -> None:
    backend.open().put_bytes("step_100/COMMIT", b"ok")

    assert backend.open().get_bytes("step_100/COMMIT") == b"ok"
    assert backend.open("runs").get_bytes("exp1/step_100/COMMIT") == b"ok"


def test_large_file_round_trip(store: Store, tmp_path: Path) -> None:
    source = _random_file(tmp_path / "src" / "shard.bin", 40 * MIB)

    store.upload_file(source, "shards/shard-00000.bin")
    store.download_file("shards/shard-00000.bin", tmp_path / "out" / "shard.bin")

    assert _digest(tmp_path / "out" / "shard.bin") == _digest(source)
    assert store.list("shards/") == ["shards/shard-00000.bin"]


def test_s3_large_objects_go_as_multipart_uploads(
    s3_endpoint: str, s3_admin: Any, tmp_path: Path
) -> None:
    bucket = _new_bucket()
    s3_admin.create_bucket(Bucket=bucket)
    store = open_store(f"s3://{bucket}/runs/exp1", endpoint=s3_endpoint, transfer=SMALL_PARTS)
    source = _random_file(tmp_path / "shard.bin", 40 * MIB)

    store.upload_file(source, "big.bin")
    store.put_bytes("big-bytes", b"x" * (12 * MIB))
    store.put_bytes("small", b"x" * (1 * MIB))

    def etag(key: str) -> str:
        return s3_admin.head_object(Bucket=bucket, Key=f"runs/exp1/{key}")["ETag"].strip('"')

    # A multipart object's ETag ends in -<number of parts>: 40 MiB in 5 MiB parts is 8.
    assert etag("big.bin").endswith("-8")
    assert etag("big-bytes").endswith("-3")
    assert "-" not in etag("small")


def test_gcs_large_objects_go_in_chunks_and_slices(
    gcs_admin: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bucket = _new_bucket()
    gcs_admin.create_bucket(bucket)
    store = open_store(f"gs://{bucket}/runs/exp1", transfer=SMALL_PARTS)
    source = _random_file(tmp_path / "shard.bin", 40 * MIB)

    def requests_seen(action: Callable[[], None], method: str, path: str) -> int:
        """How many `method` requests under `path` the emulator served during `action`."""
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="gcp_storage_emulator.server"):
            action()
        return sum(f'"{method} {path}' in record.getMessage() for record in caplog.records)

    uploads = requests_seen(
        lambda: store.upload_file(source, "big.bin"), "PUT", "/upload/storage/v1/b/"
    )
    downloads = requests_seen(
        lambda: store.download_file("big.bin", tmp_path / "out.bin"),
        "GET",
        "/download/storage/v1/b/",
    )

    # 40 MiB in 5 MiB pieces: eight resumable-upload chunks and eight ranged reads.
    assert (uploads, downloads) == (8, 8)
    assert _digest(tmp_path / "out.bin") == _digest(source)


def test_list_is_recursive_sorted_and_by_prefix(store: Store, backend: Backend) -> None:
    keys = ["z", "a/2/x", "ab", "a/10", "b/c/d", "a/1"]
    for key in keys:
        store.put_bytes(key, key.encode())
    backend.open("runs/exp2").put_bytes("a/other-run", b"")

    assert store.list() == sorted(keys)
    assert store.list("a/") == ["a/1", "a/10", "a/2/x"]
    assert store.list("a") == ["a/1", "a/10", "a/2/x", "ab"]
    assert store.list("a/1") == ["a/1", "a/10"]
    assert store.list("b/c") == ["b/c/d"]
    assert store.list("nothing/") == []
    assert backend.open("").list("runs/exp2/") == ["runs/exp2/a/other-run"]


def test_missing_key_raises_not_found_naming_the_url(store: Store, tmp_path: Path) -> None:
    target = tmp_path / "local" / "model.bin"

    with pytest.raises(NotFound, match="runs/exp1/no/such/key") as raised:
        store.get_bytes("no/such/key")
    assert store.url("no/such/key") in str(raised.value)
    with pytest.raises(NotFound, match="runs/exp1/no/such/key"):
        store.download_file("no/such/key", target)
    assert not target.exists()
    assert not store.exists("no/such/key")


def test_exists_and_delete(store: Store) -> None:
    store.put_bytes("ckpt/COMMIT", b"")
    store.put_bytes("ckpt/data", b"1")

    assert store.exists("ckpt/COMMIT")
    assert not store.exists("ckpt")
    store.delete("ckpt/COMMIT")
    assert not store.exists("ckpt/COMMIT")
    assert store.list() == ["ckpt/data"]
    store.delete("ckpt/COMMIT")
    with pytest.raises(NotFound):
        store.get_bytes("ckpt/COMMIT")


def test_directory_round_trip(store: Store, tmp_path: Path) -> None:
    local = tmp_path / "checkpoint"
    _random_file(local / "state" / "array" / "shard_0", 12 * MIB)
    (local / "state" / "array" / "shard_1").write_bytes(b"\x00" * 10_000)
    (local / "_METADATA").write_text('{"step": 10}')
    (local / "empty").write_bytes(b"")
    # A sibling whose name extends the prefix must not come back with it.
    store.upload_dir(local / "state", "ckpt/10")

    keys = store.upload_dir(local, "ckpt/1")
    paths = store.download_dir("ckpt/1", tmp_path / "restored")

    expected = ["_METADATA", "empty", "state/array/shard_0", "state/array/shard_1"]
    assert keys == [f"ckpt/1/{name}" for name in expected]
    assert sorted(p.relative_to(tmp_path / "restored").as_posix() for p in paths) == expected
    assert _tree(tmp_path / "restored") == _tree(local)
    with pytest.raises(NotFound, match="ckpt/2/"):
        store.download_dir("ckpt/2", tmp_path / "nothing")


def test_put_if_absent_writes_only_a_new_object(store: Store) -> None:
    token = store.put_if_absent("aliases/champion.json", b"v1")

    with pytest.raises(Precondition, match=r"aliases/champion\.json already exists"):
        store.put_if_absent("aliases/champion.json", b"v2")
    assert store.get_with_token("aliases/champion.json") == (b"v1", token)
    assert store.list() == ["aliases/champion.json"]


def test_put_if_match_replaces_only_the_object_of_its_token(store: Store) -> None:
    first = store.put_if_absent("alias", b"v1")
    second = store.put_if_match("alias", b"v2", first)

    assert second != first
    assert store.get_with_token("alias") == (b"v2", second)
    with pytest.raises(Precondition, match="changed"):
        store.put_if_match("alias", b"stale", first)
    assert store.get_bytes("alias") == b"v2"
    store.delete("alias")
    with pytest.raises(Precondition):
        store.put_if_match("alias", b"v3", second)
    with pytest.raises(NotFound, match="object not found"):
        store.get_with_token("alias")
    assert store.list() == []


def _race(writers: int, write: Callable[[int], str]) -> dict[int, str | Precondition]:
    """`write(i)` from `writers` threads released at once; each one's token or Precondition."""
    start = threading.Barrier(writers)
    results: dict[int, str | Precondition] = {}

    def run(i: int) -> None:
        start.wait(timeout=30)
        try:
            results[i] = write(i)
        except Precondition as err:
            results[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == writers, "a writer did not finish"
    return results


def test_concurrent_conditional_writes_have_one_winner(store: Store) -> None:
    created = _race(6, lambda i: store.put_if_absent("alias", f"create-{i}".encode()))
    winners = [i for i, got in created.items() if isinstance(got, str)]

    assert len(winners) == 1
    data, token = store.get_with_token("alias")
    assert data == f"create-{winners[0]}".encode()
    assert token == created[winners[0]]

    moved = _race(6, lambda i: store.put_if_match("alias", f"move-{i}".encode(), token))
    winners = [i for i, got in moved.items() if isinstance(got, str)]
    assert len(winners) == 1
    assert store.get_bytes("alias") == f"move-{winners[0]}".encode()


def test_file_conditional_writes_leave_no_visible_lock_or_partial(tmp_path: Path) -> None:
    store = open_store(tmp_path.as_uri())
    token = store.put_if_absent("m/aliases/canary.json", b"a")
    store.put_if_match("m/aliases/canary.json", b"b", token)

    assert store.list() == ["m/aliases/canary.json"]
    assert not list(tmp_path.rglob(f"*{PARTIAL_SUFFIX}"))


def test_gcs_conditional_writes_carry_if_generation_match(
    gcs_admin: Any, gcs_preconditions: Any
) -> None:
    bucket = _new_bucket()
    gcs_admin.create_bucket(bucket)
    store = open_store(f"gs://{bucket}/runs/exp1")
    gcs_preconditions.seen.clear()

    token = store.put_if_absent("alias", b"v1")
    store.put_if_match("alias", b"v2", token)
    store.put_bytes("plain", b"x")

    assert gcs_preconditions.seen == [
        ("runs/exp1/alias", "0"),
        ("runs/exp1/alias", token),
        ("runs/exp1/plain", None),
    ]


def test_file_writes_are_atomic_for_a_concurrent_reader(tmp_path: Path) -> None:
    store = open_store((tmp_path / "store").as_uri())
    versions = [bytes([n]) * (4 * MIB) for n in (1, 2)]
    store.put_bytes("blob", versions[0])
    done = threading.Event()

    def write() -> None:
        for n in range(30):
            store.put_bytes("blob", versions[n % 2])
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    seen: list[bytes] = []
    listed: set[tuple[str, ...]] = set()
    while not done.is_set():
        seen.append(store.get_bytes("blob"))
        listed.add(tuple(store.list()))
    writer.join()

    assert seen and all(data in versions for data in seen)
    assert listed == {("blob",)}
    assert not list((tmp_path / "store").glob(f"*{PARTIAL_SUFFIX}"))


@pytest.mark.parametrize("variable", ["MLSTACK_S3_ENDPOINT", "AWS_ENDPOINT_URL"])
def test_s3_endpoint_from_the_environment(
    s3_endpoint: str, s3_admin: Any, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    bucket = _new_bucket()
    s3_admin.create_bucket(Bucket=bucket)
    monkeypatch.setenv(variable, s3_endpoint)

    store = open_store(f"s3://{bucket}/models")
    store.put_bytes("bundle/model.json", b"{}")

    assert open_store(f"s3://{bucket}").get_bytes("models/bundle/model.json") == b"{}"


def test_s3_missing_bucket_is_named(s3_endpoint: str) -> None:
    store = open_store("s3://no-such-bucket-mlstack/x", endpoint=s3_endpoint)

    with pytest.raises(StoreError, match="bucket 'no-such-bucket-mlstack' does not exist"):
        store.put_bytes("k", b"")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://host/data", "unsupported scheme 'ftp'.*s3://"),
        ("/data/ckpt", "unsupported scheme ''"),
        ("s3:///ckpt", "names no bucket"),
        ("gs://bucket/a//b", "invalid prefix"),
        ("file://relative/dir", "not an absolute local path"),
    ],
)
def test_bad_store_url_is_one_clear_line(url: str, expected: str) -> None:
    with pytest.raises(StoreError, match=expected) as raised:
        open_store(url)

    message = str(raised.value)
    assert "\n" not in message
    assert repr(url) in message


@pytest.mark.parametrize("key", ["", "/abs", "../escape", "a/../../b", "a//b", "dir/"])
def test_invalid_keys_are_refused(tmp_path: Path, key: str) -> None:
    store = open_store((tmp_path / "store").as_uri())

    with pytest.raises(StoreError, match="invalid key"):
        store.put_bytes(key, b"x")
    assert not list(tmp_path.rglob("*"))


def test_transfer_settings_refuse_parts_s3_would_reject() -> None:
    with pytest.raises(StoreError, match="chunk_size_bytes=1048576"):
        TransferSettings(chunk_size_bytes=1 * MIB)
    assert TransferSettings().max_concurrency >= 8


def test_an_unwritable_file_store_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    store = open_store((blocker / "store").as_uri())
    with pytest.raises(StoreError, match=r"cannot write .*a-file/store/k: Not a directory; fix:"):
        store.put_bytes("k", b"x")
    assert list(tmp_path.iterdir()) == [blocker]


def test_a_malformed_s3_endpoint_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLSTACK_S3_ENDPOINT", "minio:9000")
    with pytest.raises(StoreError, match=r"'minio:9000' \(\$MLSTACK_S3_ENDPOINT\) is not an"):
        open_store("s3://bucket/prefix")
    with pytest.raises(StoreError, match=r"'http://' \(the endpoint argument\)"):
        open_store("s3://bucket/prefix", endpoint="http://")
