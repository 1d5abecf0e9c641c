"""Training data: byte-level tokens in fixed-size shards in an object store, and their loader.

``prepare_dataset`` turns a directory of text files into a dataset at a store URL
(``mlstack data prepare SRC DEST``)::

    <dest>/shards/shard-00000.bin   raw little-endian uint16 tokens, shard_tokens each
    <dest>/shards/shard-00001.bin   ... (all full but the last)
    <dest>/index.json               written last: the dataset's commit marker

Tokens are the UTF-8 bytes of each document (0-255), each document followed by EOS_ID (256).
A reader that finds ``index.json`` finds every shard it lists, each checked by its sha256.

``Loader`` serves training examples from a dataset: windows of ``seq_len + 1`` tokens (inputs
and targets shifted by one) starting at every multiple of ``seq_len``, so consecutive windows
share one token and every token but the first is a target exactly once per epoch. Windows run
across document and shard boundaries (documents are packed, EOS between them).

The order is a pure function of ``(seed, step)``: global row ``g = step * global_batch_size + r``
of the endless stream is window ``perm(epoch)[g % num_windows]`` with ``epoch = g //
num_windows`` and ``perm(epoch)`` a permutation of all windows drawn from
``np.random.default_rng((seed, epoch))``. Each epoch covers every window once, in its own order,
and a batch may straddle two epochs. Process ``p`` of ``P`` takes rows ``[p * local, (p + 1) *
local)`` of each global batch, so the processes' batches, concatenated, are exactly the global
batch that one process would see, and a run resumed at step ``k`` sees the batches the
uninterrupted run would have.

No JAX here: the loader hands out numpy arrays and the trainer places them on devices.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import queue
import shutil
import sys
import sysconfig
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np

from mlstack.workloads.storage import NotFound, Store, open_store
from mlstack.workloads.train.configs import BYTE_VOCAB, CONFIGS, EOS_ID, TOKENIZER_VOCAB

FORMAT = "mlstack-tokens"
FORMAT_VERSION = 1
INDEX_KEY = "index.json"
SHARD_PREFIX = "shards/"
#: Tokens on disk: little-endian uint16 (the vocabulary, 257 ids, needs more than a byte).
DTYPE = "uint16"
_NP_DTYPE = np.dtype("<u2")
#: 4 Mi tokens, 8 MiB per shard: small enough to fetch on demand, large enough that a dataset
#: of billions of tokens stays at a few thousand objects.
DEFAULT_SHARD_TOKENS = 1 << 22
#: A shard is built in memory (2 bytes a token): 2 GiB at most, so that a typo in
#: --shard-tokens is refused instead of failing to allocate terabytes.
MAX_SHARD_TOKENS = 1 << 30
#: Directories never walked: installed packages, bytecode caches, VCS and tool metadata (any
#: name starting with a dot).
SKIP_DIRS = frozenset({"__pycache__", "site-packages", "dist-packages", "node_modules"})
#: Shards uploaded at once while the next ones are tokenized.
_UPLOADS_IN_FLIGHT = 4


class DataError(Exception):
    """A dataset that cannot be prepared or loaded: what was wrong, where, and the fix."""

    def __init__(self, what: str, where: str, fix: str) -> None:
        self.what = what
        self.where = where
        self.fix = fix
        line = f"{where}: {what}; fix: {fix}"
        super().__init__(line.replace("\r", "\\r").replace("\n", "\\n"))


# --- tokenizer ------------------------------------------------------------------------------


def tokenizer_facts() -> dict[str, Any]:
    """What a reader of the tokens needs to know; stored in the index and the serving bundle."""
    return {"kind": "bytes", "vocab_size": TOKENIZER_VOCAB, "eos_id": EOS_ID}


def encode(text: str) -> np.ndarray:
    """The token ids (int32) of `text`: its UTF-8 bytes, no EOS."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)


def decode(ids: Any) -> str:
    """The text of token ids; EOS and other non-byte ids are dropped, bad UTF-8 replaced."""
    array = np.asarray(ids).reshape(-1)
    keep = array[(array >= 0) & (array < BYTE_VOCAB)]
    return keep.astype(np.uint8).tobytes().decode("utf-8", errors="replace")


