"""One small object-store interface over ``file://``, ``s3://`` and ``gs://`` URLs.

The training workload writes checkpoints, data shards and serving bundles through it; the
serving workload reads bundles back. ``open_store(url)`` picks the backend from the scheme:

- ``file:///abs/path``: a local or mounted directory (NFS, a PVC).
- ``s3://bucket/prefix``: AWS S3, or an S3-compatible store (MinIO, Ceph) when an endpoint
  comes from the ``endpoint`` argument, ``MLSTACK_S3_ENDPOINT``, ``AWS_ENDPOINT_URL_S3`` or
  ``AWS_ENDPOINT_URL`` (first set wins); such endpoints are addressed path-style. Credentials
  and region come from boto3's normal chain; no keys live in code. S3 answers a read of a
  missing key 403 when the caller may not list it; a 403 read is then checked against the
  listing the caller has, so an absent key is NotFound and a refused existing one an error.
- ``gs://bucket/prefix``: Google Cloud Storage through google-cloud-storage with Application
  Default Credentials. With ``STORAGE_EMULATOR_HOST`` set (a local emulator), the client uses
  anonymous credentials and the project ``GOOGLE_CLOUD_PROJECT`` (or ``mlstack-emulator``),
  so no credential lookup happens.

Keys are relative to the store's base URL, ``/``-separated, with no empty, ``.`` or ``..``
segment.

Atomicity: every write (``put_bytes``, ``upload_file``) is atomic per object on all three
backends. A reader sees either no object or the whole new one, never part of it: S3 publishes
an object only when PutObject or CompleteMultipartUpload succeeds, GCS only when an upload is
finalized, and ``file://`` writes a hidden temporary file next to the target, fsyncs it and
renames it over the target. S3, GCS and MinIO are strongly consistent for reads and lists
after a write, so a small object written last, once every other write has returned
(``put_bytes("step_100/COMMIT", b"")``), is a commit marker: a reader that sees it sees every
object written before it. Directories are not atomic as a whole, hence the marker. Downloads
to local files are atomic the same way (temp + rename).

Large objects and directories (``TransferSettings``):

- S3: boto3's managed transfers. Objects over ``multipart_threshold_bytes`` go up as multipart
  uploads of ``chunk_size_bytes`` parts and come down as ranged GETs, ``max_concurrency`` at a
  time; ``upload_dir``/``download_dir`` share one transfer manager, so files and their parts
  share that one bound.
- GCS: objects over the threshold go up as chunked resumable uploads (``chunk_size_bytes`` per
  request, sequential within one object) and come down with ``transfer_manager``'s sliced
  download (parallel ranged GETs with a whole-object CRC32C check). Parallel single-object
  uploads (``transfer_manager.upload_chunks_concurrently``) use the XML multipart API, which the
  GCS emulator the tests run against answers with 501, so they are not used: upload parallelism
  on GCS is across files, in ``upload_dir``.
- ``file://``: plain copies; directories are copied with a thread pool across files.

Conditional writes (compare-and-swap, for small objects such as the model registry's aliases):
``get_with_token(key)`` returns the content and an opaque token of that exact object;
``put_if_absent(key, data)`` writes only when nothing is at `key`, ``put_if_match(key, data,
token)`` only when `key` still holds the object of `token`; both return the new object's token
and raise ``Precondition`` when the condition does not hold, writing nothing. The check and the
write are one step on every backend: S3 conditional writes (PutObject with ``If-None-Match: *``
or ``If-Match: <ETag>``, answered 412, or 409 for a concurrent conditional write), GCS request
preconditions (``ifGenerationMatch``, 0 meaning "no live object", answered 412), and on
``file://`` an exclusive ``flock`` on a hidden sibling lock file held around the compare and
the atomic rename (the token is the content's SHA-256; lock files are never listed).

``get_bytes``/``put_bytes`` hold the whole object in memory; use files for large objects.
For older S3-compatible stores that reject boto3's default CRC trailers, set
``AWS_REQUEST_CHECKSUM_CALCULATION=when_required`` in the environment.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

MIB = 1024 * 1024
SCHEMES = ("file", "gs", "s3")
#: Environment variables that give an S3 endpoint, in the order they are read.
S3_ENDPOINT_VARS = ("MLSTACK_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
#: Suffix of file:// temporaries; list() never returns such names.
PARTIAL_SUFFIX = ".mlstack-partial"
#: Suffix of the file:// lock files of conditional writes; list() never returns such names.
LOCK_SUFFIX = ".mlstack-lock"
# S3 rejects multipart parts under 5 MiB (but the last); GCS resumable chunks must be whole
# multiples of 256 KiB.
_MIN_CHUNK_BYTES = 5 * MIB
_GCS_CHUNK_QUANTUM = 256 * 1024
#: Reads of an object for its generation and content before a change in between is an error.
_GCS_READ_ATTEMPTS = 3

#: S3 error codes of a refused request (HeadObject has no body: its code is the status).
_S3_DENIED_CODES = ("403", "AccessDenied", "Forbidden")
#: S3Store actions that read one named key, where a 403 may mean "absent" (`_refused_read`).
_S3_KEY_READS = ("get", "head", "download")

PathLike = str | os.PathLike[str]
# Aliases, because Store.list shadows the builtin inside the class body.
KeyList = list[str]
PathList = list[Path]


class StoreError(Exception):
    """An object-store operation failed, or a store URL or key is invalid."""


class NotFound(StoreError):  # noqa: N818 - reads as `storage.NotFound`, like the SDKs' own.
    """The object (or prefix) does not exist."""


class Precondition(StoreError):  # noqa: N818 - reads as `storage.Precondition`, like NotFound.
    """A conditional write found the object present (put_if_absent) or changed (put_if_match)."""


@dataclass(frozen=True)
class TransferSettings:
    """How large objects and directories move."""

    #: Objects larger than this go in parts (S3 multipart, GCS chunked resumable / sliced).
    multipart_threshold_bytes: int = 64 * MIB
    #: Size of each part or chunk: at least 5 MiB and a multiple of 256 KiB.
    chunk_size_bytes: int = 16 * MIB
    #: Parallel requests for one large object, and parallel files for a directory.
    max_concurrency: int = 16

    def __post_init__(self) -> None:
        if self.chunk_size_bytes < _MIN_CHUNK_BYTES or self.chunk_size_bytes % _GCS_CHUNK_QUANTUM:
            raise StoreError(
                f"chunk_size_bytes={self.chunk_size_bytes} is invalid: use at least 5 MiB "
                "and a multiple of 256 KiB (S3 part and GCS chunk limits), e.g. 16 * MIB"
            )
        if self.multipart_threshold_bytes < 1:
            raise StoreError(
                f"multipart_threshold_bytes={self.multipart_threshold_bytes} is invalid: "
                "use a positive size, e.g. 64 * MIB"
            )
        if self.max_concurrency < 1:
            raise StoreError(
                f"max_concurrency={self.max_concurrency} is invalid: use 1 or more, e.g. 16"
            )


def open_store(
    url: str,
    *,
    endpoint: str | None = None,
    region: str | None = None,
    transfer: TransferSettings | None = None,
) -> Store:
    """The store at `url`: `file:///dir`, `s3://bucket[/prefix]` or `gs://bucket[/prefix]`.

    `endpoint` overrides the S3 endpoint (S3-compatible stores) or the GCS API endpoint;
    `region` is the S3 region. `file://` uses neither.
    """
    settings = transfer or TransferSettings()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise StoreError(
                f"file store URL {url!r} is not an absolute local path: "
                "write it as file:///absolute/dir"
            )
        return FileStore(Path(unquote(parts.path)), settings)
    if scheme in ("s3", "gs"):
        if not parts.netloc or parts.query or parts.fragment:
            raise StoreError(
                f"store URL {url!r} names no bucket or has a query or fragment: "
                f"write it as {scheme}://bucket/optional/prefix"
            )
        prefix = _check_prefix(unquote(parts.path).strip("/"), url)
        if scheme == "s3":
            return S3Store(parts.netloc, prefix, settings, endpoint=endpoint, region=region)
        return GCSStore(parts.netloc, prefix, settings, endpoint=endpoint)
    raise StoreError(
        f"store URL {url!r} has unsupported scheme {parts.scheme!r}: "
        f"use one of {', '.join(s + '://' for s in SCHEMES)}"
    )


class Store(ABC):
    """Objects under one base URL: a bucket plus an optional prefix, or a directory."""

    def __init__(self, base_url: str, prefix: str, transfer: TransferSettings) -> None:
        self.base_url = base_url.rstrip("/")
        self.transfer = transfer
        #: What the backend puts before every key ("" for none).
        self._prefix = prefix

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    def url(self, key: str = "") -> str:
        """The full URL of `key`; the store's base URL for an empty key."""
        return self._where(_check_key(key, self.base_url)) if key else self.base_url

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write `data` to `key`, atomically (usable as a commit marker)."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The content of `key`; raises NotFound when it does not exist."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether the object `key` exists."""

    @abstractmethod
    def get_with_token(self, key: str) -> tuple[bytes, str]:
        """The content of `key` and its token for `put_if_match`; NotFound when missing."""

    @abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> str:
        """Write `data` to `key` only if no object is there; its token. Precondition if one is."""

    @abstractmethod
    def put_if_match(self, key: str, data: bytes, token: str) -> str:
        """Replace `key` only if it is still the object of `token`; the new token. Precondition
        if it changed or is gone."""

    @abstractmethod
    def list(self, prefix: str = "") -> KeyList:
        """Keys that start with `prefix` (a plain string prefix), recursive and sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key`; a missing key is not an error."""

    @abstractmethod
    def upload_file(self, local_path: PathLike, key: str) -> None:
        """Copy a local file to `key`, atomically, in parts when it is large."""

    @abstractmethod
    def download_file(self, key: str, local_path: PathLike) -> None:
        """Copy `key` to a local file, replaced atomically; raises NotFound when missing."""

    def upload_dir(self, local_dir: PathLike, prefix: str) -> KeyList:
        """Copy every file under `local_dir` to `prefix/<relative path>`; returns the keys.

        Files go in parallel. The directory is not atomic as a whole: write a marker last.
        """
        root = Path(local_dir)
        if not root.is_dir():
            raise StoreError(f"upload_dir: {root} is not a directory; pass an existing one")
        base = _check_prefix(prefix.strip("/"), self.base_url)
        pairs = sorted(
            (_join(base, path.relative_to(root).as_posix()), path)
            for path in root.rglob("*")
            if path.is_file()
        )
        self._upload_files([(path, key) for key, path in pairs])
        return [key for key, _ in pairs]

    def download_dir(self, prefix: str, local_dir: PathLike) -> PathList:
        """Copy every object under `prefix/` to `local_dir/<relative key>`; returns the paths.

        Files go in parallel. Raises NotFound when nothing is under `prefix/`.
        """
        base = _check_prefix(prefix.strip("/"), self.base_url)
        dir_prefix = f"{base}/" if base else ""
        keys = self.list(dir_prefix)
        if not keys:
            raise NotFound(f"no objects under {self._where(dir_prefix)}; check the prefix")
        root = Path(local_dir).resolve()
        pairs = [(key, root / key[len(dir_prefix) :]) for key in keys]
        for key, path in pairs:
            if not path.resolve().is_relative_to(root):
                raise StoreError(f"{self._where(key)} would land outside {root}; refusing it")
        self._download_files(pairs)
        return [path for _, path in pairs]

    def _upload_files(self, pairs: Sequence[tuple[Path, str]]) -> None:
        tasks = [partial(self.upload_file, path, key) for path, key in pairs]
        _run_parallel(tasks, self.transfer.max_concurrency)

    def _download_files(self, pairs: Sequence[tuple[str, Path]]) -> None:
        tasks = [partial(self.download_file, key, path) for key, path in pairs]
        _run_parallel(tasks, self.transfer.max_concurrency)

    def _name(self, key: str) -> str:
        """The backend's full name of `key`: object name, or path under the root."""
        return _join(self._prefix, _check_key(key, self.base_url))

    def _list_prefix(self, prefix: str) -> str:
        """The backend's full name prefix to list for a store-relative `prefix`."""
        _check_prefix(prefix, self.base_url, trailing_slash=True)
        return f"{self._prefix}/{prefix}" if self._prefix else prefix

    def _relative(self, name: str) -> str:
        return name[len(self._prefix) + 1 :] if self._prefix else name

    def _where(self, key: str) -> str:
        """The URL of `key` for messages, unchecked."""
        return f"{self.base_url}/{key}" if key else self.base_url


class FileStore(Store):
    """A directory on a local or mounted filesystem."""

    def __init__(self, root: Path, transfer: TransferSettings) -> None:
        super().__init__(f"file://{root.as_posix()}", "", transfer)
        self.root = root

    def put_bytes(self, key: str, data: bytes) -> None:
        with _atomic_writer(self._path(key)) as out:
            out.write(data)

    def get_bytes(self, key: str) -> bytes:
        with self._not_found(key):
            return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def get_with_token(self, key: str) -> tuple[bytes, str]:
        data = self.get_bytes(key)
        return data, _sha256(data)

    def put_if_absent(self, key: str, data: bytes) -> str:
        path = self._path(key)
        with self._locked(path):
            if path.exists():
                raise Precondition(f"{self._where(key)} already exists")
            return self._write_locked(path, data)

    def put_if_match(self, key: str, data: bytes, token: str) -> str:
        path = self._path(key)
        with self._locked(path):
            try:
                current = _sha256(path.read_bytes())
            except FileNotFoundError:
                raise Precondition(f"{self._where(key)} is gone") from None
            if current != token:
                raise Precondition(f"{self._where(key)} changed since it was read")
            return self._write_locked(path, data)

    @contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        """An exclusive lock on `path`'s writers that take it (conditional ones).

        flock on a hidden sibling file, not on `path`: the write renames a new file over
        `path`, so a lock on its old inode would not exclude the next writer. Lock files stay
        (deleting one races with a writer that has just opened it). On NFS, Linux carries flock
        as a POSIX byte-range lock to the server, so writers on other hosts are excluded too.
        """
        lock = path.with_name(f".{path.name}{LOCK_SUFFIX}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise StoreError(
                f"cannot lock {path}: {err.strerror or err}; fix: choose a directory you can "
                "write to, or fix its permissions"
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the last descriptor releases the lock

    @staticmethod
    def _write_locked(path: Path, data: bytes) -> str:
        with _atomic_writer(path) as out:
            out.write(data)
        return _sha256(data)

    def list(self, prefix: str = "") -> KeyList:
        full = self._list_prefix(prefix)
        start = self.root / full.rpartition("/")[0]
        if not start.is_dir():
            return []
        return sorted(key for key in _walk_files(self.root, start) if key.startswith(full))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def upload_file(self, local_path: PathLike, key: str) -> None:
        with Path(local_path).open("rb") as source, _atomic_writer(self._path(key)) as out:
            shutil.copyfileobj(source, out, 8 * MIB)

    def download_file(self, key: str, local_path: PathLike) -> None:
        with self._not_found(key):
            source = self._path(key).open("rb")
        with source, _atomic_writer(Path(local_path)) as out:
            shutil.copyfileobj(source, out, 8 * MIB)

    def _path(self, key: str) -> Path:
        return self.root / self._name(key)

    @contextmanager
    def _not_found(self, key: str) -> Iterator[None]:
        try:
            yield
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as err:
            raise NotFound(f"object not found: {self._where(key)}") from err


class S3Store(Store):
    """A bucket (and prefix) in S3 or an S3-compatible store."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        transfer: TransferSettings,
        *,
        endpoint: str | None = None,
        region: str | None = None,
    ) -> None:
        from boto3.s3.transfer import TransferConfig
        from boto3.session import Session
        from botocore.config import Config

        super().__init__(_join(f"s3://{bucket}", prefix), prefix, transfer)
        self.bucket = bucket
        self.endpoint = endpoint or next(
            (os.environ[var] for var in S3_ENDPOINT_VARS if os.environ.get(var)), None
        )
        # Custom endpoints (MinIO, Ceph, an IP address) rarely serve bucket-name subdomains.
        style = {"addressing_style": "path"} if self.endpoint else {}
        config = Config(max_pool_connections=max(10, transfer.max_concurrency), s3=style)
        try:
            self._client: Any = Session().client(
                "s3", endpoint_url=self.endpoint, region_name=region, config=config
            )
        except ValueError as err:
            # botocore refuses an endpoint that is not an http(s) URL with a host: ValueError
            # "Invalid endpoint: ..." (botocore.endpoint.EndpointCreator.create_endpoint).
            raise StoreError(
                f"S3 endpoint {self.endpoint!r} ({_endpoint_source(endpoint)}) is not an "
                "http(s) URL with a host; fix: write it as http(s)://host[:port], e.g. "
                "http://127.0.0.1:9000"
            ) from err
        # "classic" so that the threshold and part size above apply: the CRT client needs
        # awscrt, which mlstack does not ship, and picks its own part sizes.
        self._config = TransferConfig(
            multipart_threshold=transfer.multipart_threshold_bytes,
            multipart_chunksize=transfer.chunk_size_bytes,
            max_concurrency=transfer.max_concurrency,
            preferred_transfer_client="classic",
        )

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._errors("put", key):
            self._client.upload_fileobj(
                io.BytesIO(data), self.bucket, self._name(key), Config=self._config
            )

    def get_bytes(self, key: str) -> bytes:
        with self._errors("get", key):
            body = self._client.get_object(Bucket=self.bucket, Key=self._name(key))["Body"]
            with body:
                return body.read()

    def exists(self, key: str) -> bool:
        try:
            with self._errors("head", key):
                self._client.head_object(Bucket=self.bucket, Key=self._name(key))
        except NotFound:
            return False
        return True

    def get_with_token(self, key: str) -> tuple[bytes, str]:
        with self._errors("get", key):
            reply = self._client.get_object(Bucket=self.bucket, Key=self._name(key))
            with reply["Body"] as body:
                return body.read(), reply["ETag"]

    def put_if_absent(self, key: str, data: bytes) -> str:
        return self._put_conditional(key, data, IfNoneMatch="*")

    def put_if_match(self, key: str, data: bytes, token: str) -> str:
        try:
            return self._put_conditional(key, data, IfMatch=token)
        except NotFound:
            # If-Match on a deleted key answers 404 NoSuchKey: it changed, as far as we care.
            raise Precondition(f"{self._where(key)} is gone") from None

    def _put_conditional(self, key: str, data: bytes, **condition: str) -> str:
        """One PutObject with an S3 conditional-write header; the new ETag.

        "If the ETag values do not match, the operation returns a 412 Precondition Failed
        error. If a conflicting operation occurs during the upload S3 returns a 409
        ConditionalRequestConflict response" (S3 API reference, PutObject IfMatch and
        IfNoneMatch; https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html).
        Either way this write did not happen, so both are a Precondition: the caller reads again.
        One PutObject, not a managed (possibly multipart) upload: the objects are small.
        """
        from botocore.exceptions import ClientError

        try:
            with self._errors("put", key):
                reply = self._client.put_object(
                    Bucket=self.bucket, Key=self._name(key), Body=data, **condition
                )
        except StoreError as err:
            cause = err.__cause__
            code = (
                str(cause.response.get("Error", {}).get("Code", ""))
                if isinstance(cause, ClientError)
                else ""
            )
            if code in ("412", "PreconditionFailed", "409", "ConditionalRequestConflict"):
                what = "already exists" if "IfNoneMatch" in condition else "changed"
                raise Precondition(f"{self._where(key)} {what} (S3 answered {code})") from err
            raise
        return reply["ETag"]

    def list(self, prefix: str = "") -> KeyList:
        full = self._list_prefix(prefix)
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=full
        )
        with self._errors("list", prefix):
            names = [item["Key"] for page in pages for item in page.get("Contents", [])]
        return sorted(self._relative(name) for name in names)

    def delete(self, key: str) -> None:
        with self._errors("delete", key):
            self._client.delete_object(Bucket=self.bucket, Key=self._name(key))

    def upload_file(self, local_path: PathLike, key: str) -> None:
        with self._errors("upload", key):
            self._client.upload_file(
                os.fspath(local_path), self.bucket, self._name(key), Config=self._config
            )

    def download_file(self, key: str, local_path: PathLike) -> None:
        Path(local_path).parent.mkdir(parents=True, exist_ok=True)
        with self._errors("download", key):
            self._client.download_file(
                self.bucket, self._name(key), os.fspath(local_path), Config=self._config
            )

    # One transfer manager for a whole directory, so that files and their parts share one
    # bound of max_concurrency requests instead of a pool per file.
    def _upload_files(self, pairs: Sequence[tuple[Path, str]]) -> None:
        with self._manager() as manager:
            self._wait(
                (key, manager.upload(os.fspath(path), self.bucket, self._name(key)))
                for path, key in pairs
            )

    def _download_files(self, pairs: Sequence[tuple[str, Path]]) -> None:
        for _, path in pairs:
            path.parent.mkdir(parents=True, exist_ok=True)
        with self._manager() as manager:
            self._wait(
                (key, manager.download(self.bucket, self._name(key), os.fspath(path)))
                for key, path in pairs
            )

    def _manager(self) -> Any:
        from boto3.s3.transfer import create_transfer_manager

        return create_transfer_manager(self._client, self._config)

    def _wait(self, transfers: Iterator[tuple[str, Future[Any]]]) -> None:
        for key, future in list(transfers):
            with self._errors("transfer", key):
                future.result()

    def _refused_read(self, action: str, key: str, code: str) -> StoreError:
        """What a read of `key` refused with 403 means: NotFound, or a real refusal.

        S3 answers a read of a missing key with 403, not 404, when the caller lacks
        s3:ListBucket for it: "If you don't have the s3:ListBucket permission, Amazon S3
        returns an HTTP status code 403 Forbidden error" (S3 API reference, HeadObject and
        GetObject, https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html).
        A team's workload role may list only under its own prefix (an s3:prefix condition,
        `components/aws/iam.py`), so "is there a `latest` yet" can come back 403.
        The listing that grant allows tells the two apart: the key is not listed, so it is
        absent; it is listed, so the read itself is refused, and that stays an error.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        where = self._where(key)
        name = self._name(key)
        try:
            # A key sorts before every longer key it prefixes, so one result is enough.
            page = self._client.list_objects_v2(Bucket=self.bucket, Prefix=name, MaxKeys=1)
        except (ClientError, BotoCoreError) as err:
            return StoreError(
                f"{action} {where}: access denied ({code}), and listing s3://{self.bucket}/"
                f"{name} to tell a missing object from a refused read failed too ({err}); fix: "
                f"grant the workload's role s3:ListBucket on bucket {self.bucket!r} for this "
                "prefix and s3:GetObject on its objects"
            )
        if [item["Key"] for item in page.get("Contents", [])[:1]] != [name]:
            return NotFound(f"object not found: {where} (S3 answered {code}; no such key listed)")
        return StoreError(
            f"{action} {where}: access denied ({code}) on an existing object; fix: grant the "
            f"workload's role s3:GetObject on arn:aws:s3:::{self.bucket}/{name}"
        )

    @contextmanager
    def _errors(self, action: str, key: str) -> Iterator[None]:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                raise NotFound(f"object not found: {self._where(key)}") from err
            if code in _S3_DENIED_CODES and action in _S3_KEY_READS:
                raise self._refused_read(action, key, code) from err
            if code == "NoSuchBucket":
                at = f" at {self.endpoint}" if self.endpoint else ""
                raise StoreError(
                    f"{action} {self._where(key)}: bucket {self.bucket!r} does not exist{at}; "
                    "create it or fix the URL"
                ) from err
            raise StoreError(f"{action} {self._where(key)} failed: {err}") from err
        except (BotoCoreError, Boto3Error) as err:
            raise StoreError(f"{action} {self._where(key)} failed: {err}") from err


class GCSStore(Store):
    """A bucket (and prefix) in Google Cloud Storage, or in an emulator of it."""

    def __init__(
        self, bucket: str, prefix: str, transfer: TransferSettings, *, endpoint: str | None = None
    ) -> None:
        from google.cloud import storage
        from requests.adapters import HTTPAdapter

        super().__init__(_join(f"gs://{bucket}", prefix), prefix, transfer)
        options = {"api_endpoint": endpoint} if endpoint else None
        project = os.environ.get("GOOGLE_CLOUD_PROJECT")
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            from google.auth.credentials import AnonymousCredentials

            client = storage.Client(
                project=project or "mlstack-emulator",
                credentials=AnonymousCredentials(),
                client_options=options,
            )
        else:
            from google.auth.exceptions import DefaultCredentialsError

            try:
                # An explicit None, unlike leaving it out, skips the project lookup: objects
                # in a named bucket need no project.
                client = storage.Client(project=project, client_options=options)
            except DefaultCredentialsError as err:
                raise StoreError(
                    f"no Google credentials for {self.base_url}: {err} (use workload identity, "
                    "GOOGLE_APPLICATION_CREDENTIALS or `gcloud auth application-default login`)"
                ) from err
        # Sliced downloads and directory transfers hold max_concurrency connections at once;
        # requests' default pool keeps 10 and logs a warning for every one it drops.
        adapter = HTTPAdapter(pool_maxsize=max(10, transfer.max_concurrency))
        client._http.mount("https://", adapter)
        client._http.mount("http://", adapter)
        self._client = client
        self._bucket = client.bucket(bucket)

    def put_bytes(self, key: str, data: bytes) -> None:
        blob = self._blob(key, size=len(data))
        with self._errors("put", key):
            blob.upload_from_string(data, content_type="application/octet-stream")

    def get_bytes(self, key: str) -> bytes:
        with self._errors("get", key):
            return self._blob(key).download_as_bytes()

    def exists(self, key: str) -> bool:
        with self._errors("head", key):
            return self._blob(key).exists()

    def get_with_token(self, key: str) -> tuple[bytes, str]:
        from google.api_core.exceptions import PreconditionFailed

        # The download is pinned to the generation just read: should the object change in
        # between, GCS answers 412 instead of other content under this token, and we read again.
        for attempt in range(1, _GCS_READ_ATTEMPTS + 1):
            try:
                with self._errors("get", key):
                    return self._get_generation(key)
            except StoreError as err:
                if attempt == _GCS_READ_ATTEMPTS or not isinstance(
                    err.__cause__, PreconditionFailed
                ):
                    raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _get_generation(self, key: str) -> tuple[bytes, str]:
        blob = self._bucket.get_blob(self._name(key))
        if blob is None:
            raise NotFound(f"object not found: {self._where(key)}")
        # Read before the download, which resets it from the response's x-goog-generation.
        generation = blob.generation
        return blob.download_as_bytes(if_generation_match=generation), str(generation)

    def put_if_absent(self, key: str, data: bytes) -> str:
        # "Setting ifGenerationMatch to 0 makes the request succeed only if there are no live
        # versions of the object" (GCS docs, Request preconditions,
        # https://cloud.google.com/storage/docs/request-preconditions).
        return self._put_conditional(key, data, generation=0, what="already exists")

    def put_if_match(self, key: str, data: bytes, token: str) -> str:
        return self._put_conditional(key, data, generation=int(token), what="changed")

    def _put_conditional(self, key: str, data: bytes, *, generation: int, what: str) -> str:
        """One upload with ``ifGenerationMatch``; the new object's generation. GCS answers
        412 Precondition Failed when the live generation differs (or the object is gone)."""
        from google.api_core.exceptions import PreconditionFailed

        blob = self._blob(key, size=len(data))
        try:
            with self._errors("put", key):
                blob.upload_from_string(
                    data,
                    content_type="application/octet-stream",
                    if_generation_match=generation,
                )
        except StoreError as err:
            if isinstance(err.__cause__, PreconditionFailed):
                raise Precondition(f"{self._where(key)} {what} (GCS answered 412)") from err
            raise
        return str(blob.generation)

    def list(self, prefix: str = "") -> KeyList:
        full = self._list_prefix(prefix)
        with self._errors("list", prefix):
            names = [blob.name for blob in self._client.list_blobs(self._bucket, prefix=full)]
        return sorted(self._relative(name) for name in names)

    def delete(self, key: str) -> None:
        from google.api_core.exceptions import NotFound as GoogleNotFound

        with self._errors("delete", key), suppress(GoogleNotFound):
            self._blob(key).delete()

    def upload_file(self, local_path: PathLike, key: str) -> None:
        blob = self._blob(key, size=Path(local_path).stat().st_size)
        with self._errors("upload", key):
            blob.upload_from_filename(os.fspath(local_path))

    def download_file(self, key: str, local_path: PathLike) -> None:
        self._download(key, Path(local_path), sliced=True)

    def _download_files(self, pairs: Sequence[tuple[str, Path]]) -> None:
        # Already parallel across files; slicing each large file as well would multiply threads.
        tasks = [partial(self._download, key, path, sliced=False) for key, path in pairs]
        _run_parallel(tasks, self.transfer.max_concurrency)

    def _download(self, key: str, path: Path, *, sliced: bool) -> None:
        from google.cloud.storage import transfer_manager

        with self._errors("download", key):
            blob = self._bucket.get_blob(self._name(key))
            if blob is None:
                raise NotFound(f"object not found: {self._where(key)}")
            with _atomic_writer(path) as out:
                if sliced and (blob.size or 0) > self.transfer.multipart_threshold_bytes:
                    # Threads, not the default processes: no pickled client, no forking.
                    transfer_manager.download_chunks_concurrently(
                        blob,
                        out.name,
                        chunk_size=self.transfer.chunk_size_bytes,
                        max_workers=self.transfer.max_concurrency,
                        worker_type=transfer_manager.THREAD,
                    )
                else:
                    blob.download_to_file(out)

    def _blob(self, key: str, size: int = 0) -> Any:
        # A chunk size makes the upload resumable and chunked; None keeps small ones to one
        # request.
        large = size > self.transfer.multipart_threshold_bytes
        chunk = self.transfer.chunk_size_bytes if large else None
        return self._bucket.blob(self._name(key), chunk_size=chunk)

    @contextmanager
    def _errors(self, action: str, key: str) -> Iterator[None]:
        from google.api_core.exceptions import GoogleAPIError
        from google.api_core.exceptions import NotFound as GoogleNotFound
        from google.cloud.storage.exceptions import DataCorruption, InvalidResponse

        try:
            yield
        except GoogleNotFound as err:
            raise NotFound(f"object not found: {self._where(key)}") from err
        except (GoogleAPIError, InvalidResponse, DataCorruption) as err:
            raise StoreError(f"{action} {self._where(key)} failed: {err}") from err


def _endpoint_source(argument: str | None) -> str:
    """Where an S3 endpoint came from, for messages: the argument or the variable that set it."""
    if argument:
        return "the endpoint argument"
    return next(f"${var}" for var in S3_ENDPOINT_VARS if os.environ.get(var))


def _run_parallel(tasks: Sequence[Callable[[], object]], max_workers: int) -> None:
    """Run `tasks` on a thread pool; the first failure cancels those not yet started."""
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        futures = [pool.submit(task) for task in tasks]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


@contextmanager
def _atomic_writer(path: Path) -> Iterator[IO[bytes]]:
    """A file that replaces `path` only once it is fully written and fsynced.

    A destination that cannot be created (a read-only or full disk, no permission, a file where
    a directory should be) is a StoreError naming it, not the OSError of the first mkdir.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{PARTIAL_SUFFIX}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = tmp.open("wb")
    except OSError as err:
        raise StoreError(
            f"cannot write {path}: {err.strerror or err}; fix: choose a directory you can "
            "write to, or fix its permissions"
        ) from err
    try:
        with handle as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _walk_files(root: Path, start: Path) -> Iterator[str]:
    """Every file under `start` as a `/`-separated path relative to `root`, temporaries and
    lock files left out. os.walk reads each directory once with scandir, file types included:
    several times faster than Path.rglob plus a stat per path on a registry's thousands."""
    for top, _, names in os.walk(start):
        rel = os.path.relpath(top, root)
        prefix = "" if rel == "." else f"{Path(rel).as_posix()}/"
        for name in names:
            if not name.endswith((PARTIAL_SUFFIX, LOCK_SUFFIX)):
                yield prefix + name


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _join(base: str, rest: str) -> str:
    return f"{base}/{rest}" if base and rest else base or rest


def _check_key(key: str, where: str) -> str:
    if not key or key.startswith("/") or key.endswith("/") or _bad_segment(key):
        raise StoreError(
            f"invalid key {key!r} under {where!r}: use a relative a/b/c path with no empty, "
            "'.' or '..' segment and no leading or trailing '/'"
        )
    return key


def _check_prefix(prefix: str, where: str, *, trailing_slash: bool = False) -> str:
    body = prefix[:-1] if trailing_slash and prefix.endswith("/") else prefix
    if body and (body.startswith("/") or body.endswith("/") or _bad_segment(body)):
        raise StoreError(
            f"invalid prefix {prefix!r} under {where!r}: use a relative a/b path with no "
            "empty, '.' or '..' segment"
        )
    return prefix


def _bad_segment(path: str) -> bool:
    return any(segment in ("", ".", "..") for segment in path.split("/"))
