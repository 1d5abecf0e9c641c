"""Loading a platform config: every mistake is one line with its path, the value and a fix."""

from __future__ import annotations

import copy
from importlib.metadata import version
from typing import Any

import pytest
from pydantic import ValidationError

from mlstack.components import backend as backend_module
from mlstack.components.aws.catalog import MACHINES as AWS_MACHINES
from mlstack.components.backend import CloudBackend
from mlstack.stacks import validate
from mlstack.stacks.catalog import ACCELERATORS
from mlstack.stacks.errors import ConfigError, Problem
from mlstack.stacks.names import ACCELERATOR_LABEL, POOL_LABEL
from mlstack.stacks.schema import (
    GPU_TAINT,
    RELEASE,
    SUPPORTED_KUBERNETES,
    Platform,
    PoolKind,
    Taint,
    TaintEffect,
)
from mlstack.stacks.stackfile import read_stack, shipped_stacks
from mlstack.stacks.validate import load_platform


def problems(cfg: Any, source: str | None = None) -> list[Problem]:
    with pytest.raises(ConfigError) as exc:
        load_platform(cfg, source)
    return list(exc.value.problems)


def problem_at(cfg: Any, path: str) -> Problem:
    """The one problem reported at `path` (others may be reported too)."""
    found = [p for p in problems(cfg) if p.path == path]
    assert len(found) == 1, found
    return found[0]


def only_problem(cfg: Any) -> Problem:
    """The config's single problem; a second one would be a false report."""
    found = problems(cfg)
    assert len(found) == 1, [str(p) for p in found]
    return found[0]


def aws_config() -> dict[str, Any]:
    """A well-formed aws platform."""
    return {
        "cloud": "aws",
        # A private-only API names who may reach it (api_access_cidrs is required then).
        "aws": {"region": "us-east-1", "api_access_cidrs": ["10.100.0.0/16"]},
        "cluster": {"name": "prod", "kubernetes_version": "1.33"},
        "node_pools": [
            {"name": "cpu", "kind": "cpu", "max_nodes": 3},
            {"name": "h100", "kind": "gpu", "accelerator": "h100-80gb", "max_nodes": 2},
            {"name": "l4", "kind": "gpu", "accelerator": "l4", "gpus_per_node": 1, "max_nodes": 4},
        ],
        "storage": {"bucket_prefix": "acme-ml"},
        "teams": [{"name": "vision", "quota": {"gpus": {"h100": 8}}}],
    }


class _AvailableCloud(CloudBackend):
    """Stands in for a cloud backend that exists, to see what loading resolves on a cloud."""

    cloud = "aws"
    machines = AWS_MACHINES

    @classmethod
    def check(cls, platform: Platform) -> list[Problem]:
        return []

    def provision(self, platform: Platform, secrets: Any) -> Any:
        raise NotImplementedError


# --- shipped stacks -------------------------------------------------------------------------


@pytest.mark.parametrize("stack", shipped_stacks())
def test_every_shipped_stack_loads(stack: str) -> None:
    platform = load_platform(read_stack(stack).platform)
    assert platform.node_pools


def test_shipped_stacks_include_the_onprem_lab() -> None:
    assert "onprem-lab" in shipped_stacks()


# --- field problems (the schema) ------------------------------------------------------------


def test_unknown_field_suggests_the_close_one(lab_config: dict[str, Any]) -> None:
    lab_config["node_pools"][1]["max_node"] = 3
    p = only_problem(lab_config)
    assert p.path == "platform.node_pools[1].max_node"
    assert p.value == 3
    assert "'max_nodes'" in p.fix


def test_unknown_top_level_field_suggests_the_close_one(lab_config: dict[str, Any]) -> None:
    lab_config["clouds"] = "onprem"
    p = only_problem(lab_config)
    assert p.path == "platform.clouds"
    assert "'cloud'" in p.fix


def test_unknown_field_without_a_close_one_says_remove_and_lists_the_allowed(
    lab_config: dict[str, Any],
) -> None:
    lab_config["teams"][0]["quota"]["xyzzy"] = 1
    p = only_problem(lab_config)
    assert p.path == "platform.teams[0].quota.xyzzy"
    assert "remove" in p.fix
    assert all(name in p.fix for name in ("gpus", "cpu", "memory_gib"))


def test_wrong_type_names_the_expected_type(lab_config: dict[str, Any]) -> None:
    lab_config["node_pools"][1]["max_nodes"] = "many"
    p = only_problem(lab_config)
    assert p.path == "platform.node_pools[1].max_nodes"
    assert p.value == "many"
    assert "integer" in p.fix


def test_wrong_type_inside_a_quota_map_names_the_pool_key(lab_config: dict[str, Any]) -> None:
    lab_config["teams"][1]["quota"]["gpus"]["a100"] = "eight"
    p = only_problem(lab_config)
    assert p.path == "platform.teams[1].quota.gpus.a100"
    assert p.value == "eight"


def test_missing_required_field_says_what_to_add(lab_config: dict[str, Any]) -> None:
    del lab_config["storage"]
    p = only_problem(lab_config)
    assert p.path == "platform.storage"
    assert "missing" in p.message
    assert p.fix.startswith("add storage")
    assert "got" not in str(p)


def test_missing_required_field_of_a_list_item(lab_config: dict[str, Any]) -> None:
    del lab_config["node_pools"][2]["kind"]
    p = only_problem(lab_config)
    assert p.path == "platform.node_pools[2].kind"
    assert p.fix.startswith("add kind")
    assert "'cpu' or 'gpu'" in p.fix


def test_missing_field_of_the_onprem_section(lab_config: dict[str, Any]) -> None:
    del lab_config["onprem"]["storage_endpoint"]
    p = only_problem(lab_config)
    assert p.path == "platform.onprem.storage_endpoint"
    assert p.fix.startswith("add storage_endpoint")


def test_unsupported_kubernetes_version_lists_the_supported_ones(
    lab_config: dict[str, Any],
) -> None:
    lab_config["cluster"]["kubernetes_version"] = "1.28"
    p = only_problem(lab_config)
    assert p.path == "platform.cluster.kubernetes_version"
    assert p.value == "1.28"
    assert all(v in p.fix for v in SUPPORTED_KUBERNETES)


def test_unknown_cloud_lists_the_clouds(lab_config: dict[str, Any]) -> None:
    lab_config["cloud"] = "azure"
    p = only_problem(lab_config)
    assert p.path == "platform.cloud"
    assert p.value == "azure"
    assert all(c in p.fix for c in ("aws", "gcp", "onprem"))


