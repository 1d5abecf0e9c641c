"""`mlstack check`: exit codes, --json, --policy-config, --list and the human table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from mlstack.policies.rules import ALL_POLICIES
from mlstack.stacks.cli import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
BAD = REPO / "tests" / "data" / "bad-stacks"
#: One mandatory violation: no-host-namespaces on Job vision/train.
HOST_PID = BAD / "Pulumi.host-pid.yaml"
#: One mandatory violation: no-cluster-admin-bindings on ClusterRoleBinding lab-admins.
CLUSTER_ADMIN = BAD / "Pulumi.cluster-admin-binding.yaml"
RULE_NAMES = [p.name for p in ALL_POLICIES]


def check(*args: str, **env: str) -> Result:
    return runner.invoke(app, ["check", *args], env=env or None)


def check_json(*args: str) -> tuple[int, dict[str, Any]]:
    result = check(*args, "--json", "-")
    return result.exit_code, json.loads(result.stdout)


def _platform(source: Path = HOST_PID) -> dict[str, Any]:
    return yaml.safe_load(source.read_text())["config"]["mlstack:platform"]


def _write_stack(tmp_path: Path, platform: Any, name: str = "t") -> Path:
    path = tmp_path / f"Pulumi.{name}.yaml"
    path.write_text(yaml.safe_dump({"config": {"mlstack:platform": platform}}))
    return path


def _policy_config(tmp_path: Path, config: Any) -> Path:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(config))
    return path


def _error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


# --- exit codes --------------------------------------------------------------------------


def test_clean_stack_exits_0() -> None:
    result = check("onprem-lab")
    assert result.exit_code == 0, result.output
    assert "stack onprem-lab: 67 rules on" in result.stdout
    assert "no violations" in result.stdout
    assert "Policy violations" not in result.stdout


def test_mandatory_violation_exits_1() -> None:
    result = check(str(HOST_PID))
    assert result.exit_code == 1, result.output
    assert "1 mandatory, 0 advisory" in result.stdout


def test_one_failing_stack_fails_the_run() -> None:
    result = check("onprem-lab", str(HOST_PID))
    assert result.exit_code == 1, result.output
    assert "stack onprem-lab:" in result.stdout and "stack host-pid:" in result.stdout


def test_bad_config_exits_2_with_one_error_line_per_problem(tmp_path: Path) -> None:
    platform = _platform()
    platform["node_pools"][1]["accelerator"] = "tpu-v5"
    platform["teams"][0]["quota"]["gpus"]["a100"] = 24
    platform["teams"][1]["colour"] = "blue"
    result = check(str(_write_stack(tmp_path, platform)))
    assert result.exit_code == 2, result.output
    lines = _error_lines(result)
    assert lines and all(line.startswith("error: ") for line in lines), lines
    assert any("platform.teams[1].colour" in line for line in lines), lines
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Policy violations" not in result.stdout


def test_cross_field_problems_are_all_listed(tmp_path: Path) -> None:
    platform = _platform()
    platform["node_pools"][0]["max_nodes"] = 3  # but lists 2 nodes
    platform["teams"][0]["quota"]["gpus"]["a100"] = 24  # the pool holds 16
    platform["teams"][1]["cohort"] = "nowhere"
    result = check(str(_write_stack(tmp_path, platform)))
    assert result.exit_code == 2, result.output
    lines = _error_lines(result)
    assert len(lines) == 3, lines
    assert all(line.startswith("error: ") and "fix:" in line for line in lines), lines
    assert any("platform.node_pools[0].max_nodes" in line for line in lines)
    assert any("platform.teams[0].quota.gpus.a100" in line for line in lines)
    assert any("platform.teams[1].cohort" in line for line in lines)


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_a_cloud_without_its_section_is_a_config_error(tmp_path: Path, cloud: str) -> None:
    platform = _platform()
    platform["cloud"] = cloud
    result = check(str(_write_stack(tmp_path, platform)))
    assert result.exit_code == 2, result.output
    lines = _error_lines(result)
    assert lines and all(line.startswith("error: ") for line in lines), lines
    assert any(f"platform.{cloud}: cloud is {cloud} but" in line for line in lines), lines
    assert "Traceback" not in result.output


def test_unknown_stack_and_missing_file_exit_2(tmp_path: Path) -> None:
    result = check("no-such-stack")
    assert result.exit_code == 2
    assert _error_lines(result)[0].startswith("error: ")
    assert "onprem-lab" in result.stderr
    result = check(str(tmp_path / "Pulumi.gone.yaml"))
    assert result.exit_code == 2
    assert "no such stack file" in result.stderr


def test_bad_input_wins_over_violations_and_good_stacks_are_still_checked(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "Pulumi.broken.yaml"
    broken.write_text("config:\n  mlstack:platform: {cloud: onprem\n")
    out = tmp_path / "check.json"
    result = check(str(HOST_PID), str(broken), "onprem-lab", "--json", str(out))
    assert result.exit_code == 2, result.output
    assert any("invalid YAML" in line for line in _error_lines(result))
    data = json.loads(out.read_text())
    assert [s["stack"] for s in data["stacks"]] == ["host-pid", "onprem-lab"]
    assert "stack host-pid:" in result.stdout and "stack onprem-lab:" in result.stdout


def test_console_script_bad_config_exits_2_without_traceback(tmp_path: Path) -> None:
    """The real entry point in its own process, as CI runs it."""
    platform = _platform()
    platform["cloud"] = "gcp"
    path = _write_stack(tmp_path, platform)
    proc = subprocess.run(
        [sys.executable, "-c", "from stacks.cli import main; main()", "check", str(path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert any("platform.gcp: cloud is gcp but" in line for line in errors), proc.stderr


# --- --json -----------------------------------------------------------------------------------


def test_json_to_stdout_is_only_json() -> None:
    code, data = check_json("onprem-lab", str(HOST_PID))
    assert code == 1
    assert data["rules"] == RULE_NAMES
    assert len(data["rules"]) == 67
    by_stack = {s["stack"]: s for s in data["stacks"]}
    assert set(by_stack) == {"onprem-lab", "host-pid"}
    for s in data["stacks"]:
        assert isinstance(s["violations"], list)
        assert isinstance(s["plan_seconds"], float) and s["plan_seconds"] > 0
        assert isinstance(s["rule_seconds"], float) and s["rule_seconds"] >= 0
        assert isinstance(s["resources"], int) and s["resources"] > 0
        assert s["diagnostics"] == [] and s["not_applicable"] == []
    assert by_stack["onprem-lab"]["violations"] == []
    (v,) = by_stack["host-pid"]["violations"]
    assert v == {
        "stack": "host-pid",
        "policy": "no-host-namespaces",
        "enforcement": "mandatory",
        "message": v["message"],
        "urn": v["urn"],
        "resource": "extra-job.batch_vision_train",
    }
    assert v["message"].startswith("Job vision/train: the pod shares the node's namespaces")
    assert v["urn"].endswith("$kubernetes:batch/v1:Job::extra-job.batch_vision_train")


def test_json_file_is_written_and_the_table_still_printed(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    result = check(str(HOST_PID), "--json", str(out))
    assert result.exit_code == 1
    data = json.loads(out.read_text())
    assert data["stacks"][0]["violations"][0]["policy"] == "no-host-namespaces"
    assert "Policy violations" in result.stdout
    assert "stack host-pid:" in result.stdout


def test_json_lists_only_the_stacks_that_planned(tmp_path: Path) -> None:
    platform = _platform()
    platform["cloud"] = "gcp"
    bad = _write_stack(tmp_path, platform, "bad")
    result = check("onprem-lab", str(bad), "--json", "-")
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert [s["stack"] for s in data["stacks"]] == ["onprem-lab"]
    assert all(line.startswith("error: ") for line in _error_lines(result))


# --- --policy-config --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "level", ["advisory", {"enforcementLevel": "advisory"}], ids=["string", "object"]
)
def test_policy_config_downgrades_a_rule_to_advisory(tmp_path: Path, level: Any) -> None:
    config = _policy_config(tmp_path, {"no-host-namespaces": level})
    code, data = check_json(str(HOST_PID), "--policy-config", str(config))
    assert code == 0
    (v,) = data["stacks"][0]["violations"]
    assert (v["policy"], v["enforcement"]) == ("no-host-namespaces", "advisory")
    table = check(str(HOST_PID), "--policy-config", str(config), COLUMNS="300")
    assert table.exit_code == 0
    assert "0 mandatory, 1 advisory" in table.stdout
    row = next(line for line in table.stdout.splitlines() if "no-host-namespaces" in line)
    assert "advisory" in row


def test_policy_config_disables_a_rule(tmp_path: Path) -> None:
    config = _policy_config(tmp_path, {"no-host-namespaces": "disabled"})
    code, data = check_json(str(HOST_PID), "--policy-config", str(config))
    assert code == 0
    assert data["stacks"][0]["violations"] == []
    assert data["rules"] == RULE_NAMES  # disabling a rule does not hide it from the list


def test_policy_config_all_then_rule_specific_override(tmp_path: Path) -> None:
    config = _policy_config(tmp_path, {"all": "advisory"})
    code, data = check_json(str(HOST_PID), str(CLUSTER_ADMIN), "--policy-config", str(config))
    assert code == 0
    violations = [v for s in data["stacks"] for v in s["violations"]]
    assert {v["policy"] for v in violations} == {"no-host-namespaces", "no-cluster-admin-bindings"}
    assert {v["enforcement"] for v in violations} == {"advisory"}
    config = _policy_config(tmp_path, {"all": "advisory", "no-cluster-admin-bindings": "mandatory"})
    code, data = check_json(str(HOST_PID), str(CLUSTER_ADMIN), "--policy-config", str(config))
    assert code == 1
    levels = {v["policy"]: v["enforcement"] for s in data["stacks"] for v in s["violations"]}
    assert levels == {"no-host-namespaces": "advisory", "no-cluster-admin-bindings": "mandatory"}


def test_policy_config_remediate_counts_as_mandatory(tmp_path: Path) -> None:
    config = _policy_config(tmp_path, {"no-host-namespaces": "remediate"})
    code, data = check_json(str(HOST_PID), "--policy-config", str(config))
    assert code == 1
    assert data["stacks"][0]["violations"][0]["enforcement"] == "mandatory"


def test_policy_config_settings_reach_the_rules(tmp_path: Path) -> None:
    # Nothing in the cluster-admin corpus stack but the binding; with cluster-admin no longer
    # forbidden (and admin forbidden instead) it passes.
    config = _policy_config(
        tmp_path, {"no-cluster-admin-bindings": {"forbiddenClusterRoles": ["admin"]}}
    )
    code, data = check_json(str(CLUSTER_ADMIN), "--policy-config", str(config))
    assert (code, data["stacks"][0]["violations"]) == (0, [])
    # The host-pid Job sets no CPU limit, which is fine until requireCpuLimit is on.
    config = _policy_config(
        tmp_path, {"containers-set-requests-and-limits": {"requireCpuLimit": True}}
    )
    code, data = check_json(str(HOST_PID), "--policy-config", str(config))
    assert code == 1
    fired = {v["policy"]: v["message"] for v in data["stacks"][0]["violations"]}
    assert "limits.cpu" in fired["containers-set-requests-and-limits"]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "cannot read policy config"),
        ("{not json", "cannot read policy config"),
        ("[1, 2]", "must be a JSON object"),
        ('{"no-such-rule": "advisory"}', "'no-such-rule' is not a rule of the pack"),
        ('{"no-host-namespaces": "loud"}', "enforcement level 'loud'"),
        ('{"no-host-namespaces": {"enforcementLevel": "warn"}}', "enforcement level 'warn'"),
    ],
    ids=["missing", "malformed", "not-an-object", "unknown-rule", "bad-level", "bad-level-object"],
)
def test_unreadable_or_invalid_policy_config_exits_2(
    tmp_path: Path, content: str | None, says: str
) -> None:
    path = tmp_path / "policy.json"
    if content is not None:
        path.write_text(content)
    result = check(str(HOST_PID), "--policy-config", str(path))
    assert result.exit_code == 2, result.output
    lines = _error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert says in lines[0] and str(path) in lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""  # nothing was checked


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(
            {"no-host-namespaces": 5},
            id="rule-value-not-object",
        ),
        pytest.param(
            {"namespaces-enforce-pod-security": {"minimumLevel": "strict"}},
            id="setting-outside-enum",
        ),
        pytest.param(
            {"containers-set-requests-and-limits": {"requireCpuLimit": "false"}},
            id="setting-wrong-type",
        ),
        pytest.param(
            {"no-cluster-admin-bindings": {"forbiddenClusterRoles": "cluster-admin"}},
            id="setting-string-for-array",
        ),
    ],
)
def test_policy_config_violating_a_rule_schema_exits_2(tmp_path: Path, config: Any) -> None:
    path = _policy_config(tmp_path, config)
    result = check(str(HOST_PID), "--policy-config", str(path))
    assert result.exit_code == 2, result.output
    lines = _error_lines(result)
    assert lines and all(line.startswith("error: ") for line in lines), lines
    assert "Traceback" not in result.output


# --- --list and the human table ---------------------------------------------------------------


def test_list_names_every_rule_once() -> None:
    result = check("--list")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == len(RULE_NAMES) == 67
    assert [line.split()[0] for line in lines] == RULE_NAMES
    for line in lines:
        assert "(resource, mandatory)" in line or "(stack, mandatory)" in line, line
    assert "spot-capacity-only-for-checkpointing-jobs" in result.stdout


def test_list_does_not_plan_anything() -> None:
    result = check("--list", "no-such-stack")
    assert result.exit_code == 0, result.output
    assert "error" not in result.output


def test_table_names_stack_rule_resource_and_message() -> None:
    result = check(str(HOST_PID), str(CLUSTER_ADMIN), COLUMNS="300")
    assert result.exit_code == 1
    out = result.stdout
    assert "Policy violations" in out
    header = next(line for line in out.splitlines() if "rule" in line and "message" in line)
    for column in ("stack", "rule", "level", "resource", "message"):
        assert column in header
    rows = {
        cells[1]: cells
        for line in out.splitlines()
        if line.startswith("│")
        for cells in [[c.strip() for c in line.split("│")[1:-1]]]
    }
    assert rows["no-host-namespaces"][:4] == [
        "host-pid",
        "no-host-namespaces",
        "mandatory",
        "extra-job.batch_vision_train",
    ]
    assert rows["no-host-namespaces"][4].startswith("Job vision/train: the pod shares")
    assert rows["no-cluster-admin-bindings"][0] == "cluster-admin-binding"
    assert rows["no-cluster-admin-bindings"][3].endswith("lab-admins")
    assert "grants cluster-admin to Group lab-admins" in rows["no-cluster-admin-bindings"][4]
    assert "stack host-pid: 67 rules on" in out
    assert "stack cluster-admin-binding: 67 rules on" in out


def test_narrow_output_lists_each_violation_whole() -> None:
    """At CI-log width a table would squeeze the message away; each violation is a block."""
    result = check(str(HOST_PID), COLUMNS="80")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    start = lines.index("mandatory no-host-namespaces in stack host-pid")
    assert lines[start + 1] == "  resource: extra-job.batch_vision_train"
    assert lines[start + 2].startswith("  Job vision/train: the pod shares the node's namespaces")
    assert "┃" not in result.stdout
