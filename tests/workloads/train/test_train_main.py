"""`python -m mlstack.workloads.train.main`: bad input is one `error:` line and exit 2, before any
device is touched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlstack.workloads.train.main import build_config, main, parse_args

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--config", "huge"], {}, "unknown model config 'huge'; fix: use one of tiny, small"),
        (["--steps", "0"], {}, "--steps 0 must be at least 1"),
        (["--export-every", "-1"], {}, "--export-every -1 is negative"),
        (["--non-finite-patience", "-1"], {}, "--non-finite-patience -1 is negative"),
        ([], {}, "no --data given and $MLSTACK_DATA_URL is not set; fix: set one of them"),
        (
            ["--data", "file:///d"],
            {},
            "no --checkpoint-url given and $MLSTACK_CHECKPOINT_URL is not set",
        ),
        (
            ["--data", "file:///d", "--checkpoint-url", "file:///c"],
            {"MLSTACK_NUM_PROCESSES": "2"},
            "MLSTACK_COORDINATOR_ADDRESS=None must be host:port",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str],
    env: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("MLSTACK_DATA_URL", "MLSTACK_CHECKPOINT_URL", "MLSTACK_NUM_PROCESSES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert message in err
    assert err.count("\n") == 1


def _error_lines(tmp_path: Path, *args: str, **env: str) -> list[str]:
    """Run the entry point as a process with `args` and a checkpoint URL and workdir under
    `tmp_path`; it must exit 2 without a traceback. Its `error:` lines."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlstack.workloads.train.main",
            *args,
            *("--checkpoint-url", (tmp_path / "c").as_uri(), "--workdir", str(tmp_path / "w")),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin", **env},
        check=False,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    return [line for line in proc.stderr.splitlines() if line.startswith("error: ")]


def test_a_store_url_with_a_bad_scheme_ends_in_one_line(tmp_path: Path) -> None:
    assert _error_lines(tmp_path, "--data", "ftp://host/data") == [
        "error: store URL 'ftp://host/data' has unsupported scheme 'ftp': use one of file://, "
        "gs://, s3://"
    ]


def test_a_batch_that_does_not_split_over_the_devices_is_one_line(
    tmp_path: Path, dataset_url: str
) -> None:
    errors = _error_lines(
        tmp_path,
        *("--data", dataset_url, "--global-batch-size", "3"),
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    assert errors == [
        "error: global batch 3 does not split over the run's 2 devices; fix: use a multiple of 2"
    ]


def test_overrides_reach_the_config() -> None:
    cfg = build_config(
        parse_args(["--config", "small", "--global-batch-size", "8", "--dtype", "float32"])
    )
    assert (cfg.name, cfg.global_batch_size, cfg.model.dtype) == ("small", 8, "float32")


def test_the_learning_rate_flag_reaches_the_config() -> None:
    """Pipeline candidates differ in learning rate (a train step's `learning_rate`)."""
    assert build_config(parse_args(["--learning-rate", "0.002"])).learning_rate == 0.002
    with pytest.raises(ValueError, match=r"--learning-rate -1\.0 must be positive"):
        build_config(parse_args(["--learning-rate", "-1"]))


def test_a_run_without_workdir_leaves_nothing_in_the_temp_directory(
    tmp_path: Path, dataset_url: str
) -> None:
    """The scratch the entry point makes for itself (staging, the data cache) goes when the run
    ends; a direct `python -m mlstack.workloads.train.main` used to leave it in TMPDIR."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    argv = [sys.executable, "-m", "mlstack.workloads.train.main", "--config", "tiny"]
    argv += ["--steps", "2", "--data", dataset_url, "--no-export", "--log-every", "1"]
    argv += ["--checkpoint-url", (tmp_path / "ckpt").as_uri()]
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TMPDIR": str(scratch), "JAX_PLATFORMS": "cpu"},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(scratch.iterdir()) == []
