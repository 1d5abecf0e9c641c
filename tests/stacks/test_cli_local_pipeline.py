"""`mlstack local pipeline`: its mistakes, each one line and the right exit code (2: bad
input, 1: a step failed), before or without any training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from mlstack.stacks.cli import app
from tests.workloads.pipeline.test_local_pipeline import NIGHTLY, ROOT
from tests.workloads.train.conftest import prepare_small_dataset

runner = CliRunner()


@pytest.fixture(scope="module")
def stack_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = yaml.safe_load((ROOT / "stacks/Pulumi.onprem-lab.yaml").read_text())
    data["config"]["mlstack:platform"]["workloads"]["pipelines"] = [NIGHTLY]
    path = tmp_path_factory.mktemp("stack") / "Pulumi.lab-pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def local_pipeline(stack: Path | str, *args: str) -> Result:
    return runner.invoke(app, ["local", "pipeline", str(stack), *args])


def _errors(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_an_unknown_stack_lists_the_shipped_ones(tmp_path: Path) -> None:
    result = local_pipeline("no-such-stack", "nightly", "--store", str(tmp_path))
    assert result.exit_code == 2
    assert "onprem-lab" in result.stderr
    assert len(_errors(result)) == 1


def test_an_unknown_pipeline_lists_the_declared_ones(stack_file: Path, tmp_path: Path) -> None:
    result = local_pipeline(stack_file, "weekly", "--store", str(tmp_path))
    assert result.exit_code == 2
    assert _errors(result) == [
        "error: the stack declares no pipeline 'weekly'; fix: use one of: language/nightly "
        "(platform.workloads.pipelines)"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--model", "huge"), "huge"),
        (("--processes", "3"), "-n 3 does not divide tiny's global batch of 8"),
        (("--run", "../escape"), "run id '../escape' is not a plain name"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(
    stack_file: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    store = tmp_path / "store"
    prepare_small_dataset((store / "datasets" / "email").as_uri())
    result = local_pipeline(stack_file, "nightly", "--store", str(store), *args)
    assert result.exit_code == 2, result.output
    errors = _errors(result)
    assert len(errors) == 1
    assert message in errors[0]
    assert not (store / "checkpoints").exists()


def test_a_missing_source_dataset_names_it(stack_file: Path, tmp_path: Path) -> None:
    result = local_pipeline(stack_file, "nightly", "--store", str(tmp_path / "store"))
    assert result.exit_code == 2
    (error,) = _errors(result)
    assert "no dataset at file://" in error
    assert "/datasets/email/index.json" in error


def test_a_corrupt_run_state_is_named_and_left_alone(stack_file: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    prepare_small_dataset((store / "datasets" / "email").as_uri())
    run = store / "checkpoints/language/pipelines/nightly/runs/broken"
    run.mkdir(parents=True)
    (run / "state.json").write_text("{oops")
    result = local_pipeline(stack_file, "nightly", "--store", str(store), "--run", "broken")
    assert result.exit_code == 2
    (error,) = _errors(result)
    assert f"{(run / 'state.json').as_uri()} is corrupt" in error
    assert (run / "state.json").read_text() == "{oops"


def test_a_failed_step_exits_1_naming_the_step_and_its_log(
    stack_file: Path, tmp_path: Path
) -> None:
    """A dataset whose index is not an index: the prepare step fails (after its retry)."""
    store = tmp_path / "store"
    (store / "datasets/email").mkdir(parents=True)
    (store / "datasets/email/index.json").write_text(json.dumps({"not": "an index"}))
    result = local_pipeline(stack_file, "nightly", "--store", str(store), "--run", "r1")
    assert result.exit_code == 1, result.output
    (error,) = _errors(result)
    log = store / "checkpoints/language/pipelines/nightly/runs/r1/steps/data/attempt-2.log"
    assert error.startswith("error: step data failed: ")
    assert f"(log: {log.as_uri()})" in error
    assert "--run r1 to resume" in error
    assert log.is_file()
    assert "data             prepare   failed" in result.stdout
