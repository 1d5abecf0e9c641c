"""The on-prem backend's own rules, called directly: one passing and one failing case each."""

from __future__ import annotations

from typing import Any

import pytest

from mlstack.components.features import Feature
from mlstack.components.onprem.backend import OnPremBackend
from mlstack.stacks.schema import Platform


def _platform(cfg: dict[str, Any]) -> Platform:
    """The schema's view of a config, before the shared cross-field checks."""
    return Platform.model_validate(cfg)


def test_the_lab_stack_passes(lab_config: dict[str, Any]) -> None:
    assert OnPremBackend.check(_platform(lab_config)) == []


def test_min_nodes_is_rejected_because_pools_do_not_scale(lab_config: dict[str, Any]) -> None:
    lab_config["node_pools"][2]["min_nodes"] = 0
    (p,) = OnPremBackend.check(_platform(lab_config))
    assert p.path == "platform.node_pools[2].min_nodes"
    assert p.value == 0
    assert OnPremBackend.unsupported[Feature.AUTOSCALING] in p.message


def test_a_pool_without_nodes(lab_config: dict[str, Any]) -> None:
    del lab_config["node_pools"][1]["nodes"]
    (p,) = OnPremBackend.check(_platform(lab_config))
    assert p.path == "platform.node_pools[1].nodes"


def test_max_nodes_must_equal_the_nodes_listed(lab_config: dict[str, Any]) -> None:
    lab_config["node_pools"][0]["max_nodes"] = 5
    (p,) = OnPremBackend.check(_platform(lab_config))
    assert p.path == "platform.node_pools[0].max_nodes"
    assert p.value == 5
    assert "set max_nodes to 4" in p.fix


@pytest.mark.parametrize("node", ["DGX-01", "dgx_01", "-dgx", "dgx-01."])
def test_node_names_must_be_kubernetes_node_names(lab_config: dict[str, Any], node: str) -> None:
    lab_config["node_pools"][1]["nodes"][1] = node
    (p,) = OnPremBackend.check(_platform(lab_config))
    assert p.path == "platform.node_pools[1].nodes[1]"
    assert p.value == node


def test_node_names_may_be_fully_qualified(lab_config: dict[str, Any]) -> None:
    lab_config["node_pools"][1]["nodes"] = ["dgx-01.lab.internal", "dgx-02.lab.internal"]
    assert OnPremBackend.check(_platform(lab_config)) == []


def test_a_node_listed_in_two_pools_names_the_first_pool(lab_config: dict[str, Any]) -> None:
    lab_config["node_pools"][2]["nodes"][0] = "cpu-03"
    (p,) = OnPremBackend.check(_platform(lab_config))
    assert p.path == "platform.node_pools[2].nodes[0]"
    assert p.value == "cpu-03"
    assert "'cpu'" in p.message


def test_a_node_listed_twice_in_one_pool(lab_config: dict[str, Any]) -> None:
    lab_config["node_pools"][1]["nodes"] = ["dgx-01", "dgx-01"]
    (p,) = OnPremBackend.check(_platform(lab_config))
    assert p.path == "platform.node_pools[1].nodes[1]"


def test_spot_and_reserved_capacity_are_declared_unsupported_with_a_reason() -> None:
    for feature in (Feature.SPOT_CAPACITY, Feature.RESERVED_CAPACITY):
        assert OnPremBackend.unsupported[feature].strip()
    assert "capacity.on-demand" not in OnPremBackend.unsupported


def test_s3_keys_are_required_and_the_kubeconfig_only_without_a_path(
    lab_config: dict[str, Any],
) -> None:
    with_path = _platform(lab_config)
    assert OnPremBackend.required_secret_keys(with_path) == ("s3AccessKeyId", "s3SecretAccessKey")
    del lab_config["onprem"]["kubeconfig_path"]
    without_path = _platform(lab_config)
    assert set(OnPremBackend.required_secret_keys(without_path)) == {
        "s3AccessKeyId",
        "s3SecretAccessKey",
        "kubeconfig",
    }
    assert "kubeconfig" in OnPremBackend.optional_secrets


def test_a_kubeconfig_path_under_another_users_home_is_refused(
    lab_config: dict[str, Any],
) -> None:
    lab_config["onprem"]["kubeconfig_path"] = "~ops/.kube/lab.yaml"
    [problem] = OnPremBackend.check(_platform(lab_config))
    assert problem.path == "platform.onprem.kubeconfig_path"
    assert "'~/...'" in problem.fix