def test_bad_label_key_is_reported(lab_config: dict[str, Any]) -> None:
    lab_config["node_pools"][0]["labels"] = {"not a key": "x"}
    p = only_problem(lab_config)
    assert p.path.startswith("platform.node_pools[0].labels")
    assert p.value == "not a key"
    assert "label key" in p.fix


def test_no_platform_and_a_non_mapping_platform_are_one_problem_each() -> None:
    (missing,) = problems(None)
    assert missing.path == "platform"
    assert "mlstack:platform" in missing.message
    (scalar,) = problems(["cloud", "onprem"])
    assert scalar.path == "platform"
    assert scalar.value == ["cloud", "onprem"]


# --- cross-field problems -------------------------------------------------------------------


def test_unknown_accelerator_lists_the_catalog(lab_config: dict[str, Any]) -> None:
    lab_config["node_pools"][1]["accelerator"] = "a100"
    p = only_problem(lab_config)
    assert p.path == "platform.node_pools[1].accelerator"
    assert p.value == "a100"
    assert all(name in p.fix for name in ACCELERATORS)


def test_accelerator_the_cloud_does_not_offer(lab_config: dict[str, Any]) -> None:
    cfg = aws_config()
    cfg["cloud"] = "gcp"
    cfg["gcp"] = {"project": "acme", "region": "us-central1"}
    del cfg["aws"]
    cfg["node_pools"].append({"name": "l40s", "kind": "gpu", "accelerator": "l40s", "max_nodes": 1})
    p = problem_at(cfg, "platform.node_pools[3].accelerator")
    assert p.value == "l40s"
    assert "gcp" in p.message
    offered = p.fix.split("use one of: ", 1)[1].split(", ")
    assert "l40s" not in offered and "l4" in offered


