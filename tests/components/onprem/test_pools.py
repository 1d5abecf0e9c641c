"""The node patch mlstack applies to each existing node: its pool's labels and taints only."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from mlstack.components.onprem.pools import node_patch_manifest
from mlstack.stacks.names import ACCELERATOR_LABEL, CAPACITY_LABEL, POOL_KIND_LABEL, POOL_LABEL
from mlstack.stacks.schema import NodePool

K8S = "1.33.0"


def _pool(**fields: Any) -> NodePool:
    return NodePool.model_validate({"max_nodes": 2, "nodes": ["n-1", "n-2"], **fields})


GPU = _pool(name="a100", kind="gpu", accelerator="a100-80gb", gpus_per_node=8)
CPU = _pool(name="cpu", kind="cpu", labels={"lab.internal/rack": "r7"})


def test_gpu_node_gets_pool_labels_and_the_gpu_taint() -> None:
    manifest = node_patch_manifest("dgx-01", GPU)
    kubernetes_validate.validate(manifest, K8S, strict=True)
    assert (manifest["apiVersion"], manifest["kind"]) == ("v1", "Node")
    assert manifest["metadata"]["name"] == "dgx-01"
    assert manifest["metadata"]["labels"] == {
        POOL_LABEL: "a100",
        POOL_KIND_LABEL: "gpu",
        CAPACITY_LABEL: "on-demand",
        ACCELERATOR_LABEL: "a100-80gb",
    }
    assert manifest["spec"]["taints"] == [
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    ]


def test_cpu_node_gets_configured_labels_and_claims_no_taints() -> None:
    manifest = node_patch_manifest("cpu-01", CPU)
    kubernetes_validate.validate(manifest, K8S, strict=True)
    assert manifest["metadata"]["labels"] == {
        POOL_LABEL: "cpu",
        POOL_KIND_LABEL: "cpu",
        CAPACITY_LABEL: "on-demand",
        "lab.internal/rack": "r7",
    }
    # Server-side apply: even an empty list would make mlstack own the node's taints.
    assert "taints" not in manifest.get("spec", {})


def test_a_gpu_pool_with_taints_turned_off_claims_no_taints() -> None:
    manifest = node_patch_manifest("dgx-01", GPU.model_copy(update={"taints": ()}))
    kubernetes_validate.validate(manifest, K8S, strict=True)
    assert "taints" not in manifest.get("spec", {})


@pytest.mark.parametrize("effect", ["NoSchedule", "PreferNoSchedule", "NoExecute"])
def test_configured_taints_replace_the_gpu_taint(effect: str) -> None:
    pool = _pool(
        name="a100",
        kind="gpu",
        accelerator="a100-80gb",
        gpus_per_node=8,
        taints=[{"key": "example.com/team", "value": "vision", "effect": effect}],
    )
    manifest = node_patch_manifest("dgx-01", pool)
    kubernetes_validate.validate(manifest, K8S, strict=True)
    assert manifest["spec"]["taints"] == [
        {"key": "example.com/team", "value": "vision", "effect": effect}
    ]
