"""User mistakes on the command line are one `error:` line and exit 2, found before any work:
never "internal error ... report it", a traceback, or a failure after minutes of training."""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import mlstack.workloads.local as local_module
import mlstack.workloads.serve.server as server_module
from mlstack.stacks.cli import app
from tests.workloads.train.conftest import prepare_small_dataset

runner = CliRunner()
MLSTACK = Path(sys.executable).parent / "mlstack"
#: Seconds a refused command may take: the old code trained for a while before failing.
REFUSAL_TIMEOUT_S = 120


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


def _not_a_directory(tmp_path: Path) -> Path:
    """A parent that is a regular file: unwritable for every user, root included."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    return blocker


@pytest.mark.parametrize(
    "command",
    [
        ["plan", "onprem-lab", "--json"],
        ["render", "onprem-lab", "-o"],
        ["check", "onprem-lab", "--json"],
    ],
)
@pytest.mark.parametrize("where", ["under-a-file", "a-directory"])
def test_an_unwritable_output_file_is_one_line_and_exit_2(
    tmp_path: Path, command: list[str], where: str
) -> None:
    target = _not_a_directory(tmp_path) / "out" if where == "under-a-file" else tmp_path
    result = runner.invoke(app, [*command, str(target)])
    assert result.exit_code == 2, result.output
    line = _one_error_line(result.stderr)
    assert str(target) in line and "fix:" in line
    # Refused before planning: no table, no partial output.
    assert result.stdout == ""


def test_check_prints_its_table_when_the_json_file_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "report.json"
    real = Path.write_text

    def full_disk(self: Path, *args: Any, **kwargs: Any) -> int:
        if self == target:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    result = runner.invoke(app, ["check", "onprem-lab", "--json", str(target)])
    # 2, not 1: exit 1 means a policy violation to CI.
    assert result.exit_code == 2, result.output
    assert "onprem-lab" in result.stdout
    line = _one_error_line(result.stderr)
    assert "No space left on device" in line and str(target) in line


def test_data_prepare_into_an_unwritable_destination(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("print(1)\n")
    dest = _not_a_directory(tmp_path) / "dataset"
    result = runner.invoke(app, ["data", "prepare", str(src), str(dest)])
    assert result.exit_code == 2, result.output
    assert "internal error" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "cannot write" in error[0] and "fix:" in error[0], result.stderr


def test_a_huge_shard_size_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("print(1)\n")
    result = runner.invoke(
        app,
        ["data", "prepare", str(src), str(tmp_path / "ds"), "--shard-tokens", str(10**14)],
    )
    assert result.exit_code == 2, result.output
    assert "shard_tokens=100000000000000 is over 1,073,741,824" in _one_error_line(result.stderr)


def test_a_malformed_s3_endpoint_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSTACK_S3_ENDPOINT", "minio:9000")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("print(1)\n")
    result = runner.invoke(app, ["data", "prepare", str(src), "s3://bucket/ds"])
    assert result.exit_code == 2, result.output
    line = _one_error_line(result.stderr)
    assert "'minio:9000' ($MLSTACK_S3_ENDPOINT)" in line and "http(s)://host[:port]" in line


def _mlstack(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed command; `timeout` kills it, so a regression cannot hang the suite."""
    return subprocess.run(
        [str(MLSTACK), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=REFUSAL_TIMEOUT_S,
    )


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A store with the small dataset, so that the old code got as far as training quickly."""
    path = tmp_path / "store"
    prepare_small_dataset((path / "datasets" / "pystdlib").as_uri())
    return path


def test_a_run_name_that_leaves_the_store_is_refused(store: Path) -> None:
    proc = _mlstack("local", "train", "--run", "../../..", "--steps", "1", "--store", str(store))
    assert proc.returncode == 2, proc.stderr
    assert "--run '../../..' is not a plain name" in _one_error_line(proc.stderr)
    assert sorted(p.name for p in store.parent.iterdir()) == ["store"]


def test_a_process_count_that_does_not_divide_the_batch_says_which_work(store: Path) -> None:
    proc = _mlstack("local", "train", "-n", "3", "--steps", "1", "--store", str(store))
    assert proc.returncode == 2, proc.stderr
    assert _one_error_line(proc.stderr) == (
        "error: -n 3 does not divide tiny's global batch of 8 (one device per local process); "
        "fix: use -n 1, 2, 4, 8"
    )


def test_local_up_refuses_a_port_in_use_before_training(store: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _mlstack(
            "local", "up", "--once", "--port", str(port), "--steps", "1", "--store", str(store)
        )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"--port {port} on 127.0.0.1 cannot be used" in _one_error_line(proc.stderr)
    assert "== training" not in proc.stdout


def test_local_up_refuses_a_request_that_cannot_fit_before_training(store: Path) -> None:
    proc = _mlstack(
        "local", "up", "--once", "--max-tokens", "100", "--steps", "1", "--store", str(store)
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert _one_error_line(proc.stderr) == (
        "error: --prompt is 9 tokens and --max-tokens 100: together at most 64 (tiny's context) "
        "fit, with at least one prompt token; fix: shorten the prompt or lower --max-tokens"
    )
    assert "== training" not in proc.stdout


class _FakeServer:
    """Records the options `local up` serves with, and stops it before any model loads."""

    options: list[server_module.ServeOptions] = []

    def __init__(self, options: server_module.ServeOptions, **_: Any) -> None:
        self.options.append(options)

    def wait_ready(self, timeout_s: float) -> None:
        raise RuntimeError("stopped by the test")

    def stop(self) -> None:
        pass


def _serve_options(store: str, monkeypatch: pytest.MonkeyPatch) -> server_module.ServeOptions:
    """The options `local up --store STORE` starts its server with. Only the wiring: no
    dataset, training or server (the stores themselves are tested in test_storage.py)."""
    monkeypatch.setattr(local_module, "ensure_dataset", lambda run, say: None)
    monkeypatch.setattr(local_module, "Launch", lambda *args, **kwargs: None)
    monkeypatch.setattr(
        local_module, "run_until_done", lambda launch: local_module.LaunchResult([0])
    )
    monkeypatch.setattr(server_module, "ServerProcess", _FakeServer)
    _FakeServer.options.clear()
    result = runner.invoke(app, ["local", "up", "--once", "--store", store])
    assert result.exit_code == 1 and "stopped by the test" in result.stderr, result.output
    [options] = _FakeServer.options
    return options


def test_local_up_with_an_s3_store_makes_no_local_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert _serve_options("s3://bucket/mlstack", monkeypatch).compile_cache_dir is None
    assert list(tmp_path.iterdir()) == []


def test_local_up_keeps_the_compile_cache_in_a_local_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "my store"
    options = _serve_options(str(store), monkeypatch)
    assert options.compile_cache_dir == str(store / "xla-cache")