def test_clouds_without_a_backend_say_they_are_not_available_yet(
    lab_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(backend_module._BACKENDS, "gcp")
    monkeypatch.setitem(backend_module._UNAVAILABLE, "gcp", "not in this release (issue #9)")
    lab_config["cloud"] = "gcp"
    p = problem_at(lab_config, "platform.cloud")
    assert p.value == "gcp"
    assert p.message == "not in this release (issue #9)"
    assert "onprem" in p.fix and "gcp" not in p.fix


def test_onprem_gpu_pool_must_say_its_gpus_per_node(lab_config: dict[str, Any]) -> None:
    del lab_config["node_pools"][2]["gpus_per_node"]
    p = only_problem(lab_config)
    assert p.path == "platform.node_pools[2].gpus_per_node"
    assert "set gpus_per_node" in p.fix


def test_gpu_pool_without_an_accelerator(lab_config: dict[str, Any]) -> None:
    del lab_config["node_pools"][1]["accelerator"]
    p = only_problem(lab_config)
    assert p.path == "platform.node_pools[1].accelerator"


@pytest.mark.parametrize(("field", "value"), [("accelerator", "l4"), ("gpus_per_node", 2)])
def test_cpu_pool_with_gpu_fields(lab_config: dict[str, Any], field: str, value: Any) -> None:
    lab_config["node_pools"][0][field] = value
    p = only_problem(lab_config)
    assert p.path == f"platform.node_pools[0].{field}"
    assert p.value == value
    assert "kind: gpu" in p.fix


def test_duplicate_pool_name(lab_config: dict[str, Any]) -> None:
    lab_config["node_pools"].append(
        {"name": "cpu", "kind": "cpu", "max_nodes": 1, "nodes": ["cpu-05"]}
    )
    p = only_problem(lab_config)
    assert p.path == "platform.node_pools[3].name"
    assert p.value == "cpu"


def test_duplicate_team_name(lab_config: dict[str, Any]) -> None:
    lab_config["teams"][2]["name"] = "vision"
    p = only_problem(lab_config)
    assert p.path == "platform.teams[2].name"
    assert p.value == "vision"


def test_quota_naming_a_missing_pool_lists_the_gpu_pools(lab_config: dict[str, Any]) -> None:
    lab_config["teams"][1]["quota"]["gpus"]["a1000"] = 2
    p = only_problem(lab_config)
    assert p.path == "platform.teams[1].quota.gpus.a1000"
    assert p.value == "a1000"
    assert "a100" in p.fix and "l40s" in p.fix


def test_quota_naming_a_cpu_pool(lab_config: dict[str, Any]) -> None:
    lab_config["teams"][0]["quota"]["gpus"]["cpu"] = 1
    p = only_problem(lab_config)
    assert p.path == "platform.teams[0].quota.gpus.cpu"
    assert p.value == "cpu"
    assert "cpu" not in p.fix.split(":", 1)[1].split(", ")


def test_negative_gpu_quota(lab_config: dict[str, Any]) -> None:
    lab_config["teams"][2]["quota"]["gpus"]["l40s"] = -1
    p = only_problem(lab_config)
    assert p.path == "platform.teams[2].quota.gpus.l40s"
    assert p.value == -1


def test_quota_above_the_pool_maximum_names_the_maximum(lab_config: dict[str, Any]) -> None:
    lab_config["teams"][1]["quota"]["gpus"]["a100"] = 24
    p = only_problem(lab_config)
    assert p.path == "platform.teams[1].quota.gpus.a100"
    assert p.value == 24
    assert "16" in p.message
    assert "2 nodes x 8 GPUs" in p.message
    assert "16" in p.fix and "max_nodes" in p.fix


def test_quota_equal_to_the_pool_maximum_is_fine(lab_config: dict[str, Any]) -> None:
    lab_config["teams"][1]["quota"]["gpus"]["a100"] = 16
    assert load_platform(lab_config).teams[1].quota.gpus["a100"] == 16


def test_min_nodes_above_max_nodes(lab_config: dict[str, Any]) -> None:
    lab_config["node_pools"][1]["min_nodes"] = 3
    found = [p for p in problems(lab_config) if p.path == "platform.node_pools[1].min_nodes"]
    assert any("max_nodes" in p.message and "2" in p.fix for p in found), found
    assert all(p.value == 3 for p in found)


@pytest.mark.parametrize("capacity", ["spot", "reserved"])
def test_onprem_has_no_spot_or_reserved_capacity(lab_config: dict[str, Any], capacity: str) -> None:
    lab_config["node_pools"][1]["capacity"] = capacity
    p = only_problem(lab_config)
    assert p.path == "platform.node_pools[1].capacity"
    assert p.value == capacity
    assert "on-demand" in p.fix


def test_onprem_pools_do_not_scale(lab_config: dict[str, Any]) -> None:
    lab_config["node_pools"][0]["min_nodes"] = 1
    p = only_problem(lab_config)
    assert p.path == "platform.node_pools[0].min_nodes"
    assert p.value == 1
    assert "remove min_nodes" in p.fix


@pytest.mark.parametrize("nodes", [None, []])
def test_onprem_pool_must_list_its_nodes(lab_config: dict[str, Any], nodes: Any) -> None:
    if nodes is None:
        del lab_config["node_pools"][0]["nodes"]
    else:
        lab_config["node_pools"][0]["nodes"] = nodes
    p = only_problem(lab_config)
    assert p.path == "platform.node_pools[0].nodes"
    assert "kubectl get nodes" in p.fix


def test_onprem_max_nodes_must_match_the_listed_nodes(lab_config: dict[str, Any]) -> None:
    lab_config["node_pools"][2]["max_nodes"] = 2
    p = only_problem(lab_config)
    assert p.path == "platform.node_pools[2].max_nodes"
    assert p.value == 2
    assert "3" in p.fix


def test_a_node_in_two_pools(lab_config: dict[str, Any]) -> None:
    lab_config["node_pools"][2]["nodes"][2] = "dgx-01"
    p = only_problem(lab_config)
    assert p.path == "platform.node_pools[2].nodes[2]"
    assert p.value == "dgx-01"
    assert "'a100'" in p.message


@pytest.mark.parametrize("kind", ["training_jobs", "inference_services"])
def test_workloads_must_name_a_team_and_a_pool(lab_config: dict[str, Any], kind: str) -> None:
    lab_config["workloads"] = {
        kind: [
            {"name": "ok", "team": "vision", "pool": "a100"},
            {"name": "lost", "team": "robotics", "pool": "h100"},
        ]
    }
    found = {p.path: p for p in problems(lab_config)}
    assert set(found) == {
        f"platform.workloads.{kind}[1].team",
        f"platform.workloads.{kind}[1].pool",
    }
    team = found[f"platform.workloads.{kind}[1].team"]
    pool = found[f"platform.workloads.{kind}[1].pool"]
    assert team.value == "robotics" and "language, research-infra, vision" in team.fix
    assert pool.value == "h100" and "cpu, a100, l40s" in pool.fix


def test_missing_onprem_section(lab_config: dict[str, Any]) -> None:
    del lab_config["onprem"]
    p = only_problem(lab_config)
    assert p.path == "platform.onprem"
    assert "missing" in p.message
    assert "onprem:" in p.fix


def test_stray_aws_section_in_an_onprem_stack(lab_config: dict[str, Any]) -> None:
    lab_config["aws"] = {"region": "us-east-1"}
    p = only_problem(lab_config)
    assert p.path == "platform.aws"
    assert "remove it" in p.fix


def test_two_purposes_sharing_a_bucket(lab_config: dict[str, Any]) -> None:
    lab_config["storage"]["checkpoints"]["name"] = "lab-ml-datasets"
    p = only_problem(lab_config)
    assert p.path == "platform.storage.checkpoints.name"
    assert p.value == "lab-ml-datasets"
    assert "datasets" in p.message


def test_a_shared_bucket_is_reported_at_the_name_the_user_wrote(
    lab_config: dict[str, Any],
) -> None:
    lab_config["storage"]["datasets"] = {"name": "lab-ml-checkpoints"}
    p = only_problem(lab_config)
    assert p.path == "platform.storage.datasets.name"


def test_a_cloud_quota_is_checked_against_the_catalog_machine() -> None:
    assert load_platform(aws_config()).pool("h100").instance_type == "p5.48xlarge"
    config = aws_config()
    config["teams"][0]["quota"]["gpus"]["h100"] = 24
    p = only_problem(config)
    assert p.path == "platform.teams[0].quota.gpus.h100"
    assert "16 GPUs (2 nodes x 8 GPUs)" in p.message


def test_onprem_cpu_pool_with_an_instance_type(lab_config: dict[str, Any]) -> None:
    lab_config["node_pools"][0]["instance_type"] = "m6i.2xlarge"
    p = only_problem(lab_config)
    assert p.path == "platform.node_pools[0].instance_type"


def test_configured_labels_cannot_override_mlstack_labels(lab_config: dict[str, Any]) -> None:
    lab_config["node_pools"][1]["labels"] = {POOL_LABEL: "l40s"}
    p = only_problem(lab_config)
    assert p.path.startswith("platform.node_pools[1].labels")


def test_an_unquoted_kubernetes_version_says_to_quote_it(lab_config: dict[str, Any]) -> None:
    lab_config["cluster"]["kubernetes_version"] = 1.3  # what YAML makes of `1.30`
    p = only_problem(lab_config)
    assert p.path == "platform.cluster.kubernetes_version"
    assert "quote the version" in p.fix


# --- reporting ------------------------------------------------------------------------------


def test_every_cross_field_problem_is_reported_at_once(lab_config: dict[str, Any]) -> None:
    lab_config["teams"][1]["quota"]["gpus"]["a100"] = 24
    lab_config["teams"][2]["name"] = "vision"
    lab_config["node_pools"][0]["min_nodes"] = 1
    lab_config["node_pools"][1]["capacity"] = "spot"
    lab_config["node_pools"][2]["accelerator"] = "tpu-v5"
    lab_config["storage"]["models"] = {"name": "lab-ml-datasets"}
    found = problems(lab_config)
    assert sorted(p.path for p in found) == sorted(
        [
            "platform.teams[1].quota.gpus.a100",
            "platform.teams[2].name",
            "platform.node_pools[0].min_nodes",
            "platform.node_pools[1].capacity",
            "platform.node_pools[2].accelerator",
            "platform.storage.models.name",
        ]
    )
    for p in found:
        line = str(p)
        assert "\n" not in line
        assert line.startswith(f"{p.path}: ")
        assert "(got " in line and "; fix: " in line


def test_every_field_problem_is_reported_at_once(lab_config: dict[str, Any]) -> None:
    lab_config["node_pools"][0]["max_node"] = 3
    lab_config["node_pools"][1]["max_nodes"] = "many"
    lab_config["cluster"]["kubernetes_version"] = "1.20"
    lab_config["teams"][0]["quota"]["cpu"] = -1
    del lab_config["storage"]
    paths = [p.path for p in problems(lab_config)]
    assert sorted(paths) == sorted(
        [
            "platform.node_pools[0].max_node",
            "platform.node_pools[1].max_nodes",
            "platform.cluster.kubernetes_version",
            "platform.teams[0].quota.cpu",
            "platform.storage",
        ]
    )


def test_config_error_is_one_line_per_problem_prefixed_with_the_source(
    lab_config: dict[str, Any],
) -> None:
    lab_config["node_pools"][1]["capacity"] = "spot"
    lab_config["teams"][1]["name"] = "vision"
    del lab_config["workloads"]  # its job's team would be gone: a third problem
    with pytest.raises(ConfigError) as exc:
        load_platform(lab_config, source="stacks/Pulumi.x.yaml")
    lines = str(exc.value).splitlines()
    assert len(lines) == len(exc.value.problems) == 2
    assert [line.removeprefix("stacks/Pulumi.x.yaml: ") for line in lines] == [
        str(p) for p in exc.value.problems
    ]


def test_long_values_are_shortened_to_keep_the_line_readable(
    lab_config: dict[str, Any],
) -> None:
    lab_config["cluster"]["name"] = "lab-" * 100
    p = only_problem(lab_config)
    assert p.path == "platform.cluster.name"
    assert len(str(p)) < 250
    assert "(got 'lab-lab-" in str(p) and "...)" in str(p)


# --- the resolved platform ------------------------------------------------------------------


def test_onprem_gpu_pools_keep_their_counts_and_have_no_machine_type(
    lab_config: dict[str, Any],
) -> None:
    platform = load_platform(lab_config)
    a100 = platform.pool("a100")
    assert (a100.instance_type, a100.gpus_per_node, a100.min_nodes) == (None, 8, None)
    assert a100.max_gpus == 16
    assert [p.name for p in platform.gpu_pools] == ["a100", "l40s"]


def test_cloud_gpu_pools_get_their_machine_type_and_gpu_count_filled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(validate, "get_backend", lambda cloud: _AvailableCloud)
    cfg = aws_config()
    cfg["teams"] = []
    platform = load_platform(cfg)
    h100, l4, cpu = platform.pool("h100"), platform.pool("l4"), platform.pool("cpu")
    assert (h100.instance_type, h100.gpus_per_node) == ("p5.48xlarge", 8)
    assert (l4.instance_type, l4.gpus_per_node) == ("g6.xlarge", 1)
    assert cpu.gpus_per_node is None
    assert [p.min_nodes for p in platform.node_pools] == [0, 0, 0]


def test_gpu_pools_are_tainted_by_default_and_cpu_pools_are_not(
    lab_config: dict[str, Any],
) -> None:
    platform = load_platform(lab_config)
    assert platform.pool("a100").effective_taints == (GPU_TAINT,)
    assert platform.pool("a100").effective_taints[0] == Taint(
        key="nvidia.com/gpu", value="present", effect=TaintEffect.NO_SCHEDULE
    )
    assert platform.pool("cpu").effective_taints == ()


def test_configured_taints_replace_the_default(lab_config: dict[str, Any]) -> None:
    lab_config["node_pools"][1]["taints"] = [{"key": "example.com/reserved", "value": "vision"}]
    lab_config["node_pools"][2]["taints"] = []
    platform = load_platform(lab_config)
    assert platform.pool("a100").effective_taints == (
        Taint(key="example.com/reserved", value="vision", effect=TaintEffect.NO_SCHEDULE),
    )
    assert platform.pool("l40s").effective_taints == ()


def test_node_labels_carry_pool_accelerator_and_configured_labels(
    lab_config: dict[str, Any],
) -> None:
    platform = load_platform(lab_config)
    l40s = platform.pool("l40s")
    assert l40s.kind is PoolKind.GPU
    assert l40s.node_labels[POOL_LABEL] == "l40s"
    assert l40s.node_labels[ACCELERATOR_LABEL] == "l40s"
    assert l40s.node_labels["lab.internal/rack"] == "r7"
    cpu = platform.pool("cpu").node_labels
    assert cpu[POOL_LABEL] == "cpu"
    assert ACCELERATOR_LABEL not in cpu


def test_loaded_platform_is_frozen(lab_config: dict[str, Any]) -> None:
    platform = load_platform(lab_config)
    with pytest.raises(ValidationError):
        platform.cloud = "aws"
    with pytest.raises(ValidationError):
        platform.node_pools[0].max_nodes = 100
    with pytest.raises(ValidationError):
        platform.teams[0].quota.cpu = 1


# --- tenancy and extra manifests ----------------------------------------------------------


def test_a_team_cohort_must_be_declared(lab_config: dict[str, Any]) -> None:
    lab_config["teams"][0]["cohort"] = "research"
    p = only_problem(lab_config)
    assert p.path == "platform.teams[0].cohort"
    assert "add it to platform.tenancy.cohorts" in p.fix


def test_borrowing_needs_a_cohort_and_a_gpu_pool(lab_config: dict[str, Any]) -> None:
    lab_config["teams"][0]["quota"]["borrowing_limit_gpus"] = {"a100": 4, "cpu": 2}
    found = {p.path: p for p in problems(lab_config)}
    assert "has none" in found["platform.teams[0].quota.borrowing_limit_gpus.a100"].message
    assert found["platform.teams[0].quota.borrowing_limit_gpus.cpu"].message == (
        "names no GPU pool"
    )


def test_borrowing_within_a_cohort_loads(lab_config: dict[str, Any]) -> None:
    lab_config["tenancy"] = {"cohorts": [{"name": "lab", "allow_overcommit": True}]}
    lab_config["teams"][0]["cohort"] = "lab"
    lab_config["teams"][0]["quota"]["borrowing_limit_gpus"] = {"a100": 4}
    platform = load_platform(lab_config)
    assert platform.cohort("lab").allow_overcommit
    assert platform.teams[0].quota.borrowing_limit_gpus == {"a100": 4}


def test_cohort_names_are_unique(lab_config: dict[str, Any]) -> None:
    lab_config["tenancy"] = {"cohorts": [{"name": "lab"}, {"name": "lab"}]}
    assert only_problem(lab_config).path == "platform.tenancy.cohorts[1].name"


def test_default_request_above_default_limit(lab_config: dict[str, Any]) -> None:
    lab_config["tenancy"] = {"default_request_cpu": 4, "default_limit_cpu": 2}
    p = only_problem(lab_config)
    assert p.path == "platform.tenancy.default_request_cpu"
    assert p.fix == "lower it to at most 2 or raise default_limit_cpu"


@pytest.mark.parametrize("name", ["kube-system", "default", "mlstack-system", "monitoring"])
def test_a_team_cannot_take_a_reserved_namespace(lab_config: dict[str, Any], name: str) -> None:
    lab_config["teams"][0]["name"] = name
    assert only_problem(lab_config).path == "platform.teams[0].name"


def test_a_team_named_like_the_monitoring_namespace_names_that_field(
    lab_config: dict[str, Any],
) -> None:
    lab_config["tenancy"] = {"monitoring_namespace": "observability"}
    lab_config["teams"][0]["name"] = "observability"
    p = only_problem(lab_config)
    assert p.path == "platform.teams[0].name"
    assert "platform.tenancy.monitoring_namespace" in p.message
    assert "set platform.tenancy.monitoring_namespace" in p.fix


def test_pod_security_level_is_an_enum(lab_config: dict[str, Any]) -> None:
    lab_config["teams"][0]["pod_security"] = "strict"
    p = only_problem(lab_config)
    assert p.path == "platform.teams[0].pod_security"
    assert "restricted" in p.fix


def test_team_pod_security_defaults_to_the_platform_level(lab_config: dict[str, Any]) -> None:
    lab_config["tenancy"] = {"pod_security": "baseline"}
    lab_config["teams"][1]["pod_security"] = "restricted"
    platform = load_platform(lab_config)
    assert [platform.pod_security(t).value for t in platform.teams] == [
        "baseline",
        "restricted",
        "baseline",
    ]


def _configmap(name: str, namespace: str | None = "vision") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"a": "b"}}


