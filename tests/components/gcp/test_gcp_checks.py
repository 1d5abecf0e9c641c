"""Bad GCP configs: each mistake is one line with its path, the value given and a fix.

Configs start from stacks/Pulumi.gcp-dev.yaml (a CPU pool and a spot L4 pool in us-central1,
default zones us-central1-a and -b) and change one thing; a check that reports a second problem
for one mistake is a false report, so most tests expect exactly one. Team storage prefixes are
shared by every cloud, so a few of those cases also run on stacks/Pulumi.aws-dev.yaml. The end
of the module runs `mlstack plan` on bad GCP stack files, in-process and as the installed
console script.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests_support import only_problem, problems
from typer.testing import CliRunner, Result

from mlstack.components.features import Feature
from mlstack.components.gcp.backend import GcpBackend
from mlstack.components.gcp.catalog import REGIONS, default_zones
from mlstack.components.gcp.machine_types import unsold
from mlstack.stacks.cli import app
from mlstack.stacks.errors import ConfigError
from mlstack.stacks.offline import run_plan
from mlstack.stacks.schema import Platform
from mlstack.stacks.stackfile import PROJECT, StackFile, read_stack
from mlstack.stacks.validate import load_platform

REPO = Path(__file__).resolve().parents[3]
_DEV_FILE = REPO / "stacks" / "Pulumi.gcp-dev.yaml"
_DEV: dict[str, Any] = yaml.safe_load(_DEV_FILE.read_text())["config"][f"{PROJECT}:platform"]
_AWS_DEV: dict[str, Any] = yaml.safe_load((REPO / "stacks" / "Pulumi.aws-dev.yaml").read_text())[
    "config"
][f"{PROJECT}:platform"]
US_CENTRAL1 = REGIONS["us-central1"]
NODE_POOL = "gcp:container/nodePool:NodePool"
ACCOUNT = "gcp:serviceaccount/account:Account"
#: The make_stack fixture of tests/conftest.py.
MakeStack = Callable[..., StackFile]


@pytest.fixture
def cfg() -> dict[str, Any]:
    """A fresh, mutable copy of the gcp-dev platform config."""
    return copy.deepcopy(_DEV)


@pytest.fixture
def aws_cfg() -> dict[str, Any]:
    """A fresh, mutable copy of the aws-dev platform config."""
    return copy.deepcopy(_AWS_DEV)


def with_gpu_pool(config: dict[str, Any], pool: dict[str, Any]) -> dict[str, Any]:
    """The config with a CPU pool and `pool` only (no GPU quota or training job to trip
    over)."""
    config["node_pools"] = [{"name": "cpu", "kind": "cpu", "max_nodes": 2}, pool]
    for team in config["teams"]:
        team["quota"].pop("gpus", None)
    config.pop("workloads", None)
    return config


def h100_pool(**fields: Any) -> dict[str, Any]:
    return {"name": "h100", "kind": "gpu", "accelerator": "h100-80gb", "max_nodes": 1, **fields}


def add_team(config: dict[str, Any], name: str, storage_prefix: str | None) -> dict[str, Any]:
    team: dict[str, Any] = {"name": name}
    if storage_prefix is not None:
        team["storage_prefix"] = storage_prefix
    config["teams"].append(team)
    return config


# --- the shipped stacks pass ------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["gcp-dev", "gcp-prod"])
def test_the_shipped_gcp_stacks_pass_the_backend_checks(stack: str) -> None:
    raw = read_stack(stack).platform
    assert GcpBackend.check(Platform.model_validate(raw)) == []
    assert load_platform(raw).cloud == "gcp"


def test_the_dev_config_uses_the_default_zones() -> None:
    """The cases below lean on gcp-dev's zones being the catalog's dev default."""
    assert "zones" not in _DEV["gcp"]
    assert default_zones("us-central1", "dev") == ("us-central1-a", "us-central1-b")


# --- accelerators and zones -------------------------------------------------------------------


def test_a_pool_zone_that_lacks_the_pools_gpu(cfg: dict[str, Any]) -> None:
    config = with_gpu_pool(cfg, h100_pool())
    config["gcp"]["pool_zones"] = {"h100": ["us-central1-f"]}
    p = only_problem(config)
    assert (p.path, p.value) == ("platform.gcp.pool_zones.h100[0]", "us-central1-f")
    assert p.message == "us-central1-f does not offer h100-80gb"
    offering = US_CENTRAL1.offering("h100-80gb")
    assert offering and "us-central1-f" not in offering
    assert p.fix == f"use zones that do: {', '.join(offering)}"


def test_only_the_pool_zones_that_lack_the_gpu_are_reported(cfg: dict[str, Any]) -> None:
    config = with_gpu_pool(cfg, h100_pool())
    config["gcp"]["pool_zones"] = {"h100": ["us-central1-a", "us-central1-f"]}
    p = only_problem(config)
    assert (p.path, p.value) == ("platform.gcp.pool_zones.h100[1]", "us-central1-f")


def test_pool_zones_in_a_region_that_offers_the_gpu_nowhere(cfg: dict[str, Any]) -> None:
    config = with_gpu_pool(cfg, h100_pool())
    assert REGIONS["europe-west1"].offering("h100-80gb") == ()
    config["gcp"]["region"] = "europe-west1"
    config["gcp"]["pool_zones"] = {"h100": ["europe-west1-b"]}
    p = only_problem(config)
    assert (p.path, p.value) == ("platform.gcp.pool_zones.h100[0]", "europe-west1-b")
    assert "another region" in p.fix


def test_pool_zones_that_offer_the_gpu_load_and_are_used(cfg: dict[str, Any]) -> None:
    config = with_gpu_pool(cfg, h100_pool())
    config["gcp"]["pool_zones"] = {"h100": ["us-central1-c"]}
    platform = load_platform(config)
    assert platform.gcp is not None
    assert platform.gcp.pool_zones == {"h100": ("us-central1-c",)}


def test_cluster_zones_none_of_which_offers_the_pools_gpu(cfg: dict[str, Any]) -> None:
    cfg["gcp"]["zones"] = ["us-central1-f"]
    assert "us-central1-f" not in US_CENTRAL1.offering("l4")
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.node_pools[1].accelerator", "l4")
    assert p.message == "none of the cluster's zones (us-central1-f) offers l4"
    assert "gcp.zones" in p.fix
    assert f"gcp.pool_zones.l4: {', '.join(US_CENTRAL1.offering('l4'))}" in p.fix


def test_cluster_zones_of_which_one_offers_the_gpu_load(cfg: dict[str, Any]) -> None:
    cfg["gcp"]["zones"] = ["us-central1-f", "us-central1-a"]
    assert load_platform(cfg).gcp is not None


def test_a_pool_whose_gpu_the_region_offers_nowhere(cfg: dict[str, Any]) -> None:
    config = with_gpu_pool(cfg, h100_pool())
    config["gcp"]["region"] = "europe-west1"
    p = only_problem(config)
    assert (p.path, p.value) == ("platform.node_pools[1].accelerator", "h100-80gb")
    assert "europe-west1" in p.message and "no zone" in p.message
    assert "another region" in p.fix


def test_the_default_prod_zones_offer_an_h100(cfg: dict[str, Any]) -> None:
    config = with_gpu_pool(cfg, h100_pool())
    config["environment"] = "prod"
    machines = GcpBackend.gpu_machines("h100-80gb")
    largest = max(machines, key=lambda t: machines[t])
    assert load_platform(config).pool("h100").instance_type == largest


def test_a_machine_type_that_cannot_carry_the_gpu_count(cfg: dict[str, Any]) -> None:
    cfg["node_pools"][1].update(instance_type="g2-standard-8", gpus_per_node=2)
    carried = GcpBackend.gpu_machines("l4")["g2-standard-8"]
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.node_pools[1].gpus_per_node", 2)
    assert p.message == f"g2-standard-8 carries {carried} x l4, not 2"
    assert p.fix == f"set gpus_per_node to {carried} or remove it"


def test_a_machine_type_that_does_not_carry_the_gpu(cfg: dict[str, Any]) -> None:
    cfg["node_pools"][1].update(instance_type="a2-highgpu-1g")
    del cfg["node_pools"][1]["gpus_per_node"]
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.node_pools[1].instance_type", "a2-highgpu-1g")
    assert "does not carry l4 on gcp" in p.message
    assert all(t in p.fix for t in GcpBackend.gpu_machines("l4"))


def test_a_gpu_count_no_gcp_machine_carries(cfg: dict[str, Any]) -> None:
    cfg["node_pools"][1]["gpus_per_node"] = 3
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.node_pools[1].gpus_per_node", 3)
    assert "no gcp machine carries 3 x l4" in p.message


def test_an_accelerator_gcp_does_not_offer_is_reported_once(cfg: dict[str, Any]) -> None:
    cfg["node_pools"][1]["accelerator"] = "a10g"
    cfg["teams"][0]["quota"].pop("gpus")
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.node_pools[1].accelerator", "a10g")
    assert "gcp does not offer" in p.message
    assert "l4" in p.fix and "a10g" not in p.fix


# --- project, region, zones -------------------------------------------------------------------


@pytest.mark.parametrize(
    "project", ["Acme-ML", "acme", "123456789012", "acme-ml-dev-", "a" * 31, "acme ml"]
)
def test_a_name_that_is_not_a_project_id(cfg: dict[str, Any], project: str) -> None:
    cfg["gcp"]["project"] = project
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.gcp.project", project)
    assert "project id" in p.message
    assert "acme-ml-prod" in p.fix


@pytest.mark.parametrize("region", ["US-CENTRAL1", "us-central", "us-central1-a", "uscentral1"])
def test_a_name_that_is_not_a_region(cfg: dict[str, Any], region: str) -> None:
    cfg["gcp"]["region"] = region
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.gcp.region", region)
    assert "us-central1" in p.fix


def test_an_unknown_region_must_list_its_zones(cfg: dict[str, Any]) -> None:
    cfg["gcp"]["region"] = "europe-north1"
    assert "europe-north1" not in REGIONS
    p = only_problem(cfg)
    assert p.path == "platform.gcp.zones"
    assert "europe-north1" in p.message
    assert "europe-north1-a" in p.fix


def test_an_unknown_region_with_zones_plans_and_says_its_gpus_were_not_checked(
    cfg: dict[str, Any], make_stack: MakeStack
) -> None:
    zones = ["europe-north1-a", "europe-north1-b"]
    cfg["gcp"]["region"] = "europe-north1"
    cfg["gcp"]["zones"] = zones
    plan = run_plan(make_stack(cfg))
    [note] = [n for n in plan.notes if "europe-north1" in n]
    assert "not checked" in note
    # Unchecked, the GPU pool goes in every listed zone.
    for pool in plan.of_type(NODE_POOL):
        assert pool.inputs["nodeLocations"] == zones, pool.name


def test_a_known_region_has_no_unchecked_note(cfg: dict[str, Any]) -> None:
    assert GcpBackend.notes(load_platform(cfg)) == []


def test_a_zone_of_another_region(cfg: dict[str, Any]) -> None:
    cfg["gcp"]["zones"] = ["us-central1-a", "us-east1-b"]
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.gcp.zones[1]", "us-east1-b")
    assert "us-central1" in p.message
    assert "us-central1-a" in p.fix


def test_a_zone_the_region_does_not_have(cfg: dict[str, Any]) -> None:
    cfg["gcp"]["zones"] = ["us-central1-a", "us-central1-d"]
    assert "us-central1-d" not in US_CENTRAL1.zones
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.gcp.zones[1]", "us-central1-d")
    assert p.message == "us-central1 has no zone us-central1-d"
    assert p.fix == f"use one of: {', '.join(US_CENTRAL1.zones)}"


def test_a_zone_listed_twice(cfg: dict[str, Any]) -> None:
    cfg["gcp"]["zones"] = ["us-central1-a", "us-central1-b", "us-central1-a"]
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.gcp.zones[2]", "us-central1-a")
    assert "twice" in p.message
    assert "once" in p.fix


def test_an_empty_zone_list(cfg: dict[str, Any]) -> None:
    cfg["gcp"]["zones"] = []
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.gcp.zones", [])
    assert "no zone" in p.message
    assert "us-central1" in p.fix


def test_pool_zones_naming_no_pool(cfg: dict[str, Any]) -> None:
    cfg["gcp"]["pool_zones"] = {"h100": ["us-central1-a"]}
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.gcp.pool_zones.h100", "h100")
    assert p.message == "names no node pool"
    assert p.fix == "use one of: cpu, l4"


@pytest.mark.parametrize(
    ("zones", "index", "says"),
    [
        (["us-east1-b"], 0, "not a zone of us-central1"),
        (["us-central1-a", "us-central1-a"], 1, "twice"),
        (["us-central1-d"], 0, "has no zone"),
    ],
    ids=["other-region", "twice", "missing"],
)
def test_a_bad_pool_zone_is_reported_once(
    cfg: dict[str, Any], zones: list[str], index: int, says: str
) -> None:
    cfg["gcp"]["pool_zones"] = {"l4": zones}
    p = only_problem(cfg)
    assert (p.path, p.value) == (f"platform.gcp.pool_zones.l4[{index}]", zones[index])
    assert says in p.message


def test_a_cpu_pool_may_have_zones_without_gpus(cfg: dict[str, Any]) -> None:
    cfg["gcp"]["pool_zones"] = {"cpu": ["us-central1-f"]}
    assert load_platform(cfg).gcp is not None


# --- network ----------------------------------------------------------------------------------


def test_pods_cidr_overlapping_the_subnet(cfg: dict[str, Any]) -> None:
    cfg["gcp"]["pods_cidr"] = "10.0.0.0/14"
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.gcp.pods_cidr", "10.0.0.0/14")
    assert p.message == "overlaps gcp.subnet_cidr (10.0.0.0/20)"
    assert "own addresses" in p.fix


def test_services_cidr_overlapping_the_master_range(cfg: dict[str, Any]) -> None:
    cfg["gcp"]["services_cidr"] = "172.16.0.0/20"
    p = only_problem(cfg)
    assert p.path == "platform.gcp.master_cidr"
    assert "gcp.services_cidr" in p.message


@pytest.mark.parametrize(
    ("field", "cidr"),
    [
        ("subnet_cidr", "8.8.0.0/20"),
        ("subnet_cidr", "fd00::/64"),
        ("pods_cidr", "34.64.0.0/14"),
        ("master_cidr", "35.190.0.0/28"),
    ],
)
def test_a_public_or_ipv6_range(cfg: dict[str, Any], field: str, cidr: str) -> None:
    cfg["gcp"][field] = cidr
    p = only_problem(cfg)
    assert (p.path, p.value) == (f"platform.gcp.{field}", cidr)
    assert p.message.startswith("must be a private IPv4 range")
    assert "10.0.0.0/8" in p.fix


@pytest.mark.parametrize(
    ("field", "cidr", "size"),
    [
        ("master_cidr", "172.16.0.0/27", "a /28"),
        ("master_cidr", "172.16.0.0/29", "a /28"),
        ("subnet_cidr", "10.0.0.0/25", "a /16 to a /24"),
        ("pods_cidr", "10.4.0.0/22", "a /11 to a /21"),
        ("services_cidr", "10.8.0.0/28", "a /16 to a /27"),
    ],
)
def test_a_range_of_the_wrong_size(cfg: dict[str, Any], field: str, cidr: str, size: str) -> None:
    cfg["gcp"][field] = cidr
    p = only_problem(cfg)
    assert (p.path, p.value) == (f"platform.gcp.{field}", cidr)
    assert p.message == f"must be {size}"
    assert p.fix == f"use {size}"


@pytest.mark.parametrize(
    ("field", "cidr", "network"),
    [
        ("subnet_cidr", "10.0.0.1/20", "10.0.0.0/20"),
        ("master_cidr", "172.16.0.5/28", "172.16.0.0/28"),
        ("master_authorized_networks", "203.0.113.7/24", "203.0.113.0/24"),
    ],
)
def test_host_bits_set_names_the_network_address(
    cfg: dict[str, Any], field: str, cidr: str, network: str
) -> None:
    if field == "master_authorized_networks":
        cfg["gcp"][field] = [cidr]
        path = f"platform.gcp.{field}[0]"
    else:
        cfg["gcp"][field] = cidr
        path = f"platform.gcp.{field}"
    p = only_problem(cfg)
    assert (p.path, p.value) == (path, cidr)
    assert "host bits" in p.message
    assert p.fix == f"use the network address: {network}"


def test_a_range_that_is_not_a_cidr(cfg: dict[str, Any]) -> None:
    cfg["gcp"]["services_cidr"] = "ten-eight"
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.gcp.services_cidr", "ten-eight")
    assert "invalid CIDR" in p.message
    assert "use a CIDR such as" in p.fix


def test_an_authorized_network_open_to_the_internet(cfg: dict[str, Any]) -> None:
    cfg["gcp"]["master_authorized_networks"] = ["203.0.113.0/24", "0.0.0.0/0"]
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.gcp.master_authorized_networks[1]", "0.0.0.0/0")
    assert "whole internet" in p.message
    assert "private endpoint" in p.fix


def test_an_ipv6_authorized_network(cfg: dict[str, Any]) -> None:
    cfg["gcp"]["master_authorized_networks"] = ["2001:db8::/32"]
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.gcp.master_authorized_networks[0]", "2001:db8::/32")
    assert "IPv4" in p.message and "IPv4" in p.fix


def test_no_authorized_network_loads(cfg: dict[str, Any]) -> None:
    cfg["gcp"]["master_authorized_networks"] = []
    assert load_platform(cfg).gcp is not None


# --- node pools -------------------------------------------------------------------------------


def test_a_pool_named_system(cfg: dict[str, Any]) -> None:
    cfg["node_pools"][0]["name"] = "system"
    cfg["workloads"]["pipelines"][0]["pool"] = "system"  # the runner follows its pool
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.node_pools[0].name", "system")
    assert "gcp.system_pool" in p.fix


def test_a_spot_pool_where_spot_is_not_allowed(cfg: dict[str, Any]) -> None:
    cfg["gcp"]["allow_spot"] = False
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.node_pools[1].capacity", "spot")
    assert "allow_spot: false" in p.message
    assert "on-demand" in p.fix


def test_reserved_capacity_is_not_supported_on_gcp(cfg: dict[str, Any]) -> None:
    cfg["node_pools"][1]["capacity"] = "reserved"
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.node_pools[1].capacity", "reserved")
    assert p.message.startswith("gcp has no reserved capacity")
    assert GcpBackend.unsupported[Feature.RESERVED_CAPACITY] in p.message
    assert p.fix == "use capacity: on-demand"


@pytest.mark.parametrize("machine_type", ["a2-highgpu-1g", "g2-standard-8", "a3-highgpu-8g"])
def test_a_cpu_pool_on_a_gpu_machine(cfg: dict[str, Any], machine_type: str) -> None:
    cfg["node_pools"][0]["instance_type"] = machine_type
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.node_pools[0].instance_type", machine_type)
    assert "GPU machine" in p.message
    assert "kind: gpu" in p.fix and "n2-standard-8" in p.fix


@pytest.mark.parametrize(
    ("where", "path"),
    [
        ("default_cpu_machine_type", "platform.gcp.default_cpu_machine_type"),
        ("system_pool", "platform.gcp.system_pool.machine_type"),
    ],
)
def test_the_cpu_defaults_may_not_be_gpu_machines(
    cfg: dict[str, Any], where: str, path: str
) -> None:
    if where == "system_pool":
        cfg["gcp"]["system_pool"]["machine_type"] = "g2-standard-4"
    else:
        cfg["gcp"][where] = "g2-standard-4"
    p = only_problem(cfg)
    assert (p.path, p.value) == (path, "g2-standard-4")
    assert "GPU machine" in p.message


@pytest.mark.parametrize(
    ("where", "path", "value", "reason"),
    [
        ("pool", "platform.node_pools[0].instance_type", "n9-standard-4", "(no series n9)"),
        ("pool", "platform.node_pools[0].instance_type", "n2-custom-3-16384", "vCPUs"),
        ("system", "platform.gcp.system_pool.machine_type", "e2-standard-5", "no size 5"),
        ("default", "platform.gcp.default_cpu_machine_type", "n2-standard-3", "no size 3"),
    ],
)
def test_a_cpu_machine_type_compute_engine_does_not_sell(
    cfg: dict[str, Any], where: str, path: str, value: str, reason: str
) -> None:
    """The old check took any `series-words`: GKE refused these only at deploy time."""
    if where == "pool":
        cfg["node_pools"][0]["instance_type"] = value
    elif where == "system":
        cfg["gcp"]["system_pool"]["machine_type"] = value
    else:
        cfg["gcp"]["default_cpu_machine_type"] = value
    p = only_problem(cfg)
    assert (p.path, p.value) == (path, value)
    assert p.message.startswith("not a GCE machine type (") and reason in p.message
    suggested = p.fix.removeprefix("use e.g. ")
    assert unsold(suggested, "n2-standard-8") is None, p.fix


def test_a_custom_machine_type_loads(cfg: dict[str, Any]) -> None:
    cfg["node_pools"][0]["instance_type"] = "n2-custom-4-16384"
    assert load_platform(cfg).pool("cpu").instance_type == "n2-custom-4-16384"


@pytest.mark.parametrize("machine_type", ["large", "N2-standard-8", "n2_standard_8", "n2"])
def test_a_malformed_machine_type(cfg: dict[str, Any], machine_type: str) -> None:
    cfg["node_pools"][0]["instance_type"] = machine_type
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.node_pools[0].instance_type", machine_type)
    assert p.message == "not a GCE machine type"
    assert "n2-standard-8" in p.fix


def test_a_cpu_pool_on_an_n1_machine_loads(cfg: dict[str, Any]) -> None:
    """N1 machines carry T4s attached to a GPU pool, but are CPU machines on their own."""
    cfg["node_pools"][0]["instance_type"] = "n1-standard-8"
    assert load_platform(cfg).pool("cpu").instance_type == "n1-standard-8"


def test_system_pool_min_above_max(cfg: dict[str, Any]) -> None:
    cfg["gcp"]["system_pool"] = {"min_nodes": 3, "max_nodes": 2}
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.gcp.system_pool.min_nodes", 3)
    assert "max_nodes (2)" in p.message
    assert p.fix == "set it to at most 2"


# --- names ------------------------------------------------------------------------------------


def test_a_bucket_name_with_dots(cfg: dict[str, Any]) -> None:
    cfg["storage"]["models"] = {"name": "acme.ml.models"}
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.storage.models.name", "acme.ml.models")
    assert "dots" in p.message
    assert "'-'" in p.fix


@pytest.mark.parametrize("name", ["acme-google-models", "googmodels", "google-ml"])
def test_a_bucket_name_gcs_refuses(cfg: dict[str, Any], name: str) -> None:
    cfg["storage"]["models"] = {"name": name}
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.storage.models.name", name)
    assert "google" in p.message
    assert "another name" in p.fix


def test_a_bucket_prefix_gcs_refuses_points_at_the_prefix(cfg: dict[str, Any]) -> None:
    cfg["storage"]["bucket_prefix"] = "acme-google"
    found = problems(cfg)
    assert found
    assert {p.path for p in found} == {"platform.storage.bucket_prefix"}
    # "got" is the prefix as written; the derived bucket name is in the message.
    assert [p.value for p in found] == ["acme-google"]
    assert "acme-google-datasets" in found[0].message


@pytest.mark.parametrize(
    "group",
    [
        "ml-engineers@acme.example",
        "gke-security-groups",
        "gke-security-groups@acme",
        "GKE-security-groups@acme.example",
    ],
)
def test_an_rbac_group_gke_does_not_read(cfg: dict[str, Any], group: str) -> None:
    cfg["gcp"]["rbac_security_group"] = group
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.gcp.rbac_security_group", group)
    assert "gke-security-groups" in p.message
    assert p.fix == "use gke-security-groups@<your domain>"


def test_no_image_repository(cfg: dict[str, Any]) -> None:
    cfg["registry"]["repositories"] = []
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.registry.repositories", [])
    assert "train" in p.fix


# --- team storage prefixes (shared by every cloud) --------------------------------------------


@pytest.mark.parametrize("prefix", ["", "/", "*", "/*", "."])
def test_a_prefix_that_would_grant_the_whole_bucket(cfg: dict[str, Any], prefix: str) -> None:
    cfg["teams"][0]["storage_prefix"] = prefix
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.teams[0].storage_prefix", prefix)
    assert "would grant the whole bucket" in p.message
    assert "'ml'" in p.fix


@pytest.mark.parametrize("prefix", ["a/../b", "Vision", "/vision", "vision/", "vi*on", "a//b"])
def test_a_prefix_that_is_not_a_plain_path(cfg: dict[str, Any], prefix: str) -> None:
    cfg["teams"][0]["storage_prefix"] = prefix
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.teams[0].storage_prefix", prefix)
    assert "not a plain path" in p.message


@pytest.mark.parametrize(
    ("first", "second"),
    [("vision", "vision/sub"), ("vision/sub", "vision"), ("vision", "vision")],
)
def test_nested_prefixes_of_two_teams(cfg: dict[str, Any], first: str, second: str) -> None:
    cfg["teams"][0]["storage_prefix"] = first
    p = only_problem(add_team(cfg, "other", second))
    assert (p.path, p.value) == ("platform.teams[1].storage_prefix", second)
    assert f"team ml's prefix {first!r}" in p.message
    assert "own top-level path" in p.fix


def test_a_prefix_inside_another_teams_default_prefix(cfg: dict[str, Any]) -> None:
    """Team ml's prefix is its name: 'ml/x' is inside it."""
    p = only_problem(add_team(cfg, "other", "ml/x"))
    assert (p.path, p.value) == ("platform.teams[1].storage_prefix", "ml/x")


