"""Bad AWS configs: each mistake is one line with its path, the value given and a fix.

Configs start from stacks/Pulumi.aws-dev.yaml and change one thing; a check that reports a
second problem for one mistake is a false report, so most tests expect exactly one. The end of
the module runs `mlstack plan` and `mlstack check` on a bad AWS stack file, in-process and as
the installed console script.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests_support import only_problem, problems
from typer.testing import CliRunner, Result

from mlstack.components.aws.backend import AwsBackend
from mlstack.components.aws.catalog import REGIONS, family
from mlstack.components.aws.instance_types import unsold
from mlstack.components.features import Feature
from mlstack.stacks import catalog
from mlstack.stacks.catalog import ACCELERATORS, Accelerator
from mlstack.stacks.cli import app
from mlstack.stacks.errors import ConfigError
from mlstack.stacks.schema import Platform
from mlstack.stacks.stackfile import PROJECT, read_stack
from mlstack.stacks.validate import load_platform

REPO = Path(__file__).resolve().parents[3]
_DEV_FILE = REPO / "stacks" / "Pulumi.aws-dev.yaml"
_DEV: dict[str, Any] = yaml.safe_load(_DEV_FILE.read_text())["config"][f"{PROJECT}:platform"]
ADMIN = "arn:aws:iam::123456789012:role/platform-admins"


@pytest.fixture
def cfg() -> dict[str, Any]:
    """A fresh, mutable copy of the aws-dev platform config."""
    return copy.deepcopy(_DEV)


def with_gpu_pool(config: dict[str, Any], region: str, pool: dict[str, Any]) -> dict[str, Any]:
    """The config in `region` with a CPU pool and `pool` only (no GPU quota or training job
    to trip over)."""
    config["aws"]["region"] = region
    config["node_pools"] = [{"name": "cpu", "kind": "cpu", "max_nodes": 2}, pool]
    for team in config["teams"]:
        team["quota"].pop("gpus", None)
    config.pop("workloads", None)
    return config


# --- the shipped stacks pass ------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["aws-dev", "aws-prod"])
def test_the_shipped_aws_stacks_pass_the_backend_checks(stack: str) -> None:
    raw = read_stack(stack).platform
    assert AwsBackend.check(Platform.model_validate(raw)) == []
    assert load_platform(raw).cloud == "aws"


# --- region and accelerators ------------------------------------------------------------------


@pytest.mark.parametrize("region", ["sa-east-1", "ca-central-1"])
def test_a_gpu_the_region_does_not_offer(cfg: dict[str, Any], region: str) -> None:
    pool = {"name": "h100", "kind": "gpu", "accelerator": "h100-80gb", "max_nodes": 1}
    p = only_problem(with_gpu_pool(cfg, region, pool))
    assert p.path == "platform.node_pools[1].accelerator"
    assert p.value == "h100-80gb"
    assert p.message == f"{region} offers no machine with 8 x h100-80gb"
    offered = sorted(REGIONS[region].gpu_families)
    assert ", ".join(offered) in p.fix and "another region" in p.fix


def test_every_catalog_accelerator_loads_exactly_where_its_machine_family_is_offered(
    cfg: dict[str, Any],
) -> None:
    """The region check agrees with the catalog for every region and accelerator: the default
    machine (the largest) where the region offers it, else another machine of that GPU count
    the region offers, else one problem."""
    for region, known in REGIONS.items():
        for name in ACCELERATORS:
            pool = {"name": "gpu", "kind": "gpu", "accelerator": name, "max_nodes": 1}
            config = with_gpu_pool(copy.deepcopy(cfg), region, pool)
            machines = AwsBackend.gpu_machines(name)
            most = max(machines.values())
            offered = [
                t for t, n in machines.items() if n == most and family(t) in known.gpu_families
            ]
            if offered:
                platform = load_platform(config)
                assert platform.pool("gpu").instance_type == offered[0], (region, name)
            else:
                p = only_problem(config)
                assert (p.path, p.value) == ("platform.node_pools[1].accelerator", name)


def test_an_explicit_instance_type_the_region_offers_loads(cfg: dict[str, Any]) -> None:
    pool = {
        "name": "h200",
        "kind": "gpu",
        "accelerator": "h200",
        "instance_type": "p5en.48xlarge",
        "max_nodes": 1,
    }
    platform = load_platform(with_gpu_pool(cfg, "us-east-2", pool))
    assert platform.pool("h200").instance_type == "p5en.48xlarge"


def test_an_accelerator_outside_the_catalog(cfg: dict[str, Any]) -> None:
    cfg["node_pools"][1]["accelerator"] = "tpu-v5e"
    cfg["teams"][0]["quota"].pop("gpus")
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.node_pools[1].accelerator", "tpu-v5e")
    assert "unknown accelerator" in p.message
    assert all(name in p.fix for name in ACCELERATORS)


def test_an_accelerator_aws_does_not_offer(
    cfg: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every accelerator of the shipped catalog is on AWS, so add one no AWS machine carries."""
    gcp_only = Accelerator(
        name="tpu-like",
        product="A GCP-only accelerator",
        memory_gib=16,
        peak_tflops=100.0,
    )
    monkeypatch.setattr(
        catalog, "ACCELERATORS", catalog.MappingProxyType({**ACCELERATORS, "tpu-like": gcp_only})
    )
    cfg["node_pools"][1]["accelerator"] = "tpu-like"
    cfg["teams"][0]["quota"].pop("gpus")
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.node_pools[1].accelerator", "tpu-like")
    assert "aws does not offer" in p.message
    offered = p.fix.split("use one of: ", 1)[1].split(", ")
    assert "tpu-like" not in offered and "l4" in offered