def test_extra_manifests_need_api_version_kind_and_name(lab_config: dict[str, Any]) -> None:
    lab_config["extra_manifests"] = [{"kind": "ConfigMap", "metadata": {}}]
    p = only_problem(lab_config)
    assert p.path == "platform.extra_manifests[0]"
    assert p.message == "a Kubernetes object needs apiVersion, metadata.name"


def test_extra_manifests_are_unique_objects(lab_config: dict[str, Any]) -> None:
    lab_config["extra_manifests"] = [
        _configmap("a"),
        _configmap("a", "language"),
        _configmap("a"),
    ]
    p = only_problem(lab_config)
    assert p.path == "platform.extra_manifests[2].metadata.name"
    assert "platform.extra_manifests[0]" in p.message


def test_extra_manifests_of_typed_kinds_reject_unknown_top_level_fields(
    lab_config: dict[str, Any],
) -> None:
    cm = _configmap("a")
    cm["spec"] = {}
    lab_config["extra_manifests"] = [cm]
    p = only_problem(lab_config)
    assert p.path == "platform.extra_manifests[0].spec"
    assert "binaryData" in p.fix


def test_extra_manifests_of_crd_kinds_take_any_top_level_field(
    lab_config: dict[str, Any],
) -> None:
    lab_config["extra_manifests"] = [
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {"name": "m", "namespace": "vision"},
            "spec": {"endpoints": [{"port": "metrics"}]},
        }
    ]
    assert len(load_platform(lab_config).extra_manifests) == 1


