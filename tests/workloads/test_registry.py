"""workloads.registry against a directory, moto's S3 server and the GCS emulator (with the
conftest's precondition test doubles): versions, aliases moved by compare-and-swap, races
between promoters, the promotion log, rollback and corrupt objects."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlstack.workloads.registry import (
    MISSING,
    Alias,
    AliasRaced,
    Registry,
    RegistryError,
    list_models,
    version_counts,
)
from mlstack.workloads.storage import Store, open_store

pytestmark = pytest.mark.filterwarnings(
    # google.api_core warns on import about the end of Python 3.11 support (2027).
    "ignore:You are using a Python version:FutureWarning"
)


def add_version(
    store: Store, name: str, *, step: int = 100, evals: dict[str, float] | None = None
) -> None:
    """An exported version as `train.export` writes its manifest (no params: not read here)."""
    manifest = {
        "format": "mlstack-serving-bundle",
        "version": name,
        "created": f"2026-01-01T00:00:{step % 60:02d}Z",
        "training": {"step": step},
    }
    store.put_bytes(f"versions/{name}/bundle.json", json.dumps(manifest).encode())
    if evals is not None:
        doc = {"split": "test", **evals}
        store.put_bytes(f"versions/{name}/evals/test.json", json.dumps(doc).encode())


@pytest.fixture(params=("file", "s3", "gs"))
def model_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh model URL (`<bucket>/models/team-a/lm`) on each backend."""
    if request.param == "file":
        return (tmp_path / "models" / "team-a" / "lm").as_uri()
    bucket = f"mlstack-{uuid.uuid4().hex[:16]}"
    if request.param == "s3":
        request.getfixturevalue("s3_admin").create_bucket(Bucket=bucket)
        endpoint = request.getfixturevalue("s3_endpoint")
        request.getfixturevalue("monkeypatch").setenv("MLSTACK_S3_ENDPOINT", endpoint)
        return f"s3://{bucket}/models/team-a/lm"
    request.getfixturevalue("gcs_admin").create_bucket(bucket)
    return f"gs://{bucket}/models/team-a/lm"


@pytest.fixture
def store(model_url: str) -> Store:
    store = open_store(model_url)
    for i, name in enumerate(("v1", "v2", "v3")):
        add_version(store, name, step=10 * (i + 1), evals={"loss": 3.0 - i, "perplexity": 20.0})
    return store


def test_versions_show_manifest_facts_evals_and_aliases(store: Store) -> None:
    registry = Registry(store)
    registry.move_alias("champion", "v2", expect=None, by="ana")
    registry.move_alias("canary", "v2", by="ana")

    versions = registry.versions()

    assert [v.name for v in versions] == ["v1", "v2", "v3"]
    v2 = versions[1]
    assert (v2.created, v2.step, v2.aliases) == ("2026-01-01T00:00:20Z", 20, ("canary", "champion"))
    assert v2.metrics() == {"test.loss": 2.0, "test.perplexity": 20.0}
    assert registry.version_names() == ["v1", "v2", "v3"]
    assert [v.name for v in registry.versions(last=2)] == ["v2", "v3"]
    assert registry.version("v2").lineage is None


def test_version_reads_lineage(store: Store) -> None:
    lineage = {"dataset": "file:///d", "dataset_sha256": "ab", "parent_version": "v1"}
    store.put_bytes("versions/v2/lineage.json", json.dumps(lineage).encode())

    assert Registry(store).version("v2").lineage == lineage


def test_an_alias_moves_only_from_the_version_expected(store: Store) -> None:
    registry = Registry(store)
    first = registry.move_alias("champion", "v1", expect=None, by="ana", reason="first")

    assert (first.version, first.revision, first.by) == ("v1", 1, "ana")
    with pytest.raises(AliasRaced, match="champion now names v1 \\(moved by ana at ") as lost:
        registry.move_alias("champion", "v2", expect=None, by="bo")
    assert lost.value.winner == first
    with pytest.raises(AliasRaced, match="champion now names v1"):
        registry.move_alias("champion", "v2", expect="v3", by="bo")

    second = registry.move_alias("champion", "v2", expect="v1", by="bo", reason="better")
    assert registry.alias("champion") == second
    assert second.revision == 2
    assert [(p.from_version, p.to_version, p.by, p.outcome) for p in registry.log()] == [
        (None, "v1", "ana", "won"),
        ("v1", "v2", "bo", "lost"),
        ("v1", "v2", "bo", "lost"),
        ("v1", "v2", "bo", "won"),
    ]
    assert registry.log()[1].winner == {"version": "v1", "by": "ana", "updated": first.updated}