# --- the corpus -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    """Text files under `root` whose names match `pattern` (a glob on the file name)."""

    root: Path
    pattern: str = "*"
    #: A short name for the index's source description.
    name: str = ""

    def files(self) -> list[tuple[str, Path]]:
        """(relative posix path, path) of every matching file, sorted by relative path.

        Symlinked directories are not followed; SKIP_DIRS and dot-directories are not walked.
        """
        found: list[tuple[str, Path]] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".")]
            here = Path(dirpath)
            for filename in filenames:
                if fnmatch.fnmatchcase(filename, self.pattern):
                    path = here / filename
                    found.append((path.relative_to(self.root).as_posix(), path))
        found.sort()
        return found


def default_corpus() -> Corpus:
    """The Python standard library's source files: a corpus every machine has."""
    version = ".".join(map(str, sys.version_info[:3]))
    return Corpus(
        Path(sysconfig.get_paths()["stdlib"]), pattern="*.py", name=f"python-{version}-stdlib"
    )


def read_document(path: Path) -> tuple[bytes | None, str]:
    """The UTF-8 bytes of a text file, or None and why it is skipped."""
    try:
        data = path.read_bytes()
    except OSError:
        return None, "unreadable"
    if not data:
        return None, "empty"
    if b"\0" in data:
        return None, "binary"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not_utf8"
    return data, ""


# --- the index ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardInfo:
    key: str
    tokens: int
    sha256: str