# --- training jobs ----------------------------------------------------------------------------

#: A job of the lab's language team (8 A100s on a100 nodes of 8 GPUs; 64 CPUs, 512 GiB, 200 pods).
TRAINING_JOB = {"name": "pretrain", "team": "language", "pool": "a100"}


def with_job(cfg: dict[str, Any], **fields: Any) -> dict[str, Any]:
    cfg["workloads"] = {"training_jobs": [{**TRAINING_JOB, **fields}]}
    return cfg


def job_problem(cfg: dict[str, Any], **fields: Any) -> Problem:
    """The single problem of a config whose one training job has `fields`, as one line."""
    p = only_problem(with_job(cfg, **fields))
    line = str(p)
    assert "\n" not in line and line.startswith(f"{p.path}: ") and "; fix: " in line, line
    assert p.path.startswith("platform.workloads.training_jobs[0].") or p.path.startswith(
        "platform.registry"
    ), p.path
    return p


def test_a_training_job_fills_its_defaults(lab_config: dict[str, Any]) -> None:
    job = load_platform(with_job(lab_config)).workloads.training_jobs[0]
    assert (job.model, job.num_hosts, job.dataset, job.priority) == (
        "tiny",
        1,
        "pystdlib",
        "mlstack-training",
    )
    assert (job.cpu, job.memory_gib, job.max_restarts) == (4, 16, 3)
    # Unset: the builder's default, 300 s, or a spot pool's shorter reclaim notice
    # (tests/workloads/deploy/test_checks.py).
    assert job.termination_grace_period_s is None
    assert job.image == RELEASE == version("mlstack")
    assert job.gpus_per_host is job.steps is job.global_batch_size is job.fsdp is job.dtype is None


def test_a_training_job_needs_a_known_model(lab_config: dict[str, Any]) -> None:
    p = job_problem(lab_config, model="huge")
    assert p.path == "platform.workloads.training_jobs[0].model"
    assert p.value == "huge" and p.fix == "use one of: tiny, small, medium"


def test_a_training_job_needs_a_known_priority(lab_config: dict[str, Any]) -> None:
    p = job_problem(lab_config, priority="urgent")
    assert p.path == "platform.workloads.training_jobs[0].priority"
    assert "mlstack-training" in p.fix


@pytest.mark.parametrize("dataset", ["", "/abs", "a/../b", "data/*", "Data"])
def test_a_training_job_dataset_is_a_plain_path(lab_config: dict[str, Any], dataset: str) -> None:
    assert job_problem(lab_config, dataset=dataset).path.endswith(".dataset")


@pytest.mark.parametrize(
    ("image", "why"),
    [("latest", "pin a version tag"), ("1.0 beta", "use an image tag"), ("sha256:abc", "tag")],
)
def test_a_training_job_image_is_a_pinned_tag_or_digest(
    lab_config: dict[str, Any], image: str, why: str
) -> None:
    p = job_problem(lab_config, image=image)
    assert p.path == "platform.workloads.training_jobs[0].image"
    assert why in p.fix


def test_training_jobs_need_the_train_repository(lab_config: dict[str, Any]) -> None:
    lab_config["registry"]["repositories"] = ["serve"]
    p = job_problem(lab_config)
    assert p.path == "platform.registry.repositories"
    assert p.fix == "add train to platform.registry.repositories"


def test_gpus_per_host_fit_a_node_of_the_pool(lab_config: dict[str, Any]) -> None:
    p = job_problem(lab_config, gpus_per_host=16)
    assert p.path == "platform.workloads.training_jobs[0].gpus_per_host"
    assert p.value == 16 and p.fix == "set gpus_per_host to at most 8"


def test_a_cpu_pool_job_requests_no_gpus(lab_config: dict[str, Any]) -> None:
    p = job_problem(lab_config, pool="cpu", gpus_per_host=1)
    assert p.path == "platform.workloads.training_jobs[0].gpus_per_host"
    assert "CPU pool" in p.message