@pytest.mark.parametrize(("first", "second"), [("vision", "vision2"), ("a/b", "a/c")])
def test_prefixes_that_share_letters_but_do_not_nest_load(
    cfg: dict[str, Any], first: str, second: str
) -> None:
    cfg["teams"][0]["storage_prefix"] = first
    platform = load_platform(add_team(cfg, "other", second))
    assert [t.object_prefix for t in platform.teams] == [first, second]


def test_a_bad_prefix_is_not_reported_again_as_nesting(cfg: dict[str, Any]) -> None:
    cfg["teams"][0]["storage_prefix"] = "*"
    p = only_problem(add_team(cfg, "other", "vision"))
    assert p.path == "platform.teams[0].storage_prefix"


@pytest.mark.parametrize("prefix", ["", "*"])
def test_a_whole_bucket_prefix_on_aws(aws_cfg: dict[str, Any], prefix: str) -> None:
    aws_cfg["teams"][0]["storage_prefix"] = prefix
    p = only_problem(aws_cfg)
    assert (p.path, p.value) == ("platform.teams[0].storage_prefix", prefix)
    assert "would grant the whole bucket" in p.message


def test_nested_prefixes_on_aws(aws_cfg: dict[str, Any]) -> None:
    aws_cfg["teams"][0]["storage_prefix"] = "vision"
    p = only_problem(add_team(aws_cfg, "other", "vision/sub"))
    assert (p.path, p.value) == ("platform.teams[1].storage_prefix", "vision/sub")
    assert "nests with team ml's prefix" in p.message