@dataclass(frozen=True)
class DatasetIndex:
    """The contents of ``index.json``: the dataset's shards, tokenizer and provenance."""

    tokenizer: dict[str, Any]
    shard_tokens: int
    shards: tuple[ShardInfo, ...]
    total_tokens: int
    documents: int
    source: dict[str, Any]
    created: str
    dtype: str = DTYPE
    version: int = FORMAT_VERSION

    @property
    def num_bytes(self) -> int:
        return self.total_tokens * _NP_DTYPE.itemsize

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "tokenizer": self.tokenizer,
            "dtype": self.dtype,
            "byte_order": "little",
            "shard_tokens": self.shard_tokens,
            "shards": [{"key": s.key, "tokens": s.tokens, "sha256": s.sha256} for s in self.shards],
            "total_tokens": self.total_tokens,
            "documents": self.documents,
            "source": self.source,
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> DatasetIndex:
        """The index in `data` (parsed index.json), checked; DataError names `where`."""
        fix = "prepare the dataset again with `mlstack data prepare SRC URL --overwrite`"
        try:
            if data.get("format") != FORMAT or data.get("version") != FORMAT_VERSION:
                raise DataError(
                    f"unsupported dataset format {data.get('format')!r} version "
                    f"{data.get('version')!r} (this mlstack reads {FORMAT} {FORMAT_VERSION})",
                    where,
                    fix,
                )
            index = cls(
                tokenizer=dict(data["tokenizer"]),
                shard_tokens=int(data["shard_tokens"]),
                shards=tuple(
                    ShardInfo(str(s["key"]), int(s["tokens"]), str(s["sha256"]))
                    for s in data["shards"]
                ),
                total_tokens=int(data["total_tokens"]),
                documents=int(data["documents"]),
                source=dict(data["source"]),
                created=str(data["created"]),
                dtype=str(data["dtype"]),
                version=int(data["version"]),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise DataError(f"index.json is malformed ({err!r})", where, fix) from err
        index._check(where, fix)
        return index

    @classmethod
    def load(cls, url: str | Store) -> DatasetIndex:
        """The index of the dataset at `url`."""
        store = _open(url)
        return cls.from_json(_read_index_json(store), store.url(INDEX_KEY))

    def _check(self, where: str, fix: str) -> None:
        if self.dtype != DTYPE or self.tokenizer != tokenizer_facts():
            raise DataError(
                f"dataset has dtype {self.dtype!r} and tokenizer {self.tokenizer}, "
                f"expected {DTYPE!r} and {tokenizer_facts()}",
                where,
                fix,
            )
        sizes = [s.tokens for s in self.shards]
        if (
            not sizes
            or self.shard_tokens < 1
            or any(n != self.shard_tokens for n in sizes[:-1])
            or not 1 <= sizes[-1] <= self.shard_tokens
            or sum(sizes) != self.total_tokens
        ):
            raise DataError(
                f"shard sizes {sizes[:3]}... do not fit shard_tokens={self.shard_tokens} "
                f"and total_tokens={self.total_tokens}",
                where,
                fix,
            )


def _read_index_json(store: Store) -> Any:
    where = store.url(INDEX_KEY)
    try:
        raw = store.get_bytes(INDEX_KEY)
    except NotFound:
        raise DataError(
            "no dataset here (index.json is missing, or its prepare never finished)",
            where,
            f"run `mlstack data prepare SRC {store.base_url}` (SRC: a directory of text "
            "files, or `stdlib`)",
        ) from None
    try:
        return json.loads(raw)
    except ValueError as err:
        raise DataError(
            f"index.json is not JSON ({err})",
            where,
            "prepare the dataset again with `mlstack data prepare SRC URL --overwrite`",
        ) from err


def _open(url: str | Store) -> Store:
    return open_store(url) if isinstance(url, str) else url


# --- prepare --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrepareProgress:
    """Where a prepare stands; passed to the progress callback after every file."""

    files_done: int
    files_total: int
    tokens: int
    shards_uploaded: int


def prepare_dataset(
    src: Corpus | Path,
    dest: str | Store,
    *,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    overwrite: bool = False,
    progress: Callable[[PrepareProgress], None] | None = None,
) -> DatasetIndex:
    """Tokenize the text files of `src` into shards at `dest` and write its index last.

    Files are read in sorted order of their relative paths; unreadable, empty, binary (a NUL
    byte) and non-UTF-8 files are skipped and counted in the index's ``source.skipped``.
    With `overwrite`, an existing dataset's index is deleted first (so no reader pairs the old
    index with new shards) and shards it had beyond the new ones are removed before the new
    index is written.
    """
    corpus = src if isinstance(src, Corpus) else Corpus(Path(src))
    store = _open(dest)
    if shard_tokens < 1:
        raise DataError(
            f"shard_tokens={shard_tokens} is not positive",
            store.base_url,
            f"use a positive count, e.g. {DEFAULT_SHARD_TOKENS}",
        )
    if shard_tokens > MAX_SHARD_TOKENS:
        raise DataError(
            f"shard_tokens={shard_tokens} is over {MAX_SHARD_TOKENS:,} (2 GiB, built in memory)",
            store.base_url,
            f"use a smaller count, e.g. {DEFAULT_SHARD_TOKENS}",
        )
    if not corpus.root.is_dir():
        raise DataError(
            "source is not a directory", str(corpus.root), "pass a directory of text files"
        )
    files = corpus.files()
    if not files:
        raise DataError(
            f"no files match {corpus.pattern!r}",
            str(corpus.root),
            "pass a directory that holds text files (or another --pattern)",
        )
    if store.exists(INDEX_KEY):
        if not overwrite:
            raise DataError(
                "a dataset is already here",
                store.url(INDEX_KEY),
                "pass --overwrite (overwrite=True) to replace it, or choose another URL",
            )
        store.delete(INDEX_KEY)

    with _ShardWriter(store, shard_tokens) as writer:
        skipped: dict[str, int] = {}
        documents = source_bytes = 0
        for done, (_, path) in enumerate(files, 1):
            data, reason = read_document(path)
            if data is None:
                skipped[reason] = skipped.get(reason, 0) + 1
            else:
                writer.add(np.frombuffer(data, dtype=np.uint8))
                documents += 1
                source_bytes += len(data)
            if progress is not None:
                progress(PrepareProgress(done, len(files), writer.tokens, writer.uploaded))
        shards = writer.finish()
    if not shards:
        raise DataError(
            f"none of the {len(files)} files is UTF-8 text (skipped: {_describe(skipped)})",
            str(corpus.root),
            "pass a directory of UTF-8 text files",
        )

    keys = {s.key for s in shards}
    for stale in store.list(SHARD_PREFIX):
        if stale not in keys:
            store.delete(stale)
    index = DatasetIndex(
        tokenizer=tokenizer_facts(),
        shard_tokens=shard_tokens,
        shards=tuple(shards),
        total_tokens=sum(s.tokens for s in shards),
        documents=documents,
        source={
            "name": corpus.name or corpus.root.name,
            "root": str(corpus.root),
            "pattern": corpus.pattern,
            "files": len(files),
            "bytes": source_bytes,
            "skipped": dict(sorted(skipped.items())),
        },
        created=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    )
    store.put_bytes(INDEX_KEY, (json.dumps(index.to_json(), indent=1) + "\n").encode())
    if progress is not None:
        progress(PrepareProgress(len(files), len(files), index.total_tokens, len(shards)))
    return index


def _describe(skipped: dict[str, int]) -> str:
    return ", ".join(f"{n} {reason.replace('_', '-')}" for reason, n in sorted(skipped.items()))


def describe_skipped(index: DatasetIndex) -> str:
    """'3 binary, 1 not-utf8' for the files a prepare skipped; '' for none."""
    return _describe(index.source.get("skipped", {}))


class _ShardWriter:
    """Packs documents (each followed by EOS) into full shards and uploads them in the
    background, a few at a time, while the caller reads the next files."""

    def __init__(self, store: Store, shard_tokens: int) -> None:
        self._store = store
        self._buffer = np.empty(shard_tokens, dtype=_NP_DTYPE)
        self._filled = 0
        self._tmp = tempfile.TemporaryDirectory(prefix="mlstack-shards-")
        self._pool = ThreadPoolExecutor(_UPLOADS_IN_FLIGHT, thread_name_prefix="mlstack-upload")
        self._pending: list[Future[None]] = []
        self._shards: list[ShardInfo] = []
        self.tokens = 0
        self.uploaded = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)
        self._tmp.cleanup()

    def add(self, document: np.ndarray) -> None:
        self._write(document)
        self._write(np.array([EOS_ID], dtype=_NP_DTYPE))

    def finish(self) -> list[ShardInfo]:
        if self._filled:
            self._flush()
        while self._pending:
            self._pending.pop(0).result()
            self.uploaded += 1
        return self._shards

    def _write(self, tokens: np.ndarray) -> None:
        done = 0
        while done < len(tokens):
            take = min(len(tokens) - done, len(self._buffer) - self._filled)
            self._buffer[self._filled : self._filled + take] = tokens[done : done + take]
            self._filled += take
            done += take
            self.tokens += take
            if self._filled == len(self._buffer):
                self._flush()

    def _flush(self) -> None:
        tokens = self._buffer[: self._filled]
        key = f"{SHARD_PREFIX}shard-{len(self._shards):05d}.bin"
        path = Path(self._tmp.name) / key.replace("/", "_")
        tokens.tofile(path)
        digest = hashlib.sha256(tokens.tobytes()).hexdigest()
        self._shards.append(ShardInfo(key, len(tokens), digest))
        self._filled = 0
        while len(self._pending) >= _UPLOADS_IN_FLIGHT:
            self._pending.pop(0).result()
            self.uploaded += 1
        self._pending.append(self._pool.submit(self._upload, path, key))

    def _upload(self, path: Path, key: str) -> None:
        self._store.upload_file(path, key)
        path.unlink()


