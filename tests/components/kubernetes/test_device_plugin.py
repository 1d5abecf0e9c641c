"""The NVIDIA device plugin's Helm values: only on GPU nodes, tolerating what those nodes carry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kubernetes_validate

from mlstack.components.kubernetes.addons import NVIDIA_DEVICE_PLUGIN
from mlstack.components.kubernetes.device_plugin import (
    NvidiaDevicePlugin,
    NvidiaDevicePluginArgs,
    device_plugin_values,
)
from mlstack.stacks.names import POOL_KIND_LABEL
from mlstack.stacks.plan import PlannedResource
from mlstack.stacks.schema import NodePool

K8S = "1.33.0"
RunMocked = Callable[[Callable[[], object]], list[PlannedResource]]


def _gpu_pool(name: str, **fields: Any) -> NodePool:
    return NodePool.model_validate(
        {"name": name, "kind": "gpu", "accelerator": "l4", "gpus_per_node": 1, "max_nodes": 1}
        | fields
    )


def _as_pod(values: dict[str, Any]) -> dict[str, Any]:
    """The scheduling part of the values, in the pod spec the chart puts them into."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "nvidia-device-plugin"},
        "spec": {
            "containers": [{"name": "plugin", "image": "nvcr.io/nvidia/k8s-device-plugin"}],
            "affinity": values["affinity"],
            "tolerations": values["tolerations"],
            "priorityClassName": values["priorityClassName"],
        },
    }


def test_runs_only_on_gpu_pool_nodes_and_tolerates_the_gpu_taint() -> None:
    values = device_plugin_values([_gpu_pool("a"), _gpu_pool("b")])
    kubernetes_validate.validate(_as_pod(values), K8S, strict=True)
    # The chart's default required affinity (NFD labels) is replaced by one on the pool kind.
    assert values["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == {
        "nodeSelectorTerms": [
            {"matchExpressions": [{"key": POOL_KIND_LABEL, "operator": "In", "values": ["gpu"]}]}
        ]
    }
    assert "nodeSelector" not in values
    assert values["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    assert values["priorityClassName"] == "system-node-critical"


def test_tolerates_every_taint_key_of_every_gpu_pool_once() -> None:
    pools = [
        _gpu_pool("a"),
        _gpu_pool("b", taints=[{"key": "example.com/team", "value": "x", "effect": "NoExecute"}]),
        _gpu_pool("c", taints=[]),
        _gpu_pool("d", taints=[{"key": "example.com/team", "value": "y"}]),
    ]
    values = device_plugin_values(pools)
    kubernetes_validate.validate(_as_pod(values), K8S, strict=True)
    assert values["tolerations"] == [
        {"key": "example.com/team", "operator": "Exists"},
        {"key": "nvidia.com/gpu", "operator": "Exists"},
    ]


def test_untainted_gpu_pools_need_no_toleration() -> None:
    values = device_plugin_values([_gpu_pool("a", taints=[])])
    kubernetes_validate.validate(_as_pod(values), K8S, strict=True)
    assert values["tolerations"] == []


def test_release_is_the_pinned_chart_in_kube_system(run_mocked: RunMocked) -> None:
    resources = run_mocked(
        lambda: NvidiaDevicePlugin("gpu", NvidiaDevicePluginArgs(gpu_pools=[_gpu_pool("a")]))
    )
    (release,) = [r for r in resources if r.type == "kubernetes:helm.sh/v3:Release"]
    assert release.name == "gpu-release"
    assert release.inputs["name"] == "nvidia-device-plugin"
    assert (release.inputs["chart"], release.inputs["version"]) == (
        NVIDIA_DEVICE_PLUGIN.chart,
        NVIDIA_DEVICE_PLUGIN.version,
    )
    assert release.inputs["namespace"] == "kube-system"
    assert release.inputs["atomic"] is True