def test_every_problem_is_reported_at_once(cfg: dict[str, Any]) -> None:
    cfg["gcp"]["project"] = "Acme"
    cfg["gcp"]["allow_spot"] = False
    cfg["gcp"]["master_authorized_networks"] = ["0.0.0.0/0"]
    cfg["gcp"]["zones"] = ["us-central1-a", "us-central1-a"]
    cfg["node_pools"][0]["name"] = "system"
    cfg["workloads"]["pipelines"][0]["pool"] = "system"  # the runner follows its pool
    cfg["teams"][0]["storage_prefix"] = "*"
    assert {p.path for p in problems(cfg)} == {
        "platform.gcp.project",
        "platform.gcp.zones[1]",
        "platform.gcp.master_authorized_networks[0]",
        "platform.node_pools[0].name",
        "platform.node_pools[1].capacity",
        "platform.teams[0].storage_prefix",
    }


# --- bugs, recorded ---------------------------------------------------------------------------


def test_a_bad_region_is_the_only_problem_even_with_pool_zones(cfg: dict[str, Any]) -> None:
    cfg["gcp"]["region"] = "US-CENTRAL1"
    cfg["gcp"]["pool_zones"] = {"l4": ["us-central1-a"]}
    p = only_problem(cfg)
    assert (p.path, p.value) == ("platform.gcp.region", "US-CENTRAL1")