# --- test split -----------------------------------------------------------------------------

#: The largest test fraction: a test split larger than the train split is a mistake.
MAX_TEST_FRACTION = 0.5


@dataclass(frozen=True)
class SplitResult:
    """What `split_dataset` wrote: each split's index checksum, tokens and documents."""

    train_index_sha256: str
    test_index_sha256: str
    train_tokens: int
    test_tokens: int
    train_documents: int
    test_documents: int


def index_sha256(url: str | Store) -> str:
    """The sha256 of a dataset's index.json bytes: what names the dataset's content (a
    prepare's shards are named by their own sha256 inside it)."""
    store = _open(url)
    _read_index_json(store)  # the usual one-line error when there is no dataset
    return hashlib.sha256(store.get_bytes(INDEX_KEY)).hexdigest()


def _min_split_tokens() -> int:
    """The fewest tokens a split may hold: one window (seq_len + 1) of the smallest config."""
    return min(c.model.seq_len for c in CONFIGS.values()) + 1


def in_test_split(document: np.ndarray, seed: int, test_fraction: float) -> bool:
    """Whether a document (its tokens, no EOS) belongs to the test split: the first 8 bytes of
    sha256(seed, tokens) as a fraction of 2**64, below `test_fraction`. A function of the
    content alone, so the same document lands on the same side in every run and wherever it
    sits in the dataset."""
    digest = hashlib.sha256(seed.to_bytes(8, "little", signed=True))
    digest.update(np.ascontiguousarray(document, dtype=_NP_DTYPE).tobytes())
    return int.from_bytes(digest.digest()[:8], "little") < test_fraction * 2.0**64