def test_all_hosts_must_fit_the_pools_nodes(lab_config: dict[str, Any]) -> None:
    lab_config["teams"][1]["quota"]["gpus"]["a100"] = 16
    lab_config["teams"][0]["quota"]["gpus"]["a100"] = 0
    p = job_problem(lab_config, num_hosts=3, model="small", global_batch_size=48)
    assert p.path == "platform.workloads.training_jobs[0].num_hosts"
    assert "need 3 nodes of pool 'a100', which has at most 2" in p.message
    assert p.fix == "lower num_hosts to at most 2 or raise platform.node_pools[1].max_nodes"
    # Half-node hosts pack two to a node: 4 of them fit the same 2 nodes.
    load_platform(with_job(lab_config, num_hosts=4, gpus_per_host=4, model="small"))


def test_the_team_gpu_quota_must_hold_the_whole_job(lab_config: dict[str, Any]) -> None:
    p = job_problem(lab_config, num_hosts=2, model="small")
    assert p.path == "platform.workloads.training_jobs[0].num_hosts"
    assert "needs 16 GPUs of pool 'a100' at once" in p.message
    assert "at most 8" in p.message
    assert p.fix.endswith("raise platform.teams[1].quota.gpus.a100 to 16")


def test_a_cohort_may_lend_the_gpus_a_job_needs(lab_config: dict[str, Any]) -> None:
    lab_config["tenancy"] = {"cohorts": [{"name": "lab"}]}
    for team in lab_config["teams"][:2]:
        team["cohort"] = "lab"
    load_platform(with_job(lab_config, num_hosts=2, model="small"))
    lab_config["teams"][1]["quota"]["borrowing_limit_gpus"] = {"a100": 4}
    assert "at most 12" in job_problem(lab_config, num_hosts=2, model="small").message


@pytest.mark.parametrize(
    ("field", "value", "quota"),
    [("cpu", 40, "quota.cpu"), ("memory_gib", 300, "quota.memory_gib")],
)
def test_the_job_fits_the_team_cpu_and_memory_quota(
    lab_config: dict[str, Any], field: str, value: float, quota: str
) -> None:
    p = job_problem(lab_config, pool="cpu", num_hosts=2, **{field: value})
    assert p.path == f"platform.workloads.training_jobs[0].{field}"
    assert f"raise platform.teams[1].{quota}" in p.fix


def test_the_job_fits_the_team_pod_quota(lab_config: dict[str, Any]) -> None:
    lab_config["teams"][1]["quota"]["pods"] = 2
    p = job_problem(lab_config, pool="cpu", num_hosts=4, cpu=1, memory_gib=1)
    assert p.path == "platform.workloads.training_jobs[0].num_hosts"
    assert "quota of 2 pods" in p.message


def test_the_global_batch_splits_evenly_over_the_devices(lab_config: dict[str, Any]) -> None:
    p = job_problem(lab_config, global_batch_size=12)
    assert p.path == "platform.workloads.training_jobs[0].global_batch_size"
    assert "over the job's 8 devices (1 hosts x 8)" in p.message
    assert p.fix == "set global_batch_size to a multiple of 8"


def test_the_model_batch_must_split_over_the_hosts_of_a_cpu_job(
    lab_config: dict[str, Any],
) -> None:
    p = job_problem(lab_config, pool="cpu", num_hosts=3, cpu=1, memory_gib=1)
    assert p.path == "platform.workloads.training_jobs[0].num_hosts"
    assert "global batch of 8 sequences" in p.message
    assert p.fix == "set global_batch_size to a multiple of 3, or change num_hosts"


def test_the_fsdp_axis_divides_the_devices(lab_config: dict[str, Any]) -> None:
    p = job_problem(lab_config, fsdp=3)
    assert p.path == "platform.workloads.training_jobs[0].fsdp"
    assert p.fix == "use a divisor of 8, e.g. 8"


def test_job_names_are_unique_per_team_only(lab_config: dict[str, Any]) -> None:
    lab_config["workloads"] = {
        "training_jobs": [
            {**TRAINING_JOB, "team": "vision"},
            {**TRAINING_JOB, "pool": "cpu"},
            {**TRAINING_JOB, "pool": "cpu", "cpu": 1},
        ]
    }
    p = only_problem(lab_config)
    assert p.path == "platform.workloads.training_jobs[2].name"
    assert p.message == "team language has 2 training jobs of this name"
    del lab_config["workloads"]["training_jobs"][2]
    assert len(load_platform(lab_config).workloads.training_jobs) == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", 0),
        ("num_hosts", 0),
        ("keep_checkpoints", 0),
        ("termination_grace_period_s", 5),
        ("cpu", 0),
        ("dtype", "float16"),
        ("export_every_steps", -1),
    ],
)
def test_training_job_field_ranges(lab_config: dict[str, Any], field: str, value: Any) -> None:
    assert job_problem(lab_config, **{field: value}).path.endswith(f".{field}")


# --- inference services -----------------------------------------------------------------------

#: A service of the lab's language team (8 A100s on a100 nodes of 8 GPUs; 64 CPUs, 512 GiB,
#: 200 pods), serving its lm-small.
INFERENCE_SERVICE = {"name": "chat", "team": "language", "pool": "a100", "model": "lm-small"}


def with_service(cfg: dict[str, Any], **fields: Any) -> dict[str, Any]:
    cfg["workloads"] = {"inference_services": [{**INFERENCE_SERVICE, **fields}]}
    return cfg


def service_problem(cfg: dict[str, Any], **fields: Any) -> Problem:
    """The single problem of a config whose one inference service has `fields`, as one line."""
    p = only_problem(with_service(cfg, **fields))
    line = str(p)
    assert "\n" not in line and line.startswith(f"{p.path}: ") and "; fix: " in line, line
    assert p.path.startswith("platform.workloads.inference_services[0].") or p.path.startswith(
        "platform.registry"
    ), p.path
    return p


def test_an_inference_service_fills_its_defaults(lab_config: dict[str, Any]) -> None:
    service = load_platform(with_service(lab_config, model=None)).workloads.inference_services[0]
    assert service.model_name == "chat"
    assert (service.replicas, service.max_replicas, service.autoscale_on) == (1, None, "cpu")
    assert (service.cpu, service.memory_gib, service.image) == (4, 16, RELEASE)
    assert service.version is service.canary is service.gpus_per_replica is None
    assert not service.internal_load_balancer


def test_the_shipped_stacks_serve_models_their_jobs_or_pipelines_make() -> None:
    for stack in ("onprem-lab", "aws-dev", "gcp-dev"):
        platform = load_platform(read_stack(stack).platform)
        # A model comes from a training job, or is a pipeline's registry model.
        trained = {(j.team, j.name) for j in platform.workloads.training_jobs} | {
            (p.team, p.model_name) for p in platform.workloads.pipelines
        }
        served = {(s.team, s.model_name) for s in platform.workloads.inference_services}
        assert served and served <= trained, stack