@pytest.mark.parametrize(
    "zones", [["us-central1-d"], ["us-east1-b", "us-east1-c"]], ids=["missing", "other-region"]
)
def test_bad_cluster_zones_are_not_reported_again_on_gpu_pools(
    cfg: dict[str, Any], zones: list[str]
) -> None:
    cfg["gcp"]["zones"] = zones
    assert {p.path for p in problems(cfg)} == {
        f"platform.gcp.zones[{i}]" for i in range(len(zones))
    }


@pytest.mark.parametrize(
    ("field", "cidr"),
    [
        ("subnet_cidr", "127.0.0.0/20"),
        ("subnet_cidr", "169.254.0.0/20"),
        ("pods_cidr", "0.0.0.0/14"),
        ("master_cidr", "127.0.0.0/28"),
    ],
)
def test_a_range_gcp_refuses_for_a_vpc(cfg: dict[str, Any], field: str, cidr: str) -> None:
    cfg["gcp"][field] = cidr
    p = only_problem(cfg)
    assert (p.path, p.value) == (f"platform.gcp.{field}", cidr)


def test_a_team_named_nodes_does_not_take_the_node_service_account(
    cfg: dict[str, Any], make_stack: MakeStack
) -> None:
    add_team(cfg, "nodes", None)
    try:
        plan = run_plan(make_stack(cfg))
    except ConfigError as exc:
        [p] = exc.problems
        assert (p.path, p.value) == ("platform.teams[1].name", "nodes")
    else:
        ids = [r.inputs["accountId"] for r in plan.of_type(ACCOUNT)]
        assert len(ids) == len(set(ids)), ids


