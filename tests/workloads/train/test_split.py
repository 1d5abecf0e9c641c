"""workloads.train.data.split_dataset: a held-out test split, chosen by each document's content
hash, written as two ordinary datasets that the Loader reads."""

from __future__ import annotations

import hashlib
import random
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from tests_support import RecordingStore

from mlstack.workloads.storage import FileStore, PathLike, TransferSettings, open_store
from mlstack.workloads.train.configs import EOS_ID
from mlstack.workloads.train.data import (
    INDEX_KEY,
    DataError,
    DatasetIndex,
    Loader,
    decode,
    encode,
    in_test_split,
    index_sha256,
    prepare_dataset,
    split_dataset,
)

SHARD_TOKENS = 1000

pytestmark = pytest.mark.filterwarnings("ignore:You are using a Python version:FutureWarning")


def _write_docs(root: Path, count: int, low: int, high: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for i in range(count):
        text = "".join(rng.choice("abcdefgh ij\nklm()é") for _ in range(rng.randint(low, high)))
        (root / f"doc_{i:04d}.py").write_text(text, encoding="utf-8")
        docs.append(text)
    return docs


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str]]:
    """40 documents of up to 2,500 tokens in shards of 1,000: most documents span shards."""
    root = tmp_path_factory.mktemp("split-corpus")
    docs = _write_docs(root, 40, 50, 2500)
    url = (tmp_path_factory.mktemp("split-src") / "ds").as_uri()
    prepare_dataset(root, url, shard_tokens=SHARD_TOKENS)
    return url, docs


def _documents(url: str) -> list[str]:
    store = open_store(url)
    index = DatasetIndex.load(store)
    tokens = np.concatenate(
        [np.frombuffer(store.get_bytes(s.key), dtype="<u2") for s in index.shards]
    )
    assert tokens[-1] == EOS_ID
    ends = np.flatnonzero(tokens == EOS_ID)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [decode(tokens[a:b]) for a, b in zip(starts, ends, strict=True)]