@pytest.mark.parametrize("region", ["US-EAST-1", "us-east", "useast1", "us-east-1a"])
def test_a_name_that_is_not_a_region(cfg: dict[str, Any], region: str) -> None:
    cfg["aws"]["region"] = region
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.aws.region", region)
    assert "us-east-1" in p.fix


def test_an_unknown_region_must_list_its_zones(cfg: dict[str, Any]) -> None:
    cfg["aws"]["region"] = "ap-southeast-2"
    p = only_problem(cfg)
    assert p.path == "platform.aws.availability_zones"
    assert "ap-southeast-2" in p.message
    assert "ap-southeast-2a" in p.fix


def test_an_unknown_region_with_zones_loads_unchecked(cfg: dict[str, Any]) -> None:
    cfg["aws"]["region"] = "ap-southeast-2"
    cfg["aws"]["availability_zones"] = ["ap-southeast-2a", "ap-southeast-2b"]
    assert load_platform(cfg).aws is not None


# --- zones ------------------------------------------------------------------------------------


def test_a_zone_of_another_region(cfg: dict[str, Any]) -> None:
    cfg["aws"]["availability_zones"] = ["us-east-1a", "us-west-2b"]
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.aws.availability_zones[1]", "us-west-2b")
    assert "us-east-1" in p.message
    assert "us-east-1a" in p.fix


def test_a_zone_the_region_does_not_have(cfg: dict[str, Any]) -> None:
    cfg["aws"]["availability_zones"] = ["us-east-1a", "us-east-1e"]
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.aws.availability_zones[1]", "us-east-1e")
    assert p.fix == f"use one of: {', '.join(REGIONS['us-east-1'].zones)}"


def test_a_zone_listed_twice(cfg: dict[str, Any]) -> None:
    cfg["aws"]["availability_zones"] = ["us-east-1a", "us-east-1b", "us-east-1a"]
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.aws.availability_zones[2]", "us-east-1a")
    assert "twice" in p.message


@pytest.mark.parametrize("zones", [[], ["us-east-1a"]], ids=["none", "one"])
def test_eks_needs_two_zones(cfg: dict[str, Any], zones: list[str]) -> None:
    cfg["aws"]["availability_zones"] = zones
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.aws.availability_zones", zones)
    assert "2 to 6 zones" in p.message


