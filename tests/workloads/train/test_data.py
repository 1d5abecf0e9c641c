"""workloads.train.data: prepare a small corpus into a store and load batches back from it.

Shards are tiny (1000 tokens) so that a corpus of a few dozen files makes many of them and
training windows run across shard boundaries.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests_support import RecordingStore

from mlstack.workloads.storage import NotFound, Store, open_store
from mlstack.workloads.train.configs import EOS_ID, TOKENIZER_VOCAB
from mlstack.workloads.train.data import (
    INDEX_KEY,
    Corpus,
    DataError,
    DatasetIndex,
    Loader,
    decode,
    default_corpus,
    encode,
    prepare_dataset,
    tokenizer_facts,
)

SHARD_TOKENS = 1000
SEQ_LEN = 16

pytestmark = pytest.mark.filterwarnings(
    # google.api_core warns on import about the end of Python 3.11 support (2027).
    "ignore:You are using a Python version:FutureWarning"
)


def _write_corpus(root: Path, files: int = 30, seed: int = 0) -> list[str]:
    """Text files of random sizes under `root` (and junk that must be skipped); returns the
    documents in the order prepare reads them."""
    rng = random.Random(seed)
    alphabet = "abcdefghij klmnop\nqrstuvwxyz_(){}:=é€"
    docs: dict[str, str] = {}
    for i in range(files):
        rel = f"pkg{i % 3}/mod_{i:02d}.py" if i % 2 else f"top_{i:02d}.py"
        docs[rel] = "".join(rng.choice(alphabet) for _ in range(rng.randint(50, 1500)))
    for rel, text in docs.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    (root / "blob.bin").write_bytes(b"\x00\x01\x02binary")
    (root / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (root / "empty.py").write_bytes(b"")
    for skipped_dir in ("__pycache__", ".git", "site-packages"):
        (root / skipped_dir).mkdir()
        (root / skipped_dir / "ignored.py").write_text("never read")
    return [docs[rel] for rel in sorted(docs)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("corpus")
    return root, _write_corpus(root)


@pytest.fixture(scope="module")
def dataset(corpus: tuple[Path, list[str]], tmp_path_factory: pytest.TempPathFactory) -> str:
    """A prepared dataset in a directory, shared (read-only) by the loader tests."""
    url = (tmp_path_factory.mktemp("datasets") / "ds").as_uri()
    prepare_dataset(corpus[0], url, shard_tokens=SHARD_TOKENS)
    return url


def _tokens(url: str) -> np.ndarray:
    """Every token of a dataset, in order, read straight from its shards."""
    store = open_store(url)
    index = DatasetIndex.load(store)
    parts = [np.frombuffer(store.get_bytes(s.key), dtype="<u2") for s in index.shards]
    return np.concatenate(parts)


def _loader(url: str, tmp_path: Path, **kwargs: Any) -> Loader:
    settings: dict[str, Any] = {"seq_len": SEQ_LEN, "global_batch_size": 8}
    settings.update(kwargs)
    return Loader(url, cache_dir=tmp_path / f"cache-{uuid.uuid4().hex[:8]}", **settings)


def _one_line_with_fix(exc: pytest.ExceptionInfo[DataError], *needles: str) -> str:
    text = str(exc.value)
    assert "\n" not in text and "; fix: " in text, text
    for needle in needles:
        assert needle in text, text
    return text


# --- tokenizer ------------------------------------------------------------------------------


def test_tokens_are_utf8_bytes_and_decode_drops_eos() -> None:
    text = "déf f(x):\n    return '€'"
    ids = encode(text)

    assert ids.dtype == np.int32
    assert ids.tolist() == list(text.encode("utf-8"))
    assert decode(np.concatenate([ids, [EOS_ID], encode("next")])) == text + "next"
    assert decode([0xE2, 0x82]) == "\ufffd"
    assert tokenizer_facts() == {"kind": "bytes", "vocab_size": TOKENIZER_VOCAB, "eos_id": 256}


# --- prepare --------------------------------------------------------------------------------


def test_prepare_writes_full_shards_and_an_index(
    dataset: str, corpus: tuple[Path, list[str]]
) -> None:
    root, docs = corpus
    store = open_store(dataset)
    index = json.loads(store.get_bytes(INDEX_KEY))
    sizes = [s["tokens"] for s in index["shards"]]

    assert index["tokenizer"] == tokenizer_facts()
    assert (index["format"], index["version"], index["dtype"]) == ("mlstack-tokens", 1, "uint16")
    assert len(sizes) > 10
    assert all(n == SHARD_TOKENS for n in sizes[:-1]) and 0 < sizes[-1] <= SHARD_TOKENS
    assert sum(sizes) == index["total_tokens"]
    assert store.list("shards/") == [s["key"] for s in index["shards"]]
    for shard in index["shards"]:
        data = store.get_bytes(shard["key"])
        assert len(data) == 2 * shard["tokens"]
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
    assert index["documents"] == len(docs)
    assert index["source"]["root"] == str(root)
    assert index["source"]["files"] == len(docs) + 3
    assert index["source"]["skipped"] == {"binary": 1, "empty": 1, "not_utf8": 1}


def test_tokens_round_trip_to_the_documents(dataset: str, corpus: tuple[Path, list[str]]) -> None:
    tokens = _tokens(dataset)
    ends = np.flatnonzero(tokens == EOS_ID)

    assert ends[-1] == len(tokens) - 1
    assert [decode(doc) for doc in np.split(tokens, ends + 1)[:-1]] == corpus[1]
    assert decode(tokens) == "".join(corpus[1])


def test_index_is_written_last_and_overwrite_removes_it_first(
    corpus: tuple[Path, list[str]], tmp_path: Path
) -> None:
    store = RecordingStore(tmp_path / "ds")
    prepare_dataset(corpus[0], store, shard_tokens=SHARD_TOKENS)

    assert store.calls[-1] == ("put", INDEX_KEY)
    assert all(kind == "upload" for kind, _ in store.calls[:-1])

    store.calls.clear()
    index = prepare_dataset(corpus[0], store, shard_tokens=4 * SHARD_TOKENS, overwrite=True)

    assert store.calls[0] == ("delete", INDEX_KEY)
    assert store.calls[-1] == ("put", INDEX_KEY)
    # The first run's extra shards are gone before the new index appears.
    assert store.list("shards/") == [s.key for s in index.shards]
    assert decode(_tokens(store.base_url)) == "".join(corpus[1])


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_prepare_and_load_through_s3_and_gcs(
    scheme: str,
    request: pytest.FixtureRequest,
    corpus: tuple[Path, list[str]],
    dataset: str,
    tmp_path: Path,
) -> None:
    bucket = f"mlstack-{uuid.uuid4().hex[:16]}"
    endpoint = None
    if scheme == "s3":
        request.getfixturevalue("s3_admin").create_bucket(Bucket=bucket)
        endpoint = request.getfixturevalue("s3_endpoint")
    else:
        request.getfixturevalue("gcs_admin").create_bucket(bucket)
    store = open_store(f"{scheme}://{bucket}/datasets/code", endpoint=endpoint)

    index = prepare_dataset(corpus[0], store, shard_tokens=SHARD_TOKENS)

    assert store.list() == [INDEX_KEY, *(s.key for s in index.shards)]
    assert index.shards == DatasetIndex.load(dataset).shards
    remote = Loader(store, seq_len=SEQ_LEN, global_batch_size=8)
    with remote, _loader(dataset, tmp_path) as local:
        for step in (0, 1, 57):
            np.testing.assert_array_equal(remote.batch(step), local.batch(step))


def test_the_default_corpus_is_the_stdlib_source() -> None:
    corpus = default_corpus()
    files = dict(corpus.files())

    assert corpus.pattern == "*.py"
    assert "os.py" in files and "json/decoder.py" in files
    assert not any("site-packages" in rel or "__pycache__" in rel for rel in files)


# --- prepare errors -------------------------------------------------------------------------


def test_an_empty_source_is_refused(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    with pytest.raises(DataError) as exc:
        prepare_dataset(tmp_path / "src", (tmp_path / "ds").as_uri())
    _one_line_with_fix(exc, "no files match", "pass a directory that holds text files")


def test_a_source_without_text_is_refused(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.bin").write_bytes(b"\x00\xff")
    with pytest.raises(DataError) as exc:
        prepare_dataset(Corpus(tmp_path / "src"), (tmp_path / "ds").as_uri())
    _one_line_with_fix(exc, "none of the 1 files is UTF-8 text", "1 binary")
    assert not (tmp_path / "ds" / INDEX_KEY).exists()


def test_an_existing_dataset_is_not_replaced_without_overwrite(
    dataset: str, corpus: tuple[Path, list[str]]
) -> None:
    before = open_store(dataset).get_bytes(INDEX_KEY)
    with pytest.raises(DataError) as exc:
        prepare_dataset(corpus[0], dataset)
    _one_line_with_fix(exc, "a dataset is already here", "--overwrite")
    assert open_store(dataset).get_bytes(INDEX_KEY) == before


def test_a_missing_index_says_to_run_prepare(tmp_path: Path) -> None:
    url = (tmp_path / "nothing").as_uri()
    with pytest.raises(DataError) as exc:
        DatasetIndex.load(url)
    _one_line_with_fix(exc, f"{url}/index.json", f"mlstack data prepare SRC {url}")
    with pytest.raises(DataError):
        Loader(url, seq_len=SEQ_LEN, global_batch_size=8)


# --- loading --------------------------------------------------------------------------------


def test_rows_are_windows_of_the_token_stream(dataset: str, tmp_path: Path) -> None:
    tokens = _tokens(dataset).astype(np.int32)
    # Windows longer than a shard span three shards.
    for seq_len in (SEQ_LEN, 2500):
        with _loader(dataset, tmp_path, seq_len=seq_len, global_batch_size=4) as loader:
            assert loader.num_windows == (len(tokens) - 1) // seq_len
            for step in (0, 3):
                batch = loader.batch(step)
                assert batch.dtype == np.int32 and batch.shape == (4, seq_len + 1)
                for row, window in zip(batch, loader.global_windows(step), strict=True):
                    start = int(window) * seq_len
                    np.testing.assert_array_equal(row, tokens[start : start + seq_len + 1])


def test_batches_are_a_pure_function_of_seed_and_step(dataset: str, tmp_path: Path) -> None:
    with _loader(dataset, tmp_path) as one, _loader(dataset, tmp_path) as two:
        # Out of order, and across separate (fresh) caches.
        for step in (5, 0, 400, 5):
            np.testing.assert_array_equal(one.batch(step), two.batch(step))
    with _loader(dataset, tmp_path, seed=0) as a, _loader(dataset, tmp_path, seed=1) as b:
        assert not np.array_equal(a.batch(0), b.batch(0))


def test_every_window_once_per_epoch_in_a_new_order(dataset: str, tmp_path: Path) -> None:
    # 7 does not divide the number of windows, so batches straddle epochs.
    with _loader(dataset, tmp_path, global_batch_size=7) as loader:
        windows = loader.num_windows
        assert windows % 7
        steps = -(-3 * windows // 7)
        order = np.concatenate([loader.global_windows(step) for step in range(steps)])
    epochs = [order[e * windows : (e + 1) * windows] for e in range(3)]

    for epoch in epochs:
        np.testing.assert_array_equal(np.sort(epoch), np.arange(windows))
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[1], epochs[2])


@pytest.mark.parametrize("process_count", [2, 4])
def test_process_slices_make_up_the_global_batch(
    dataset: str, tmp_path: Path, process_count: int
) -> None:
    with _loader(dataset, tmp_path) as whole:
        loaders = [
            _loader(dataset, tmp_path, process_index=p, process_count=process_count)
            for p in range(process_count)
        ]
        for step in (0, 1, 250):
            parts = [loader.batch(step) for loader in loaders]
            assert all(part.shape == (8 // process_count, SEQ_LEN + 1) for part in parts)
            np.testing.assert_array_equal(np.concatenate(parts), whole.batch(step))
        for loader in loaders:
            loader.close()


def test_iterate_resumes_with_the_batches_of_the_uninterrupted_run(
    dataset: str, tmp_path: Path
) -> None:
    with _loader(dataset, tmp_path) as reference, _loader(dataset, tmp_path) as resumed:
        with resumed.iterate(17) as batches:
            got = [next(batches) for _ in range(5)]
        for offset, (step, batch) in enumerate(got):
            assert step == 17 + offset
            np.testing.assert_array_equal(batch, reference.batch(step))


def test_closing_the_loader_stops_its_prefetch_thread(dataset: str, tmp_path: Path) -> None:
    loader = _loader(dataset, tmp_path)
    batches = loader.iterate(0, prefetch=1)
    assert next(batches)[0] == 0

    loader.close()

    assert not batches._thread.is_alive()
    with pytest.raises(StopIteration):
        next(batches)


def test_an_error_in_the_prefetch_thread_reaches_the_caller(
    corpus: tuple[Path, list[str]], tmp_path: Path
) -> None:
    store = open_store((tmp_path / "ds").as_uri())
    index = prepare_dataset(corpus[0], store, shard_tokens=SHARD_TOKENS)
    for shard in index.shards:
        store.delete(shard.key)

    with _loader(store.base_url, tmp_path) as loader, loader.iterate(0) as batches:
        with pytest.raises(NotFound, match="shard-"):
            next(batches)
        assert not batches._thread.is_alive()


def test_the_cache_is_reused_and_a_corrupt_copy_fetched_again(
    corpus: tuple[Path, list[str]], tmp_path: Path
) -> None:
    store = RecordingStore(tmp_path / "ds")
    prepare_dataset(corpus[0], store, shard_tokens=SHARD_TOKENS)
    cache = tmp_path / "cache"

    def load() -> np.ndarray:
        store.calls.clear()
        with Loader(store, seq_len=SEQ_LEN, global_batch_size=8, cache_dir=cache) as loader:
            return loader.batch(3)

    first = load()
    fetched = {key for kind, key in store.calls if kind == "download"}
    assert fetched and len(list(cache.iterdir())) == len(fetched)

    assert np.array_equal(load(), first)
    assert store.calls == []

    victim = next(cache.iterdir())
    victim.write_bytes(b"\x00" * victim.stat().st_size)

    assert np.array_equal(load(), first)
    assert len(store.calls) == 1
    assert hashlib.sha256(victim.read_bytes()).hexdigest() == victim.stem


def test_a_shard_that_does_not_match_the_index_is_refused(
    corpus: tuple[Path, list[str]], tmp_path: Path
) -> None:
    store: Store = open_store((tmp_path / "ds").as_uri())
    index = prepare_dataset(corpus[0], store, shard_tokens=SHARD_TOKENS)
    for shard in index.shards:
        store.put_bytes(shard.key, b"\x01\x00" * shard.tokens)

    with _loader(store.base_url, tmp_path) as loader, pytest.raises(DataError) as exc:
        loader.batch(0)
    _one_line_with_fix(exc, "does not match the sha256", "--overwrite")


def test_a_batch_that_does_not_split_over_processes_is_refused(dataset: str) -> None:
    with pytest.raises(DataError) as exc:
        Loader(dataset, seq_len=SEQ_LEN, global_batch_size=6, process_count=4)
    _one_line_with_fix(exc, "global_batch_size=6", "a multiple of 4")


def test_a_dataset_smaller_than_one_batch_is_refused(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("x" * 100)
    url = (tmp_path / "ds").as_uri()
    prepare_dataset(tmp_path / "src", url)

    with pytest.raises(DataError) as exc:
        Loader(url, seq_len=16, global_batch_size=8)
    _one_line_with_fix(exc, "101 tokens make 6 windows", "lower seq_len or global_batch_size")