def _documents(store: Store, index: DatasetIndex, scratch: Path) -> Iterator[np.ndarray]:
    """Every document (uint16 tokens without its EOS) of a dataset, in order, reading one
    shard at a time (checked against its sha256); a document that spans shards is joined."""
    carry: list[np.ndarray] = []
    for shard in index.shards:
        path = scratch / "shard.bin"
        store.download_file(shard.key, path)
        if _sha256_file(path) != shard.sha256:
            raise DataError(
                "shard does not match the sha256 in index.json",
                store.url(shard.key),
                "prepare the dataset again with `mlstack data prepare SRC URL --overwrite`",
            )
        tokens = np.fromfile(path, dtype=_NP_DTYPE)
        path.unlink()
        ends = np.flatnonzero(tokens == EOS_ID).tolist()
        start = 0
        for end in ends:
            piece = tokens[start:end]
            if carry:
                piece = np.concatenate([*carry, piece])
                carry = []
            yield piece
            start = end + 1
        if start < len(tokens):
            carry.append(tokens[start:])
    if carry:
        yield np.concatenate(carry)


def split_dataset(
    source: str | Store,
    train_dest: str | Store,
    test_dest: str | Store,
    *,
    test_fraction: float,
    seed: int = 0,
) -> SplitResult:
    """Split a prepared dataset into a train and a test dataset, document by document.

    A document goes to the test split when `in_test_split` says so (its content hash and the
    seed), so the same source and seed always give the same splits. Both are ordinary datasets
    (shards with sha256, index.json written last) that `Loader` reads; the source is streamed
    one shard at a time. Refused with DataError: a fraction outside (0, 0.5], and a split that
    would hold fewer tokens than one window of the smallest model config.
    """
    src = _open(source)
    if not 0 < test_fraction <= MAX_TEST_FRACTION:
        raise DataError(
            f"test_fraction={test_fraction} is outside (0, {MAX_TEST_FRACTION}]",
            src.base_url,
            "use a fraction such as 0.05",
        )
    index = DatasetIndex.load(src)
    source_sha = hashlib.sha256(src.get_bytes(INDEX_KEY)).hexdigest()
    stores = {"train": _open(train_dest), "test": _open(test_dest)}
    for store in stores.values():
        if store.exists(INDEX_KEY):
            store.delete(INDEX_KEY)  # no reader pairs an old index with new shards
    counts = {"train": 0, "test": 0}
    with (
        _ShardWriter(stores["train"], index.shard_tokens) as train,
        _ShardWriter(stores["test"], index.shard_tokens) as test,
        tempfile.TemporaryDirectory(prefix="mlstack-split-") as scratch,
    ):
        writers = {"train": train, "test": test}
        for document in _documents(src, index, Path(scratch)):
            side = "test" if in_test_split(document, seed, test_fraction) else "train"
            writers[side].add(document)
            counts[side] += 1
        shards = {side: writer.finish() for side, writer in writers.items()}
    needed = _min_split_tokens()
    for side, written in shards.items():
        tokens = sum(s.tokens for s in written)
        if tokens < needed:
            raise DataError(
                f"the {side} split holds {tokens} tokens ({counts[side]} documents), fewer "
                f"than one window ({needed} tokens) of the smallest model config",
                stores[side].base_url,
                "split a larger dataset, or use a test_fraction nearer "
                + ("0.5" if side == "test" else "0.05"),
            )
    digests: dict[str, str] = {}
    for side, store in stores.items():
        keys = {s.key for s in shards[side]}
        for stale in store.list(SHARD_PREFIX):
            if stale not in keys:
                store.delete(stale)
        split_index = DatasetIndex(
            tokenizer=tokenizer_facts(),
            shard_tokens=index.shard_tokens,
            shards=tuple(shards[side]),
            total_tokens=sum(s.tokens for s in shards[side]),
            documents=counts[side],
            source={
                "name": f"{index.source.get('name', 'dataset')}-{side}",
                "split": side,
                "from": src.base_url,
                "from_sha256": source_sha,
                "test_fraction": test_fraction,
                "seed": seed,
            },
            # The source's time, not now: the same source and seed give byte-identical
            # indexes, so the splits' checksums (a pipeline's cache keys) repeat too.
            created=index.created,
        )
        raw = (json.dumps(split_index.to_json(), indent=1) + "\n").encode()
        store.put_bytes(INDEX_KEY, raw)
        digests[side] = hashlib.sha256(raw).hexdigest()
    return SplitResult(
        train_index_sha256=digests["train"],
        test_index_sha256=digests["test"],
        train_tokens=sum(s.tokens for s in shards["train"]),
        test_tokens=sum(s.tokens for s in shards["test"]),
        train_documents=counts["train"],
        test_documents=counts["test"],
    )