# --- network ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vpc_cidr", "says"),
    [
        ("ten", "invalid CIDR"),
        ("10.0.0.1/16", "has host bits set"),
        ("10.0.0.0/33", "invalid CIDR"),
        ("8.8.0.0/16", "private IPv4 range"),
        ("100.64.0.0/16", "private IPv4 range"),
        ("fd00::/48", "private IPv4 range"),
        ("10.0.0.0/20", "/16 to /19"),
        ("10.0.0.0/24", "/16 to /19"),
        ("10.0.0.0/15", "/16 to /19"),
    ],
)
def test_an_unusable_vpc_cidr(cfg: dict[str, Any], vpc_cidr: str, says: str) -> None:
    cfg["aws"]["vpc_cidr"] = vpc_cidr
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.aws.vpc_cidr", vpc_cidr)
    assert says in p.message
    assert "10.0.0.0/16" in p.fix


@pytest.mark.parametrize("vpc_cidr", ["10.0.0.0/16", "172.16.0.0/17", "192.168.0.0/19"])
def test_a_private_vpc_cidr_from_16_to_19_loads(cfg: dict[str, Any], vpc_cidr: str) -> None:
    cfg["aws"]["vpc_cidr"] = vpc_cidr
    assert load_platform(cfg).aws is not None


def test_a_public_access_cidr_that_is_not_a_cidr(cfg: dict[str, Any]) -> None:
    cfg["aws"]["public_access_cidrs"] = ["203.0.113.0/24", "the office"]
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.aws.public_access_cidrs[1]", "the office")
    assert "invalid CIDR" in p.message
    assert "203.0.113.0/24" in p.fix


def test_a_public_access_cidr_with_host_bits_names_the_network_address(
    cfg: dict[str, Any],
) -> None:
    cfg["aws"]["public_access_cidrs"] = ["198.51.100.7/24"]
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.aws.public_access_cidrs[0]", "198.51.100.7/24")
    assert "host bits" in p.message
    assert p.fix == "use the network address: 198.51.100.0/24"


def test_an_ipv6_public_access_cidr(cfg: dict[str, Any]) -> None:
    cfg["aws"]["public_access_cidrs"] = ["2001:db8::/32"]
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.aws.public_access_cidrs[0]", "2001:db8::/32")
    assert "IPv4" in p.message and "IPv4" in p.fix


# --- who reaches the private endpoint ---------------------------------------------------------


def test_a_private_only_api_without_api_access_cidrs(cfg: dict[str, Any]) -> None:
    """Issue 16: aws-prod's private-only API had no 443 rule from the VPN (EKS user guide,
    cluster-endpoint.html: the control plane security group must allow the connected network)."""
    cfg["aws"]["public_access_cidrs"] = []
    p = only_problem(cfg)
    assert p.path == "platform.aws.api_access_cidrs"
    assert "private-only" in p.message and "443" in p.message
    assert "10.100.0.0/16" in p.fix


def test_a_private_only_api_with_api_access_cidrs_loads(cfg: dict[str, Any]) -> None:
    cfg["aws"]["public_access_cidrs"] = []
    cfg["aws"]["api_access_cidrs"] = ["10.100.0.0/16", "100.64.0.0/16"]
    assert load_platform(cfg).aws is not None


@pytest.mark.parametrize(
    ("cidrs", "index", "words"),
    [
        (["vpn"], 0, "invalid CIDR"),
        (["10.100.0.1/16"], 0, "host bits"),
        (["203.0.113.0/24"], 0, "aws.public_access_cidrs"),
        (["0.0.0.0/0"], 0, "aws.public_access_cidrs"),
        (["10.100.0.0/16", "10.100.0.0/16"], 1, "listed twice"),
    ],
)
def test_a_bad_api_access_cidr(
    cfg: dict[str, Any], cidrs: list[str], index: int, words: str
) -> None:
    cfg["aws"]["api_access_cidrs"] = cidrs
    p = only_problem(cfg)
    assert (p.path, p.value) == (f"platform.aws.api_access_cidrs[{index}]", cidrs[index])
    assert words in p.message