# --- the command line on bad GCP stacks -------------------------------------------------------

runner = CliRunner()


def _pool_zone_without_h100(c: dict[str, Any]) -> None:
    c["node_pools"].append(h100_pool())
    c["gcp"]["pool_zones"] = {"h100": ["us-central1-f"]}


def _many(c: dict[str, Any]) -> None:
    c["gcp"]["project"] = "Acme"
    c["gcp"]["allow_spot"] = False
    c["gcp"]["master_authorized_networks"] = ["203.0.113.9/24"]
    c["teams"][0]["storage_prefix"] = ""


#: (mutation of the gcp-dev config, the paths of the problems it makes)
BAD_STACKS: dict[str, tuple[Callable[[dict[str, Any]], None], tuple[str, ...]]] = {
    "pool-zone-without-gpu": (_pool_zone_without_h100, ("platform.gcp.pool_zones.h100[0]",)),
    "gpu-count": (
        lambda c: c["node_pools"][1].update(instance_type="g2-standard-8", gpus_per_node=2),
        ("platform.node_pools[1].gpus_per_node",),
    ),
    "whole-bucket-prefix": (
        lambda c: c["teams"][0].update(storage_prefix="*"),
        ("platform.teams[0].storage_prefix",),
    ),
    "overlapping-ranges": (
        lambda c: c["gcp"].update(pods_cidr="10.0.0.0/14"),
        ("platform.gcp.pods_cidr",),
    ),
    "reserved": (
        lambda c: c["node_pools"][1].update(capacity="reserved"),
        ("platform.node_pools[1].capacity",),
    ),
    "many": (
        _many,
        (
            "platform.gcp.project",
            "platform.gcp.master_authorized_networks[0]",
            "platform.node_pools[1].capacity",
            "platform.teams[0].storage_prefix",
        ),
    ),
}