# --- loading --------------------------------------------------------------------------------


class Loader:
    """Batches of token windows from a prepared dataset; see the module docstring for the order
    (with `shuffle=False`, windows in dataset order, cycling: what evaluation reads).

    Shards are fetched on first use into `cache_dir` (a temporary directory removed on close
    when None), named by their sha256, checked against the index once per Loader, fetched again
    when the cached copy does not match, and memory-mapped. Use it as a context manager, or
    call close().
    """

    def __init__(
        self,
        dataset: str | Store,
        *,
        seq_len: int,
        global_batch_size: int,
        process_index: int = 0,
        process_count: int = 1,
        seed: int = 0,
        cache_dir: Path | None = None,
        shuffle: bool = True,
    ) -> None:
        self._store = _open(dataset)
        self.index = DatasetIndex.load(self._store)
        where = self._store.base_url
        if seq_len < 1 or global_batch_size < 1:
            raise DataError(
                f"seq_len={seq_len} and global_batch_size={global_batch_size} must be positive",
                where,
                "pass positive sizes",
            )
        if not 0 <= process_index < process_count:
            raise DataError(
                f"process_index={process_index} is not in 0..process_count-1 "
                f"(process_count={process_count})",
                where,
                "pass the process's index among process_count processes",
            )
        if global_batch_size % process_count:
            raise DataError(
                f"global_batch_size={global_batch_size} is not divisible by "
                f"process_count={process_count}",
                where,
                f"use a global batch size that is a multiple of {process_count}",
            )
        self.seq_len = seq_len
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // process_count
        self.process_index = process_index
        self.process_count = process_count
        self.seed = seed
        #: Windows of seq_len + 1 tokens at every multiple of seq_len.
        self.num_windows = (self.index.total_tokens - 1) // seq_len
        #: False: row g is window g % num_windows, in order (evaluation: the same rows every
        #: time, and a dataset smaller than a batch repeats its windows).
        self.shuffle = shuffle
        if self.num_windows < (global_batch_size if shuffle else 1):
            needed = f"one global batch of {global_batch_size}" if shuffle else "one"
            raise DataError(
                f"the dataset's {self.index.total_tokens} tokens make {self.num_windows} "
                f"windows of seq_len={seq_len}, fewer than {needed}",
                where,
                "prepare a larger dataset, or lower seq_len or global_batch_size",
            )
        self._own_cache = cache_dir is None
        self.cache_dir = (
            Path(tempfile.mkdtemp(prefix="mlstack-data-")) if cache_dir is None else cache_dir
        )
        self._lock = threading.Lock()
        self._maps: dict[int, np.ndarray] = {}
        self._perms: OrderedDict[int, np.ndarray] = OrderedDict()
        self._prefetchers: list[Prefetcher] = []
        self._closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop every prefetch thread, drop the memory maps, remove a temporary cache."""
        for prefetcher in list(self._prefetchers):
            prefetcher.close()
        self._closed = True
        with self._lock:
            self._maps.clear()
            self._perms.clear()
        if self._own_cache:
            shutil.rmtree(self.cache_dir, ignore_errors=True)

    def global_windows(self, step: int) -> np.ndarray:
        """The window ids (int64) of every row of the global batch at `step`."""
        return self._windows(step * self.global_batch_size, self.global_batch_size)

    def batch(self, step: int) -> np.ndarray:
        """This process's rows of the global batch at `step`: int32 [local, seq_len + 1]."""
        if self._closed:
            raise DataError("the loader is closed", self._store.base_url, "open a new Loader")
        if step < 0:
            raise DataError(f"step={step} is negative", self._store.base_url, "pass step >= 0")
        first_row = step * self.global_batch_size + self.process_index * self.local_batch_size
        starts = self._windows(first_row, self.local_batch_size) * self.seq_len
        out = np.empty((self.local_batch_size, self.seq_len + 1), dtype=np.int32)
        # Each window is one contiguous run of tokens in at most a few shards: a copy per row
        # and shard, never a Python loop over tokens.
        shard_tokens = self.index.shard_tokens
        for row, start in enumerate(starts.tolist()):
            done = 0
            while done < out.shape[1]:
                shard, offset = divmod(start + done, shard_tokens)
                tokens = self._shard(shard)
                take = min(out.shape[1] - done, len(tokens) - offset)
                out[row, done : done + take] = tokens[offset : offset + take]
                done += take
        return out

    def iterate(self, start_step: int = 0, *, prefetch: int = 2) -> Prefetcher:
        """(step, batch) for start_step, start_step + 1, ... built ahead on a background thread.

        At most `prefetch` batches wait in memory. Close it (or the loader) to stop the thread;
        an error in the thread is raised by the next `next()`.
        """
        prefetcher = Prefetcher(self, start_step, prefetch)
        self._prefetchers.append(prefetcher)
        return prefetcher

    def _windows(self, first_row: int, count: int) -> np.ndarray:
        rows = np.arange(first_row, first_row + count, dtype=np.int64)
        epochs, positions = np.divmod(rows, self.num_windows)
        if not self.shuffle:
            return positions
        out = np.empty(count, dtype=np.int64)
        for epoch in np.unique(epochs).tolist():
            mask = epochs == epoch
            out[mask] = self._permutation(epoch)[positions[mask]]
        return out

    def _permutation(self, epoch: int) -> np.ndarray:
        with self._lock:
            perm = self._perms.get(epoch)
            if perm is None:
                perm = np.random.default_rng((self.seed, epoch)).permutation(self.num_windows)
                self._perms[epoch] = perm
                # A batch spans at most two epochs (one per global batch or more).
                while len(self._perms) > 2:
                    self._perms.popitem(last=False)
            return perm

    def _shard(self, number: int) -> np.ndarray:
        tokens = self._maps.get(number)
        if tokens is None:
            with self._lock:
                tokens = self._maps.get(number)
                if tokens is None:
                    tokens = self._maps[number] = self._fetch(self.index.shards[number])
        return tokens

    def _fetch(self, shard: ShardInfo) -> np.ndarray:
        path = self.cache_dir / f"{shard.sha256}.bin"
        if not (path.is_file() and _sha256_file(path) == shard.sha256):
            self._store.download_file(shard.key, path)
            if _sha256_file(path) != shard.sha256:
                raise DataError(
                    "shard does not match the sha256 in index.json",
                    self._store.url(shard.key),
                    "prepare the dataset again with `mlstack data prepare SRC URL --overwrite`",
                )
        tokens = np.memmap(path, dtype=_NP_DTYPE, mode="r")
        if len(tokens) != shard.tokens:
            raise DataError(
                f"shard holds {len(tokens)} tokens, index.json says {shard.tokens}",
                self._store.url(shard.key),
                "prepare the dataset again with `mlstack data prepare SRC URL --overwrite`",
            )
        return tokens


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Prefetcher:
    """An iterator of (step, batch) that builds the next batches on a daemon thread."""

    loader: Loader
    start_step: int
    prefetch: int = 2
    _queue: queue.Queue[tuple[int, np.ndarray] | BaseException] = field(init=False)
    _stop: threading.Event = field(init=False, default_factory=threading.Event)
    _thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self._queue = queue.Queue(maxsize=max(1, self.prefetch))
        self._thread = threading.Thread(target=self._run, name="mlstack-prefetch", daemon=True)
        self._thread.start()

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> tuple[int, np.ndarray]:
        while True:
            if self._stop.is_set():
                raise StopIteration
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise StopIteration from None
                continue
            if isinstance(item, BaseException):
                self.close()
                raise item
            return item

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the thread and wait for it (it finishes the batch it is building)."""
        self._stop.set()
        self._thread.join()
        if self in self.loader._prefetchers:
            self.loader._prefetchers.remove(self)

    def _run(self) -> None:
        step = self.start_step
        while not self._stop.is_set():
            item: tuple[int, np.ndarray] | BaseException
            try:
                item = (step, self.loader.batch(step))
            except BaseException as err:
                item = err
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.05)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return
            step += 1