def _promote_racing(model_url: str, promoters: dict[str, str]) -> dict[str, Alias | AliasRaced]:
    """Each promoter (by -> version) moves champion from v1 with its own store, all after every
    one of them has read the alias (v1): the swaps themselves race."""
    read_all = threading.Barrier(len(promoters))
    results: dict[str, Alias | AliasRaced] = {}

    def promote(by: str, version: str) -> None:
        store = open_store(model_url)
        read = store.get_with_token
        reads: list[str] = []

        def read_then_wait(key: str) -> tuple[bytes, str]:
            got = read(key)
            if not reads:  # the move's first read of the alias: then all swap at once
                reads.append(key)
                read_all.wait(timeout=30)
            return got

        store.get_with_token = read_then_wait  # type: ignore[method-assign]
        try:
            results[by] = Registry(store).move_alias("champion", version, expect="v1", by=by)
        except AliasRaced as err:
            results[by] = err

    threads = [threading.Thread(target=promote, args=item) for item in promoters.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == len(promoters), "a promoter did not finish"
    return results


def test_two_promoters_with_the_same_expectation_one_wins(store: Store, model_url: str) -> None:
    Registry(store).move_alias("champion", "v1", expect=None, by="seed")

    results = _promote_racing(model_url, {"ana": "v2", "bo": "v3"})

    won = {by: got for by, got in results.items() if isinstance(got, Alias)}
    lost = {by: got for by, got in results.items() if isinstance(got, AliasRaced)}
    assert len(won) == 1
    assert len(lost) == 1
    (winner_by, winner), (loser_by, raced) = next(iter(won.items())), next(iter(lost.items()))
    assert raced.winner == winner
    assert f"champion now names {winner.version} (moved by {winner_by} at" in str(raced)
    registry = Registry(open_store(model_url))
    assert registry.alias("champion") == winner
    attempts = {(p.by, p.to_version, p.outcome) for p in registry.log()[1:]}
    assert attempts == {
        (winner_by, winner.version, "won"),
        (loser_by, raced.wanted, "lost"),
    }
    assert [p.winner for p in registry.log() if p.outcome == "lost"] == [
        {"version": winner.version, "by": winner_by, "updated": winner.updated}
    ]


_PROMOTER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mlstack.workloads.registry import AliasRaced, Registry
    from mlstack.workloads.storage import open_store

    url, by, version, gate = sys.argv[1:5]
    store = open_store(url)
    read = store.get_with_token

    def read_then_wait(key):
        got = read(key)
        if not Path(gate, by).exists():  # the first read of the alias: then both swap at once
            Path(gate, by).touch()
            deadline = time.monotonic() + 30
            while len(list(Path(gate).iterdir())) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
        return got

    store.get_with_token = read_then_wait
    try:
        Registry(store).move_alias("champion", version, expect="v1", by=by)
    except AliasRaced as err:
        print(f"lost: {err}")
        sys.exit(3)
    print("won")
    """
)


def test_two_processes_race_on_a_directory(tmp_path: Path) -> None:
    url = (tmp_path / "lm").as_uri()
    store = open_store(url)
    for name in ("v1", "v2", "v3"):
        add_version(store, name)
    Registry(store).move_alias("champion", "v1", expect=None, by="seed")
    gate = tmp_path / "gate"
    gate.mkdir()
    procs = {
        by: subprocess.Popen(
            [sys.executable, "-c", _PROMOTER, url, by, version, str(gate)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for by, version in (("ana", "v2"), ("bo", "v3"))
    }
    try:
        outputs = {by: proc.communicate(timeout=60) for by, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait(timeout=10)

    codes = sorted(proc.returncode for proc in procs.values())
    assert codes == [0, 3], outputs
    winner = next(by for by, proc in procs.items() if proc.returncode == 0)
    loser = next(by for by, proc in procs.items() if proc.returncode == 3)
    champion = Registry(store).alias("champion")
    assert champion is not None
    assert champion.by == winner
    assert f"champion now names {champion.version} (moved by {winner} at" in outputs[loser][0]
    assert sorted((p.by, p.outcome) for p in Registry(store).log()[1:]) == sorted(
        [(winner, "won"), (loser, "lost")]
    )


def test_a_move_with_no_expectation_retries_a_lost_swap(store: Store, model_url: str) -> None:
    registry = Registry(store)
    registry.move_alias("champion", "v1", by="seed")
    swap = store.put_if_match
    calls: list[str] = []

    def someone_else_first(key: str, data: bytes, token: str) -> str:
        if not calls:
            calls.append(key)
            Registry(open_store(model_url)).move_alias("champion", "v2", by="other")
        return swap(key, data, token)

    store.put_if_match = someone_else_first  # type: ignore[method-assign]
    moved = registry.move_alias("champion", "v3", expect=MISSING, by="me")

    assert (moved.version, moved.revision) == ("v3", 3)
    assert [(p.from_version, p.to_version, p.by) for p in registry.log()] == [
        (None, "v1", "seed"),
        ("v1", "v2", "other"),
        ("v2", "v3", "me"),
    ]


def test_rollback_returns_to_the_version_before_the_last_move(store: Store) -> None:
    registry = Registry(store)
    with pytest.raises(RegistryError, match="does not exist: nothing to roll back"):
        registry.rollback("canary")
    registry.move_alias("canary", "v1", expect=None, by="ana")
    with pytest.raises(RegistryError, match="no version before v1"):
        registry.rollback("canary")
    registry.move_alias("canary", "v2", expect="v1", by="ana")
    registry.move_alias("canary", "v3", expect="v2", by="ana")

    back = registry.rollback("canary", by="oncall", reason="errors up")

    assert back.version == "v2"
    last = registry.log()[-1]
    assert (last.action, last.from_version, last.to_version, last.by, last.reason) == (
        "rollback",
        "v3",
        "v2",
        "oncall",
        "errors up",
    )
    # The last won move is now the rollback itself: rolling back again undoes it.
    assert registry.rollback("canary").version == "v3"


def test_a_move_to_a_missing_version_or_a_bad_alias_name_is_refused(store: Store) -> None:
    registry = Registry(store)

    with pytest.raises(RegistryError, match=r"no version 'v9' in .*/lm .*the newest: v1, v2, v3"):
        registry.move_alias("champion", "v9")
    with pytest.raises(RegistryError, match="alias name 'Champion!' is invalid"):
        registry.move_alias("Champion!", "v1")
    assert store.list("aliases/") == []
    assert store.list("promotions/") == []


@pytest.mark.parametrize(
    ("key", "data", "read"),
    [
        ("aliases/champion.json", b"{not json", lambda r: r.alias("champion")),
        ("aliases/champion.json", b'{"alias": "champion"}', lambda r: r.versions()),
        ("versions/v2/evals/test.json", b"[1, 2]", lambda r: r.versions()),
        ("versions/v2/lineage.json", b"\xff\xfe", lambda r: r.version("v2")),
        ("versions/v2/bundle.json", b"", lambda r: r.versions()),
        ("promotions/20260101T000000.000000Z-0000.json", b"{}", lambda r: r.log()),
    ],
)
def test_a_corrupt_object_is_named_and_left_untouched(
    store: Store, key: str, data: bytes, read: Callable[[Registry], Any]
) -> None:
    store.put_bytes(key, data)
    registry = Registry(store)

    with pytest.raises(RegistryError, match=r"is not a valid .*it is left as it is; fix: ") as err:
        read(registry)

    assert store.url(key) in str(err.value)
    assert store.get_bytes(key) == data


def test_a_move_onto_a_corrupt_alias_is_refused(store: Store) -> None:
    store.put_bytes("aliases/champion.json", b"garbage")
    registry = Registry(store)

    with pytest.raises(RegistryError, match=r"aliases/champion\.json is not a valid alias"):
        registry.move_alias("champion", "v2")
    with pytest.raises(RegistryError, match=r"aliases/champion\.json is not a valid alias"):
        registry.rollback("champion")

    assert store.get_bytes("aliases/champion.json") == b"garbage"
    assert store.list("promotions/") == []


def test_list_models_finds_every_model_directory(tmp_path: Path) -> None:
    root = open_store(tmp_path.as_uri())
    add_version(open_store((tmp_path / "lm-a").as_uri()), "v1")
    add_version(open_store((tmp_path / "group" / "lm-b").as_uri()), "v1")
    root.put_bytes("lm-c/aliases/champion.json", b"{}")
    root.put_bytes("not-a-model/versions/readme.txt", b"")
    root.put_bytes("versions/v1/bundle.json", b"{}")  # the root itself is no named model

    assert list_models(tmp_path.as_uri()) == ["group/lm-b", "lm-a", "lm-c"]
    assert version_counts(tmp_path.as_uri()) == {"group/lm-b": 1, "lm-a": 1, "lm-c": 0}