def _bad_stack(tmp_path: Path, case: str) -> tuple[Path, tuple[str, ...]]:
    mutate, paths = BAD_STACKS[case]
    config = copy.deepcopy(_DEV)
    mutate(config)
    path = tmp_path / "Pulumi.bad-gcp.yaml"
    path.write_text(yaml.safe_dump({"config": {f"{PROJECT}:platform": config}}))
    return path, paths


def _check_error_output(stderr: str, output: str, paths: tuple[str, ...]) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == len(paths), lines
    assert all(line.startswith("error: ") and "; fix: " in line for line in lines), lines
    for path in paths:
        assert any(f": {path}: " in line for line in lines), (path, lines)
    assert "Traceback" not in output


@pytest.mark.parametrize("case", sorted(BAD_STACKS))
def test_plan_on_a_bad_gcp_stack_exits_2_with_one_error_line_per_problem(
    tmp_path: Path, case: str
) -> None:
    path, paths = _bad_stack(tmp_path, case)
    result: Result = runner.invoke(app, ["plan", str(path)])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    _check_error_output(result.stderr, result.output, paths)


def test_console_script_on_a_bad_gcp_stack_exits_2_without_traceback(tmp_path: Path) -> None:
    """The installed `mlstack` entry point in its own process, as CI runs it."""
    script = Path(sys.executable).with_name("mlstack")
    assert script.is_file(), f"no console script at {script}: pip install -e '.[dev]'"
    path, paths = _bad_stack(tmp_path, "many")
    proc = subprocess.run(
        [str(script), "plan", str(path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    _check_error_output(proc.stderr, proc.stdout + proc.stderr, paths)