def test_max_replicas_is_at_least_replicas(lab_config: dict[str, Any]) -> None:
    p = service_problem(lab_config, pool="cpu", replicas=3, max_replicas=2)
    assert p.path == "platform.workloads.inference_services[0].max_replicas"
    assert p.value == 2 and p.fix == "set max_replicas to at least 3, or lower replicas"


def test_requests_per_second_autoscaling_is_refused_where_nothing_serves_the_metric(
    lab_config: dict[str, Any],
) -> None:
    """Issue 16, item 14: the HPA on mlstack_serve_requests_per_second was declared on clusters
    where no adapter serves it, so it never scaled."""
    p = service_problem(
        lab_config, autoscale_on="requests_per_second", target_requests_per_second=5
    )
    assert p.path == "platform.workloads.inference_services[0].autoscale_on"
    assert p.value == "requests_per_second"
    assert "cluster.custom_metrics_adapter: true" in p.fix and "autoscale_on: cpu" in p.fix


def test_requests_per_second_autoscaling_needs_a_target(lab_config: dict[str, Any]) -> None:
    lab_config["cluster"]["custom_metrics_adapter"] = True
    p = service_problem(lab_config, autoscale_on="requests_per_second")
    assert p.path == "platform.workloads.inference_services[0].target_requests_per_second"
    assert "e.g. 20" in p.fix
    load_platform(
        with_service(lab_config, autoscale_on="requests_per_second", target_requests_per_second=5)
    )


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"target_requests_per_second": 10}, "target_requests_per_second"),
        (
            {
                "autoscale_on": "requests_per_second",
                "target_requests_per_second": 10,
                "target_cpu_percent": 50,
            },
            "target_cpu_percent",
        ),
    ],
)
def test_a_target_of_the_other_autoscaling_mode_is_refused(
    lab_config: dict[str, Any], fields: dict[str, Any], field: str
) -> None:
    lab_config["cluster"]["custom_metrics_adapter"] = True
    p = service_problem(lab_config, **fields)
    assert p.path == f"platform.workloads.inference_services[0].{field}"
    assert "is only read when autoscale_on is" in p.message


def test_a_canary_needs_the_stable_version_pinned(lab_config: dict[str, Any]) -> None:
    p = service_problem(lab_config, replicas=2, canary={"version": "step-00002000"})
    assert p.path == "platform.workloads.inference_services[0].version"
    assert "follow `latest`" in p.message
    assert "not the canary's 'step-00002000'" in p.fix


def test_a_canary_serves_another_version(lab_config: dict[str, Any]) -> None:
    p = service_problem(lab_config, replicas=2, version="step-1", canary={"version": "step-1"})
    assert p.path == "platform.workloads.inference_services[0].canary.version"
    assert "remove canary once it is promoted" in p.fix


@pytest.mark.parametrize("canary_replicas", [2, 3])
def test_a_canary_leaves_stable_replicas(lab_config: dict[str, Any], canary_replicas: int) -> None:
    p = service_problem(
        lab_config,
        pool="cpu",
        replicas=2,
        version="step-1",
        canary={"version": "step-2", "replicas": canary_replicas},
    )
    assert p.path == "platform.workloads.inference_services[0].canary.replicas"
    assert p.value == canary_replicas and p.fix.startswith("set it below 2")


@pytest.mark.parametrize("version", ["latest", "step 1", "../step-1", "a/b"])
def test_versions_are_bundle_versions(lab_config: dict[str, Any], version: str) -> None:
    for fields, path in (
        ({"version": version}, "version"),
        ({"version": "step-1", "replicas": 2, "canary": {"version": version}}, "canary.version"),
    ):
        p = service_problem(copy.deepcopy(lab_config), **fields)
        assert p.path == f"platform.workloads.inference_services[0].{path}"
        assert "bundle version" in p.fix


@pytest.mark.parametrize("model", ["", "/abs", "a/../b", "models/*", "LM"])
def test_the_model_is_a_plain_path(lab_config: dict[str, Any], model: str) -> None:
    p = service_problem(lab_config, model=model)
    assert p.path == "platform.workloads.inference_services[0].model"
    assert p.value == model


def test_a_service_image_is_a_pinned_tag_or_digest(lab_config: dict[str, Any]) -> None:
    p = service_problem(lab_config, image="latest")
    assert p.path == "platform.workloads.inference_services[0].image"
    assert "pin a version tag" in p.fix


def test_services_need_the_serve_repository(lab_config: dict[str, Any]) -> None:
    lab_config["registry"]["repositories"] = ["train"]
    p = service_problem(lab_config)
    assert p.path == "platform.registry.repositories"
    assert p.fix == "add serve to platform.registry.repositories"


def test_an_internal_load_balancer_needs_the_teams_permission(lab_config: dict[str, Any]) -> None:
    p = service_problem(lab_config, internal_load_balancer=True)
    assert p.path == "platform.workloads.inference_services[0].internal_load_balancer"
    assert p.fix.startswith("set platform.teams[1].allow_load_balancers: true")
    lab_config["teams"][1]["allow_load_balancers"] = True
    load_platform(with_service(lab_config, internal_load_balancer=True))


def test_a_cpu_pool_service_requests_no_gpus(lab_config: dict[str, Any]) -> None:
    p = service_problem(lab_config, pool="cpu", gpus_per_replica=1)
    assert p.path == "platform.workloads.inference_services[0].gpus_per_replica"
    assert "CPU pool" in p.message
    load_platform(with_service(lab_config, pool="cpu", gpus_per_replica=0))


def test_a_gpu_pool_service_requests_gpus(lab_config: dict[str, Any]) -> None:
    p = service_problem(lab_config, gpus_per_replica=0)
    assert p.path == "platform.workloads.inference_services[0].gpus_per_replica"
    assert p.fix == "request at least 1, or serve from a CPU pool"


def test_gpus_per_replica_fit_a_node_of_the_pool(lab_config: dict[str, Any]) -> None:
    p = service_problem(lab_config, gpus_per_replica=16)
    assert p.path == "platform.workloads.inference_services[0].gpus_per_replica"
    assert p.value == 16 and p.fix == "set gpus_per_replica to at most 8"


def test_the_pool_holds_every_replica_and_the_rolling_update_surge(
    lab_config: dict[str, Any],
) -> None:
    lab_config["teams"][1]["quota"]["gpus"]["a100"] = 16
    lab_config["teams"][0]["quota"]["gpus"]["a100"] = 0
    # 4 GPUs a replica, 2 a node, 2 nodes: 4 pods at once, so 3 replicas and the surge pod.
    load_platform(with_service(copy.deepcopy(lab_config), gpus_per_replica=4, max_replicas=3))
    p = service_problem(lab_config, gpus_per_replica=4, max_replicas=4)
    assert p.path == "platform.workloads.inference_services[0].max_replicas"
    assert "5 pods at once (4 replicas and 1 surge pod of" in p.message
    assert p.fix == "lower max_replicas to at most 3 or raise platform.node_pools[1].max_nodes"


