"""`mlstack pipeline run STACK PIPELINE`: a run started by hand as a Job from the runner CronJob,
through kubectl. kubectl here is a TEST DOUBLE: a script on PATH that records its argv (and
exits with a chosen code); no cluster is reached."""

from __future__ import annotations

import datetime
import json
import re
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from mlstack.stacks import cli
from mlstack.stacks.cli import app

runner = CliRunner()
STAMP = re.compile(r"^nightly-manual-\d{8}t\d{6}z$")


@pytest.fixture
def stack_file(tmp_path: Path, lab_config: dict[str, Any]) -> Path:
    lab_config["workloads"]["pipelines"] = [
        {
            "name": "nightly",
            "team": "language",
            "schedule": "0 2 * * *",
            "pool": "cpu",
            "steps": [{"name": "data", "kind": "prepare", "dataset": "pystdlib"}],
        }
    ]
    path = tmp_path / "Pulumi.lab-pipes.yaml"
    path.write_text(yaml.safe_dump({"config": {"mlstack:platform": lab_config}}))
    return path


def fake_kubectl(bin_dir: Path, exit_code: int = 0) -> Path:
    """A kubectl stand-in that appends its argv to argv.jsonl and exits with `exit_code`."""
    bin_dir.mkdir(exist_ok=True)
    record = bin_dir / "argv.jsonl"
    script = bin_dir / "kubectl"
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import json, sys\n"
        f"open({str(record)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"sys.exit({exit_code})\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return record


def calls(record: Path) -> list[list[str]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines()]


def test_run_creates_a_job_from_the_runner_cronjob_in_the_team_namespace(
    stack_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = fake_kubectl(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    result = runner.invoke(app, ["pipeline", "run", str(stack_file), "nightly", "--context", "lab"])
    assert result.exit_code == 0, result.output
    [argv] = calls(record)
    assert argv[:3] == ["create", "job", "--from=cronjob/pipeline-nightly"]
    assert STAMP.match(argv[3]), argv[3]
    assert argv[4:] == ["-n", "language", "--context", "lab"]
    assert f"started {argv[3]}; follow it: kubectl logs -f -n language job/{argv[3]}" in (
        result.stdout
    )


def test_dry_run_prints_the_command_and_runs_nothing(
    stack_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = fake_kubectl(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    result = runner.invoke(
        app, ["pipeline", "run", str(stack_file), "language/nightly", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    line = result.stdout.strip()
    assert line.startswith("kubectl create job --from=cronjob/pipeline-nightly nightly-manual-")
    assert line.endswith(" -n language")
    assert calls(record) == []


def test_without_kubectl_it_says_so_and_prints_the_command(
    stack_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = runner.invoke(app, ["pipeline", "run", str(stack_file), "nightly"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: kubectl is not on PATH; fix: install kubectl, then run: ")
    assert "kubectl create job --from=cronjob/pipeline-nightly nightly-manual-" in lines[0]


def test_a_failing_kubectl_is_exit_1_with_the_command(
    stack_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_kubectl(tmp_path / "bin", exit_code=1)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    result = runner.invoke(app, ["pipeline", "run", str(stack_file), "nightly"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: kubectl exited 1: kubectl create job")


def test_an_unknown_pipeline_is_one_line_with_the_choices(stack_file: Path) -> None:
    result = runner.invoke(app, ["pipeline", "run", str(stack_file), "weekly"])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "no pipeline 'weekly'" in line and "language/nightly" in line


def test_the_job_name_is_a_dns_label_even_for_a_long_pipeline_name(
    stack_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = yaml.safe_load(stack_file.read_text())
    config["config"]["mlstack:platform"]["workloads"]["pipelines"][0]["name"] = "n" * 40
    stack_file.write_text(yaml.safe_dump(config))
    now = datetime.datetime(2026, 12, 3, 17, 0, tzinfo=datetime.UTC)
    command = cli.manual_run_command(str(stack_file), "n" * 40, None, now)
    assert command[4].endswith("-manual-20261203t170000z")
    assert len(command[4]) <= 63
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", command[4])