# --- access entries ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:iam::123:role/ml-engineers",
        "arn:aws:sts::123456789012:assumed-role/ml-engineers/alice",
        "arn:aws:iam::123456789012:group/ml-engineers",
        "ml-engineers",
    ],
)
def test_an_access_entry_with_a_bad_arn(cfg: dict[str, Any], arn: str) -> None:
    cfg["aws"]["access_entries"][0]["principal_arn"] = arn
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.aws.access_entries[0].principal_arn", arn)
    assert "arn:aws:iam::<account>:role/<name>" in p.fix


def test_a_cluster_admin_with_a_bad_arn(cfg: dict[str, Any]) -> None:
    cfg["aws"]["cluster_admin_arns"] = ["platform-admins"]
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.aws.cluster_admin_arns[0]", "platform-admins")


def test_an_access_entry_with_a_system_group(cfg: dict[str, Any]) -> None:
    cfg["aws"]["access_entries"][0]["kubernetes_groups"] = ["ml-engineers", "system:masters"]
    p = only_problem(cfg)
    assert (p.path, p.value) == (
        "platform.aws.access_entries[0].kubernetes_groups[1]",
        "system:masters",
    )
    assert "cluster_admin_arns" in p.fix


def test_an_access_entry_group_no_team_binds(cfg: dict[str, Any]) -> None:
    cfg["aws"]["access_entries"][0]["kubernetes_groups"] = ["ml-engineer"]
    p = only_problem(cfg)
    assert (p.path, p.value) == (
        "platform.aws.access_entries[0].kubernetes_groups[0]",
        "ml-engineer",
    )
    assert "ml-engineers" in p.fix


def test_a_viewer_group_is_a_team_group(cfg: dict[str, Any]) -> None:
    cfg["teams"][0]["viewer_groups"] = ["ml-auditors"]
    cfg["aws"]["access_entries"].append(
        {
            "principal_arn": "arn:aws:iam::123456789012:role/auditors",
            "kubernetes_groups": ["ml-auditors"],
        }
    )
    assert load_platform(cfg).aws is not None


def test_a_principal_with_two_access_entries(cfg: dict[str, Any]) -> None:
    cfg["aws"]["access_entries"].append(copy.deepcopy(cfg["aws"]["access_entries"][0]))
    p = only_problem(cfg)
    assert p.path == "platform.aws.access_entries[1].principal_arn"
    assert p.value == "arn:aws:iam::123456789012:role/ml-engineers"
    assert "one access entry per principal" in p.message


def test_an_admin_with_an_access_entry_too(cfg: dict[str, Any]) -> None:
    cfg["aws"]["access_entries"].append(
        {"principal_arn": ADMIN, "kubernetes_groups": ["ml-engineers"]}
    )
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.aws.access_entries[1].principal_arn", ADMIN)
    assert "admins need no other entry" in p.fix


def test_an_admin_listed_twice(cfg: dict[str, Any]) -> None:
    cfg["aws"]["cluster_admin_arns"] = [ADMIN, ADMIN]
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.aws.cluster_admin_arns[1]", ADMIN)


# --- node pools -------------------------------------------------------------------------------


def test_a_spot_pool_where_spot_is_not_allowed(cfg: dict[str, Any]) -> None:
    cfg["aws"]["allow_spot"] = False
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.node_pools[1].capacity", "spot")
    assert "allow_spot: false" in p.message
    assert "on-demand" in p.fix


def test_a_pool_named_system(cfg: dict[str, Any]) -> None:
    cfg["node_pools"][0]["name"] = "system"
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.node_pools[0].name", "system")
    assert "aws.system_pool" in p.fix


def test_reserved_capacity_is_not_supported_on_aws(cfg: dict[str, Any]) -> None:
    cfg["node_pools"][1]["capacity"] = "reserved"
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.node_pools[1].capacity", "reserved")
    assert AwsBackend.unsupported[Feature.RESERVED_CAPACITY] in p.message
    assert p.fix == "use capacity: on-demand"


@pytest.mark.parametrize("instance_type", ["g5.xlarge", "p5.48xlarge", "g4dn.xlarge"])
def test_a_cpu_pool_on_a_gpu_instance_type(cfg: dict[str, Any], instance_type: str) -> None:
    cfg["node_pools"][0]["instance_type"] = instance_type
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.node_pools[0].instance_type", instance_type)
    assert "GPU machine" in p.message
    assert "kind: gpu" in p.fix


