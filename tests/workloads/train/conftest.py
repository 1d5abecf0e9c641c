"""A small real dataset for the training tests: the `email` package of the standard library,
prepared into a store the way `mlstack data prepare` does (about 0.9 M tokens, 64 shards)."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

from mlstack.workloads.train.data import Corpus, prepare_dataset

CORPUS = Corpus(Path(sysconfig.get_paths()["stdlib"]) / "email", "*.py", "stdlib-email")
SHARD_TOKENS = 1 << 14


def prepare_small_dataset(url: str) -> str:
    """Prepare CORPUS at `url`; returns the URL."""
    prepare_dataset(CORPUS, url, shard_tokens=SHARD_TOKENS)
    return url


@pytest.fixture(scope="session")
def dataset_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return prepare_small_dataset(tmp_path_factory.mktemp("dataset").as_uri())
