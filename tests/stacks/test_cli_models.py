"""`mlstack models list|show|promote|rollback`: what each prints, and its exit codes (2 for bad
input or a corrupt registry file, 1 for a promotion that lost a race, naming the winner)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from mlstack.stacks.cli import app
from mlstack.workloads.registry import Registry
from mlstack.workloads.storage import open_store

runner = CliRunner()


def models(*args: str) -> Result:
    return runner.invoke(app, ["models", *args])


def _error(result: Result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A models prefix with model `lm`: v1..v3 with test evals, v2 with lineage."""
    monkeypatch.setenv("MLSTACK_ACTOR", "ana")
    store = open_store((tmp_path / "models" / "lm").as_uri())
    for i, name in enumerate(("v1", "v2", "v3")):
        manifest = {"created": f"2026-01-0{i + 1}T00:00:00Z", "training": {"step": 10 * (i + 1)}}
        store.put_bytes(f"versions/{name}/bundle.json", json.dumps(manifest).encode())
        evals = {"split": "test", "loss": 3.0 - i / 2, "perplexity": 20.0 - i}
        store.put_bytes(f"versions/{name}/evals/test.json", json.dumps(evals).encode())
    lineage = {"dataset": "file:///data/train", "parent_version": "v1"}
    store.put_bytes("versions/v2/lineage.json", json.dumps(lineage).encode())
    return tmp_path / "models"


def test_promote_then_list_models_and_versions(root: Path) -> None:
    promoted = models("promote", str(root), "lm", "v2", "--alias", "champion", "--expect", "none")
    assert promoted.exit_code == 0, promoted.output
    assert promoted.stdout == "champion -> v2 (revision 1, by ana)\n"

    listed = models("list", str(root))
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.split("\n")[1].split() == ["lm", "3", "champion=v2"]

    versions = models("list", root.as_uri(), "lm")
    assert versions.exit_code == 0, versions.output
    rows = [line.split() for line in versions.stdout.splitlines()]
    assert rows[0] == ["VERSION", "CREATED", "STEP", "METRICS", "ALIASES"]
    assert rows[2] == [
        "v2",
        "2026-01-02T00:00:00Z",
        "20",
        "test.loss=2.5",
        "test.perplexity=19",
        "champion",
    ]
    assert rows[3][-1] == "-"
    last = models("list", str(root), "lm", "--last", "1")
    assert [line.split()[0] for line in last.stdout.splitlines()] == ["VERSION", "v3"]


def test_show_has_lineage_evals_aliases_and_the_log(root: Path) -> None:
    models("promote", str(root), "lm", "v1", "--alias", "champion", "--reason", "first")
    models("promote", str(root), "lm", "v2", "--alias", "champion", "--expect", "v1")

    shown = models("show", str(root), "lm")

    assert shown.exit_code == 0, shown.output
    text = shown.stdout
    assert re.search(r"^  champion -> v2 \(revision 2, by ana at \S+\)$", text, re.M), text
    assert "version v2 (champion): created 2026-01-02T00:00:00Z, step 20" in text
    assert '    dataset: "file:///data/train"' in text
    assert "  evals: test.loss=2.5 test.perplexity=19" in text
    assert re.search(r"promote champion: \(none\) -> v1 by ana, won: first$", text, re.M), text
    assert re.search(r"promote champion: v1 -> v2 by ana, won$", text, re.M), text
    v3 = models("show", str(root), "lm", "--version", "v3")
    assert "version v3: created 2026-01-03T00:00:00Z, step 30\n  lineage: (none)" in v3.stdout


def test_a_promotion_that_lost_the_race_exits_1_naming_the_winner(root: Path) -> None:
    Registry(open_store((root / "lm").as_uri())).move_alias("champion", "v2", by="bo")

    lost = models("promote", str(root), "lm", "v3", "--alias", "champion", "--expect", "v1")

    assert lost.exit_code == 1
    assert re.fullmatch(
        r"error: moving champion to v3 lost the race: champion now names v2 "
        r"\(moved by bo at \S+Z\)",
        _error(lost),
    )
    log = Registry(open_store((root / "lm").as_uri())).log()
    assert [(p.by, p.to_version, p.outcome) for p in log] == [
        ("bo", "v2", "won"),
        ("ana", "v3", "lost"),
    ]


def test_rollback_moves_the_alias_back(root: Path) -> None:
    models("promote", str(root), "lm", "v1", "--alias", "canary")
    models("promote", str(root), "lm", "v3", "--alias", "canary")

    back = models("rollback", str(root), "lm", "--alias", "canary", "--reason", "errors")

    assert back.exit_code == 0, back.output
    assert back.stdout == "canary -> v1 (rolled back; revision 3, by ana)\n"
    again = models("rollback", str(root), "lm", "--alias", "champion")
    assert again.exit_code == 2
    assert "champion.json does not exist: nothing to roll back; fix: " in _error(again)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("list", "{root}", "nope"), "no model 'nope' under file://{root} "),
        (("show", "{root}", "../etc"), "model '../etc' is not a directory name under "),
        (("promote", "{root}", "lm", "v9", "--alias", "champion"), "no version 'v9' in "),
        (("promote", "{root}", "lm", "v1", "--alias", "Prod"), "alias name 'Prod' is invalid"),
        (("list", "ftp://host/x"), "unsupported scheme 'ftp'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(root: Path, args: tuple[str, ...], expected: str) -> None:
    result = models(*(arg.format(root=root) for arg in args))

    assert result.exit_code == 2
    assert expected.format(root=root) in _error(result)


def test_a_corrupt_alias_is_named_exit_2_and_left_as_it_is(root: Path) -> None:
    alias = root / "lm" / "aliases" / "champion.json"
    alias.parent.mkdir(parents=True)
    alias.write_bytes(b"{broken")

    promote = ("promote", str(root), "lm", "v2", "--alias", "champion")
    for args in (("list", str(root), "lm"), promote):
        result = models(*args)
        assert result.exit_code == 2
        line = _error(result)
        assert f"{alias.as_uri()} is not a valid alias" in line
        assert "fix: restore it from the last won move of champion" in line
    assert alias.read_bytes() == b"{broken"


def test_an_empty_prefix_lists_no_models(tmp_path: Path) -> None:
    result = models("list", str(tmp_path))

    assert result.exit_code == 0, result.output
    assert result.stdout == f"no models under {tmp_path.as_uri()}\n"
