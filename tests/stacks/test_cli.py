"""The `mlstack` command line, as a user runs it: exit codes, one-line errors, files written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from mlstack.stacks.cli import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def _write_stack(tmp_path: Path, platform: object, name: str = "t") -> Path:
    path = tmp_path / f"Pulumi.{name}.yaml"
    path.write_text(yaml.safe_dump({"config": {"mlstack:platform": platform}}))
    return path


def _lab() -> dict:
    data = yaml.safe_load((REPO / "stacks" / "Pulumi.onprem-lab.yaml").read_text())
    return data["config"]["mlstack:platform"]


def test_plan_prints_tree_capacity_and_notes() -> None:
    result = runner.invoke(app, ["plan", "onprem-lab"])
    assert result.exit_code == 0, result.output
    assert "stack onprem-lab (onprem, 92 resources)" in result.output
    assert "kubernetes:core/v1:NodePatch x4" in result.output
    assert "GPU capacity per pool" in result.output
    # a100: 2 nodes x 8 GPUs, and both teams' quotas (8 + 8) take all of it.
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in result.output.splitlines()]
    assert ["a100", "a100-80gb", "8", "2", "16", "16", "0"] in rows
    assert ["research-infra", "l40s", "8", "67%"] in rows
    assert "mlstack:s3AccessKeyId is not set" in result.output


def test_plan_without_stacks_plans_every_shipped_stack() -> None:
    result = runner.invoke(app, ["plan"])
    assert result.exit_code == 0, result.output
    assert "stack onprem-lab" in result.output


def test_plan_json_writes_every_resource(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    result = runner.invoke(app, ["plan", "onprem-lab", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["stack"] == "onprem-lab"
    assert len(data["resources"]) == 92
    for r in data["resources"]:
        assert set(r) >= {"type", "name", "urn", "parent", "inputs"}
        assert r["urn"].startswith("urn:pulumi:onprem-lab::mlstack::")
    secret = next(r for r in data["resources"] if r["type"] == "kubernetes:core/v1:Secret")
    assert "offline-placeholder" not in json.dumps(secret)
    assert "[secret]" in json.dumps(secret)


def test_plan_json_takes_one_stack(tmp_path: Path) -> None:
    result = runner.invoke(app, ["plan", "onprem-lab", "onprem-lab", "--json", "x.json"])
    assert result.exit_code == 2
    assert "--json takes exactly one stack" in result.output


def test_render_writes_yaml_documents(tmp_path: Path) -> None:
    out = tmp_path / "lab.yaml"
    result = runner.invoke(app, ["render", "onprem-lab", "-o", str(out)])
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(out.read_text()))
    assert {d["kind"] for d in docs} == {
        "Namespace",
        "ConfigMap",
        "Secret",
        "Node",
        "ResourceQuota",
        "LimitRange",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "NetworkPolicy",
        "PriorityClass",
        "ResourceFlavor",
        "ClusterQueue",
        "LocalQueue",
        "WorkloadPriorityClass",
        "JobSet",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        # The nightly pipeline's runner.
        "CronJob",
    }


def test_stacks_lists_shipped_stacks() -> None:
    result = runner.invoke(app, ["stacks"])
    assert result.exit_code == 0
    assert "onprem-lab" in result.output.split()


def test_bad_config_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    cfg = _lab()
    cfg["teams"][1]["quota"]["gpus"]["a100"] = 24
    cfg["node_pools"][1]["capacity"] = "spot"
    cfg["node_pools"][2]["accelerator"] = "tpu-v5"
    result = runner.invoke(app, ["plan", str(_write_stack(tmp_path, cfg))])
    assert result.exit_code == 2
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert len(lines) == 3, result.output
    assert all(x.startswith("error: ") and "fix:" in x for x in lines)
    assert any("platform.teams[1].quota.gpus.a100" in x and "got 24" in x for x in lines)
    assert any("platform.node_pools[1].capacity" in x for x in lines)
    assert any("platform.node_pools[2].accelerator" in x and "tpu-v5" in x for x in lines)
    assert "Traceback" not in result.output


def test_missing_stack_names_the_shipped_ones() -> None:
    result = runner.invoke(app, ["render", "no-such-stack"])
    assert result.exit_code == 2
    assert "onprem-lab" in result.output


def test_malformed_yaml_gives_its_place(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.broken.yaml"
    path.write_text("config:\n  mlstack:platform: {cloud: onprem\n")
    result = runner.invoke(app, ["plan", str(path)])
    assert result.exit_code == 2
    assert f"{path}:" in result.output and "invalid YAML" in result.output


def test_installed_console_script_exits_2_without_traceback(tmp_path: Path) -> None:
    """The real entry point in a real process: stderr has the lines, no traceback."""
    path = _write_stack(tmp_path, {"cloud": "azure"})
    proc = subprocess.run(
        [sys.executable, "-c", "from stacks.cli import main; main()", "plan", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "platform.cloud: invalid value (got 'azure')" in proc.stderr
