"""`mlstack local train`: progress lines from a real 2-process run, and one-line errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from mlstack.stacks.cli import app
from tests.workloads.train.conftest import prepare_small_dataset

runner = CliRunner()


def local_train(*args: str) -> Result:
    return runner.invoke(app, ["local", "train", *args])


def test_two_processes_train_checkpoint_and_export(tmp_path: Path) -> None:
    store = tmp_path / "store"
    prepare_small_dataset((store / "datasets" / "pystdlib").as_uri())
    result = local_train(
        "tiny", "-n", "2", "--steps", "6", "--log-every", "3", "--store", str(store)
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "training tiny (127,616 parameters) on 2 process(es), 2 device(s), to step 6"
    assert [line.split()[:2] for line in lines if line.startswith("step")] == [
        ["step", "3"],
        ["step", "6"],
    ]
    assert "checkpoint at step 6" in lines
    assert (store / "checkpoints/local/run/step_00000006/COMMIT").is_file()
    assert (store / "models/local/run/latest").is_file()
    # A second launch resumes at the end and has nothing left to do.
    again = local_train("tiny", "-n", "2", "--steps", "6", "--store", str(store))
    assert again.exit_code == 0, again.output
    assert "resuming from step 6" in again.stdout.splitlines()[0]


def test_unknown_config_is_one_line(tmp_path: Path) -> None:
    result = local_train("huge", "--store", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: unknown model config 'huge'; fix: use one of tiny, small, medium"
    )


def test_missing_workloads_extra_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "jax" else real(name, *a)
    )
    result = local_train("tiny", "--store", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: the workloads need jax, which this environment lacks; fix: pip install -e "
        "'.[workloads]' (or pip install 'mlstack[workloads]')"
    )