@pytest.mark.parametrize(
    ("field", "path"),
    [
        ("default_cpu_instance_type", "platform.aws.default_cpu_instance_type"),
        ("system_pool", "platform.aws.system_pool.instance_type"),
    ],
)
def test_the_cpu_defaults_may_not_be_gpu_machines(
    cfg: dict[str, Any], field: str, path: str
) -> None:
    if field == "system_pool":
        cfg["aws"]["system_pool"]["instance_type"] = "g6.xlarge"
    else:
        cfg["aws"][field] = "g6.xlarge"
    p = only_problem(cfg)
    assert (p.path, p.value) == (path, "g6.xlarge")


def test_a_cpu_instance_type_that_is_not_an_ec2_type(cfg: dict[str, Any]) -> None:
    cfg["node_pools"][0]["instance_type"] = "large"
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.node_pools[0].instance_type", "large")
    assert "m6i.2xlarge" in p.fix


@pytest.mark.parametrize(
    ("where", "path", "value", "reason"),
    [
        ("pool", "platform.node_pools[0].instance_type", "m9.huge", "(no family m9)"),
        ("system", "platform.aws.system_pool.instance_type", "m6i.3xlarge", "no size 3xlarge"),
        ("default", "platform.aws.default_cpu_instance_type", "m6i.3xlarge", "no size 3xlarge"),
    ],
)
def test_a_cpu_instance_type_aws_does_not_sell(
    cfg: dict[str, Any], where: str, path: str, value: str, reason: str
) -> None:
    """The old check took any `family.size`: EC2 refused these only at deploy time."""
    if where == "pool":
        cfg["node_pools"][0]["instance_type"] = value
    elif where == "system":
        cfg["aws"]["system_pool"]["instance_type"] = value
    else:
        cfg["aws"]["default_cpu_instance_type"] = value
    p = only_problem(cfg)
    assert (p.path, p.value) == (path, value)
    assert p.message.startswith("not an EC2 instance type (") and reason in p.message
    suggested = p.fix.removeprefix("use e.g. ")
    assert unsold(suggested, "m6i.2xlarge") is None, p.fix


def test_system_pool_min_above_max(cfg: dict[str, Any]) -> None:
    cfg["aws"]["system_pool"] = {"min_nodes": 3, "max_nodes": 2}
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.aws.system_pool.min_nodes", 3)


# --- storage and registry ---------------------------------------------------------------------


@pytest.mark.parametrize("purpose", ["datasets", "checkpoints", "models"])
def test_archive_before_30_days(cfg: dict[str, Any], purpose: str) -> None:
    cfg["storage"][purpose] = {"archive_after_days": 29}
    p = only_problem(cfg)
    assert (p.path, p.value) == (f"platform.storage.{purpose}.archive_after_days", 29)
    assert "STANDARD_IA" in p.message
    assert p.fix == "use 30 or more"


def test_no_image_repository(cfg: dict[str, Any]) -> None:
    cfg["registry"]["repositories"] = []
    p = only_problem(cfg)
    assert p.path == "platform.registry.repositories"


def test_every_problem_is_reported_at_once(cfg: dict[str, Any]) -> None:
    cfg["aws"]["allow_spot"] = False
    cfg["aws"]["public_access_cidrs"] = ["203.0.113.9/24"]
    cfg["aws"]["availability_zones"] = ["us-east-1a", "us-east-1a"]
    cfg["node_pools"][0]["name"] = "system"
    cfg["storage"]["checkpoints"]["archive_after_days"] = 7
    assert {p.path for p in problems(cfg)} == {
        "platform.aws.availability_zones[1]",
        "platform.aws.public_access_cidrs[0]",
        "platform.node_pools[0].name",
        "platform.node_pools[1].capacity",
        "platform.storage.checkpoints.archive_after_days",
    }


# --- questionable behaviour, recorded ---------------------------------------------------------


