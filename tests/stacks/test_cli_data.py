"""`mlstack data prepare`: the summary line, local paths and URLs, and one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner, Result

from mlstack.stacks.cli import app

runner = CliRunner()


def prepare(*args: str) -> Result:
    return runner.invoke(app, ["data", "prepare", *args])


def _error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def _source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "a.py").write_text("print('a')\n" * 50)
    (src / "pkg" / "b.md").write_text("# b\n" * 40)
    (src / "logo.png").write_bytes(b"\x89PNG\x00\x00")
    return src


def test_prepare_a_directory_into_a_local_path(tmp_path: Path) -> None:
    result = prepare(str(_source(tmp_path)), str(tmp_path / "ds"), "--shard-tokens", "256")

    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "ds" / "index.json").read_text())
    # 550 + 160 bytes and an EOS after each of the two documents.
    assert index["total_tokens"] == 712
    assert [s["tokens"] for s in index["shards"]] == [256, 256, 200]
    summary = f"prepared {(tmp_path / 'ds').as_uri()}: 3 shards, 712 tokens, 2 documents, "
    assert re.fullmatch(
        re.escape(summary) + r"1,424 bytes in \d+\.\d s \(skipped 1 binary\)\n", result.stdout
    ), result.stdout


def test_prepare_stdlib_and_a_pattern(tmp_path: Path) -> None:
    result = prepare("stdlib", (tmp_path / "ds").as_uri())

    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "ds" / "index.json").read_text())
    assert index["source"]["pattern"] == "*.py"
    assert index["documents"] > 500 and index["total_tokens"] > 10_000_000

    result = prepare(str(_source(tmp_path)), str(tmp_path / "md"), "--pattern", "*.md")
    assert result.exit_code == 0, result.output
    assert "1 documents" in result.stdout


def test_an_existing_dataset_needs_overwrite(tmp_path: Path) -> None:
    src = _source(tmp_path)
    assert prepare(str(src), str(tmp_path / "ds")).exit_code == 0

    result = prepare(str(src), str(tmp_path / "ds"))

    assert result.exit_code == 2
    assert _error_lines(result) == [
        f"error: {(tmp_path / 'ds').as_uri()}/index.json: a dataset is already here; "
        "fix: pass --overwrite (overwrite=True) to replace it, or choose another URL"
    ]
    assert prepare(str(src), str(tmp_path / "ds"), "--overwrite").exit_code == 0


def test_bad_input_is_one_error_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    src, dest = str(_source(tmp_path)), str(tmp_path / "ds")
    cases = [
        ("no files match", [str(tmp_path / "empty"), dest]),
        ("source is not a directory", [str(tmp_path / "missing"), dest]),
        ("unsupported scheme 'ftp'", [src, "ftp://host/ds"]),
        ("shard_tokens=0 is not positive", [src, dest, "--shard-tokens", "0"]),
    ]
    for needle, args in cases:
        result = prepare(*args)
        lines = _error_lines(result)
        assert result.exit_code == 2, (needle, result.output)
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert not (tmp_path / "ds").exists()