def test_each_document_goes_to_one_split_by_its_content_hash(
    source: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, docs = source
    result = split_dataset(
        url, (tmp_path / "train").as_uri(), (tmp_path / "test").as_uri(), test_fraction=0.3, seed=7
    )

    expected_test = [d for d in docs if in_test_split(encode(d), 7, 0.3)]
    expected_train = [d for d in docs if not in_test_split(encode(d), 7, 0.3)]
    assert expected_test and expected_train
    # Whole documents (also those that spanned shards), in source order, none lost.
    assert _documents((tmp_path / "test").as_uri()) == expected_test
    assert _documents((tmp_path / "train").as_uri()) == expected_train
    assert (result.test_documents, result.train_documents) == (
        len(expected_test),
        len(expected_train),
    )
    source_tokens = DatasetIndex.load(url).total_tokens
    assert result.train_tokens + result.test_tokens == source_tokens
    assert result.test_index_sha256 == index_sha256((tmp_path / "test").as_uri())
    assert (
        result.train_index_sha256
        == hashlib.sha256((tmp_path / "train" / INDEX_KEY).read_bytes()).hexdigest()
    )


def test_the_same_source_and_seed_give_the_same_splits(
    source: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, _ = source

    def split(name: str, seed: int) -> tuple[str, str]:
        result = split_dataset(
            url,
            (tmp_path / name / "train").as_uri(),
            (tmp_path / name / "test").as_uri(),
            test_fraction=0.5,
            seed=seed,
        )
        return result.train_index_sha256, result.test_index_sha256

    first = split("a", 1)
    assert split("b", 1) == first
    assert split("c", 2) != first


def test_the_splits_are_datasets_the_loader_reads_and_the_index_comes_last(
    source: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, _ = source
    train, test = RecordingStore(tmp_path / "train"), RecordingStore(tmp_path / "test")
    split_dataset(url, train, test, test_fraction=0.25, seed=0)

    for store in (train, test):
        assert store.calls[-1] == ("put", INDEX_KEY)
        with Loader(store, seq_len=16, global_batch_size=2, cache_dir=tmp_path / "c") as loader:
            assert loader.batch(0).shape == (2, 17)
        index = DatasetIndex.load(store)
        assert index.source["from"] == open_store(url).base_url
        assert index.source["from_sha256"] == index_sha256(url)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 0.51, 1.0])
def test_a_fraction_outside_the_range_is_refused(
    source: tuple[str, list[str]], tmp_path: Path, fraction: float
) -> None:
    with pytest.raises(DataError) as exc:
        split_dataset(
            source[0], (tmp_path / "a").as_uri(), (tmp_path / "b").as_uri(), test_fraction=fraction
        )
    text = str(exc.value)
    assert "\n" not in text and "outside (0, 0.5]" in text and "fix:" in text
    assert not (tmp_path / "a").exists()


def test_a_split_smaller_than_one_window_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    root.mkdir()
    docs = _write_docs(root, 3, 20, 30)
    # A seed that sends no document (or all of them) to the test split.
    seed = next(s for s in range(1000) if not any(in_test_split(encode(d), s, 0.05) for d in docs))
    url = (tmp_path / "src").as_uri()
    prepare_dataset(root, url, shard_tokens=SHARD_TOKENS)

    with pytest.raises(DataError) as exc:
        split_dataset(
            url, (tmp_path / "a").as_uri(), (tmp_path / "b").as_uri(), test_fraction=0.05, seed=seed
        )
    text = str(exc.value)
    assert "\n" not in text and "the test split holds 0 tokens" in text, text
    assert "fewer than one window (65 tokens)" in text and "fix: split a larger dataset" in text
    assert not (tmp_path / "b" / INDEX_KEY).exists()


class _SendfileStore(FileStore):
    """A directory store whose copies hold no Python buffer (the real one copies in 8 MiB
    chunks, which would hide what the split itself holds)."""

    def download_file(self, key: str, local_path: PathLike) -> None:
        shutil.copyfile(self.root / key, local_path)

    def upload_file(self, local_path: PathLike, key: str) -> None:
        (self.root / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local_path, self.root / key)


def test_the_source_is_streamed_shard_by_shard(tmp_path: Path) -> None:
    """A 16 MiB source (8 Mi tokens in 128 shards) splits in under a quarter of its size
    of memory (1.6 MiB: a shard, two shard buffers, the checksum's 1 MiB read buffer)."""
    root = tmp_path / "corpus"
    root.mkdir()
    rng = random.Random(3)
    for i in range(512):
        (root / f"f{i:03d}.txt").write_bytes(rng.randbytes(8192).hex().encode())
    src = _SendfileStore(tmp_path / "src", TransferSettings())
    index = prepare_dataset(root, src, shard_tokens=1 << 16)
    assert index.num_bytes > 16_000_000
    train = _SendfileStore(tmp_path / "train", TransferSettings())
    test = _SendfileStore(tmp_path / "test", TransferSettings())

    tracemalloc.start()
    try:
        split_dataset(src, train, test, test_fraction=0.1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < index.num_bytes / 4, peak


def test_an_unshuffled_loader_reads_windows_in_order_and_cycles(
    source: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, _ = source
    with Loader(url, seq_len=16, global_batch_size=4, shuffle=False, cache_dir=tmp_path) as loader:
        n = loader.num_windows
        assert loader.global_windows(0).tolist() == [0, 1, 2, 3]
        last = (n - 1) // 4
        assert loader.global_windows(last + 1).tolist()[0] == (last + 1) * 4 % n
        tokens = np.concatenate([np.frombuffer(s, dtype="<u2") for s in _shard_bytes(url)]).astype(
            np.int32
        )
        np.testing.assert_array_equal(loader.batch(1)[0], tokens[4 * 16 : 5 * 16 + 1])


def _shard_bytes(url: str) -> list[bytes]:
    store = open_store(url)
    return [store.get_bytes(s.key) for s in DatasetIndex.load(store).shards]