def test_an_ipv6_public_access_cidr_with_host_bits_is_told_to_use_ipv4(
    cfg: dict[str, Any],
) -> None:
    cfg["aws"]["public_access_cidrs"] = ["2001:db8::1/32"]
    p = only_problem(cfg)
    assert "IPv4" in p.fix, p.fix


@pytest.mark.parametrize("instance_type", ["p3.2xlarge", "g4ad.xlarge", "g5g.xlarge"])
def test_a_cpu_pool_on_a_gpu_family_outside_the_table(
    cfg: dict[str, Any], instance_type: str
) -> None:
    cfg["node_pools"][0]["instance_type"] = instance_type
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.node_pools[0].instance_type", instance_type)


@pytest.mark.parametrize("region", ["cn-north-1", "us-gov-west-1"])
def test_a_region_outside_the_aws_partition_is_rejected(cfg: dict[str, Any], region: str) -> None:
    cfg["aws"]["region"] = region
    cfg["aws"]["availability_zones"] = [f"{region}a", f"{region}b"]
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.aws.region", region)


def test_a_gpu_the_region_offers_on_another_machine_points_to_that_machine(
    cfg: dict[str, Any],
) -> None:
    pool = {"name": "h200", "kind": "gpu", "accelerator": "h200", "max_nodes": 1}
    config = with_gpu_pool(cfg, "us-east-2", pool)
    try:
        platform = load_platform(config)
    except ConfigError as exc:
        [p] = exc.problems
        assert "p5en.48xlarge" in p.fix, p.fix
    else:
        assert platform.pool("h200").instance_type == "p5en.48xlarge"


# --- the command line on a bad AWS stack ------------------------------------------------------

runner = CliRunner()


def _bad_stack(tmp_path: Path, cfg: dict[str, Any]) -> Path:
    cfg["aws"]["region"] = "sa-east-1"
    cfg["aws"]["allow_spot"] = False
    cfg["aws"]["public_access_cidrs"] = ["203.0.113.9/24"]
    cfg["node_pools"].append(
        {"name": "h100", "kind": "gpu", "accelerator": "h100-80gb", "max_nodes": 1}
    )
    path = tmp_path / "Pulumi.bad-aws.yaml"
    path.write_text(yaml.safe_dump({"config": {f"{PROJECT}:platform": cfg}}))
    return path


EXPECTED_PATHS = (
    "platform.aws.public_access_cidrs[0]",
    "platform.node_pools[1].capacity",
    "platform.node_pools[1].accelerator",  # sa-east-1 has no g6 (l4)
    "platform.node_pools[2].accelerator",  # nor p5 (h100)
)


def _check_error_output(stderr: str, output: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == len(EXPECTED_PATHS), lines
    assert all(line.startswith("error: ") and "; fix: " in line for line in lines), lines
    for path in EXPECTED_PATHS:
        assert any(f": {path}: " in line for line in lines), (path, lines)
    assert "Traceback" not in output


@pytest.mark.parametrize("command", ["plan", "check"])
def test_cli_on_a_bad_aws_stack_exits_2_with_one_error_line_per_problem(
    tmp_path: Path, cfg: dict[str, Any], command: str
) -> None:
    result: Result = runner.invoke(app, [command, str(_bad_stack(tmp_path, cfg))])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    _check_error_output(result.stderr, result.output)
    assert "Policy violations" not in result.stdout


def test_console_script_on_a_bad_aws_stack_exits_2_without_traceback(
    tmp_path: Path, cfg: dict[str, Any]
) -> None:
    """The installed `mlstack` entry point in its own process, as CI runs it."""
    script = Path(sys.executable).with_name("mlstack")
    assert script.is_file(), f"no console script at {script}: pip install -e '.[dev]'"
    path = _bad_stack(tmp_path, cfg)
    for command in ("plan", "check"):
        proc = subprocess.run(
            [str(script), command, str(path)],
            capture_output=True,
            text=True,
            check=False,
            cwd=REPO,
            timeout=120,
        )
        assert proc.returncode == 2, (command, proc.stderr)
        _check_error_output(proc.stderr, proc.stdout + proc.stderr)