def test_the_team_gpu_quota_holds_the_service_at_its_largest(lab_config: dict[str, Any]) -> None:
    load_platform(with_service(copy.deepcopy(lab_config), replicas=2, max_replicas=7))
    p = service_problem(lab_config, replicas=2, max_replicas=8)
    assert p.path == "platform.workloads.inference_services[0].max_replicas"
    assert "needs up to 9 GPUs of pool 'a100' at once" in p.message
    assert "at most 8" in p.message
    assert p.fix == (
        "lower max_replicas to at most 7, or raise platform.teams[1].quota.gpus.a100 to 9"
    )


def test_a_canary_adds_its_own_surge_pod(lab_config: dict[str, Any]) -> None:
    p = service_problem(lab_config, replicas=7, version="step-1", canary={"version": "step-2"})
    assert p.path == "platform.workloads.inference_services[0].replicas"
    assert "needs up to 9 GPUs" in p.message and "2 surge pods" in p.message


def test_a_cohort_may_lend_the_gpus_a_service_needs(lab_config: dict[str, Any]) -> None:
    lab_config["tenancy"] = {"cohorts": [{"name": "lab"}]}
    for team in lab_config["teams"][:2]:
        team["cohort"] = "lab"
    load_platform(with_service(copy.deepcopy(lab_config), max_replicas=12))
    lab_config["teams"][1]["quota"]["borrowing_limit_gpus"] = {"a100": 2}
    p = service_problem(lab_config, max_replicas=12)
    assert "at most 10" in p.message


def test_a_team_without_gpus_in_the_pool_cannot_serve_there(lab_config: dict[str, Any]) -> None:
    p = service_problem(lab_config, pool="l40s")
    assert "may hold at most 0" in p.message
    assert p.fix == "raise platform.teams[1].quota.gpus.l40s to 2"


@pytest.mark.parametrize(
    ("field", "value", "quota"),
    [("cpu", 20, "quota.cpu"), ("memory_gib", 200, "quota.memory_gib")],
)
def test_the_service_fits_the_team_cpu_and_memory_quota(
    lab_config: dict[str, Any], field: str, value: float, quota: str
) -> None:
    p = service_problem(lab_config, pool="cpu", replicas=2, max_replicas=3, **{field: value})
    assert p.path == f"platform.workloads.inference_services[0].{field}"
    assert "4 pods at most" in p.message
    assert f"raise platform.teams[1].{quota}" in p.fix


def test_the_service_fits_the_team_pod_quota(lab_config: dict[str, Any]) -> None:
    lab_config["teams"][1]["quota"]["pods"] = 3
    p = service_problem(lab_config, pool="cpu", replicas=3, cpu=1, memory_gib=1)
    assert p.path == "platform.workloads.inference_services[0].replicas"
    assert "quota of 3 pods" in p.message


def test_service_names_are_unique_per_team_only(lab_config: dict[str, Any]) -> None:
    lab_config["workloads"] = {
        "inference_services": [
            {**INFERENCE_SERVICE, "team": "vision"},
            {**INFERENCE_SERVICE, "pool": "cpu"},
            {**INFERENCE_SERVICE, "pool": "cpu", "cpu": 1},
        ]
    }
    p = only_problem(lab_config)
    assert p.path == "platform.workloads.inference_services[2].name"
    assert p.message == "team language has 2 services of this name"
    del lab_config["workloads"]["inference_services"][2]
    assert len(load_platform(lab_config).workloads.inference_services) == 2


def test_a_service_is_not_named_like_a_training_job_of_its_team(
    lab_config: dict[str, Any],
) -> None:
    lab_config["workloads"]["inference_services"] = [
        {"name": "lm-small", "team": "language", "pool": "cpu"}
    ]
    p = only_problem(lab_config)
    assert p.path == "platform.workloads.inference_services[0].name"
    assert "headless Service" in p.message
    assert p.fix == "give the service another name, e.g. 'lm-small-api', and set model: lm-small"
    # Another team's job of that name shares no namespace.
    lab_config["workloads"]["inference_services"][0]["team"] = "vision"
    load_platform(lab_config)


def test_a_service_is_not_named_like_another_services_canary(lab_config: dict[str, Any]) -> None:
    canaried = {"version": "step-1", "replicas": 2, "canary": {"version": "step-2"}}
    lab_config["workloads"] = {
        "inference_services": [
            {**INFERENCE_SERVICE, "pool": "cpu", **canaried},
            {**INFERENCE_SERVICE, "pool": "cpu", "name": "chat-canary"},
        ]
    }
    p = only_problem(lab_config)
    assert p.path == "platform.workloads.inference_services[1].name"
    assert "canary Deployment of platform.workloads.inference_services[0]" in p.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("replicas", 0),
        ("max_replicas", 0),
        ("target_cpu_percent", 0),
        ("target_cpu_percent", 101),
        ("target_requests_per_second", 0),
        ("gpus_per_replica", -1),
        ("cpu", 0),
        ("memory_gib", 0),
        ("max_batch", 0),
        ("max_queue", 0),
        ("reload_interval_s", 0),
        ("startup_timeout_s", 10),
        # Less than the 5 s the pod keeps serving after it is told to stop, plus a drain.
        ("termination_grace_period_s", 10),
        ("autoscale_on", "memory"),
        ("allow_from_namespaces", ["Apps"]),
        ("canary", {"alias": "Canary"}),
        ("alias", "latest"),
        ("canary", {"version": "step-2", "weight": 10}),
    ],
)
def test_inference_service_field_ranges(lab_config: dict[str, Any], field: str, value: Any) -> None:
    p = service_problem(lab_config, **{field: value})
    assert p.path.startswith(f"platform.workloads.inference_services[0].{field}")


def test_every_problem_of_a_service_is_reported_at_once(lab_config: dict[str, Any]) -> None:
    lab_config["cluster"]["custom_metrics_adapter"] = True
    lab_config["workloads"]["inference_services"] = [
        {
            "name": "lm-small",
            "team": "language",
            "pool": "a100",
            "max_replicas": 9,
            "internal_load_balancer": True,
            "autoscale_on": "requests_per_second",
        }
    ]
    found = {p.path.rsplit(".", 1)[1] for p in problems(lab_config)}
    assert found == {"name", "internal_load_balancer", "target_requests_per_second", "max_replicas"}
