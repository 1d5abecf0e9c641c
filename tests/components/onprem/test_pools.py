"""The node patch mlstack applies to each existing node: its pool's labels, and its taints
named in an annotation, never applied (NodeSpec.taints is an atomic list under server-side apply;
owning it would fight every other manager's taints)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from mlstack.components.onprem.pools import node_patch_manifest, parse_taints, taints_annotation
from mlstack.stacks.names import (
    ACCELERATOR_LABEL,
    CAPACITY_LABEL,
    POOL_KIND_LABEL,
    POOL_LABEL,
    POOL_TAINTS_ANNOTATION,
)
from mlstack.stacks.plan import Plan
from mlstack.stacks.schema import NodePool, Taint

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
    assert manifest["metadata"]["annotations"] == {
        POOL_TAINTS_ANNOTATION: "nvidia.com/gpu=present:NoSchedule"
    }
    # Server-side apply: the whole list would be mlstack's (x-kubernetes-list-type: atomic).
    assert "spec" not in manifest


def test_taints_list_is_atomic_in_the_kubernetes_openapi() -> None:
    """Why the patch leaves spec.taints alone: the schema mlstack validates against says so."""
    schema = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    nodespec = json.loads((schema / f"v{K8S}-local" / "nodespec-v1.json").read_text())
    assert nodespec["properties"]["taints"]["x-kubernetes-list-type"] == "atomic"


def test_no_patch_of_the_lab_stack_applies_taints(lab_plan: Plan) -> None:
    patches = [r for r in lab_plan.resources if r.type == "kubernetes:core/v1:NodePatch"]
    assert patches
    for patch in patches:
        assert "spec" not in patch.inputs, patch.name
    gpu = [p for p in patches if p.inputs["metadata"]["labels"][POOL_KIND_LABEL] == "gpu"]
    assert gpu and all(
        p.inputs["metadata"]["annotations"][POOL_TAINTS_ANNOTATION]
        == "nvidia.com/gpu=present:NoSchedule"
        for p in gpu
    )


def test_cpu_node_gets_configured_labels_and_claims_no_taints() -> None:
    manifest = node_patch_manifest("cpu-01", CPU)
    kubernetes_validate.validate(manifest, K8S, strict=True)
    assert manifest["metadata"]["labels"] == {
        POOL_LABEL: "cpu",
        POOL_KIND_LABEL: "cpu",
        CAPACITY_LABEL: "on-demand",
        "lab.internal/rack": "r7",
    }
    assert "spec" not in manifest
    assert "annotations" not in manifest["metadata"]


def test_a_gpu_pool_with_taints_turned_off_claims_no_taints() -> None:
    manifest = node_patch_manifest("dgx-01", GPU.model_copy(update={"taints": ()}))
    kubernetes_validate.validate(manifest, K8S, strict=True)
    assert "spec" not in manifest
    assert "annotations" not in manifest["metadata"]


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
    assert manifest["metadata"]["annotations"] == {
        POOL_TAINTS_ANNOTATION: f"example.com/team=vision:{effect}"
    }
    assert parse_taints(manifest["metadata"]["annotations"][POOL_TAINTS_ANNOTATION]) == (
        {"key": "example.com/team", "value": "vision", "effect": effect},
    )


def test_a_taint_without_a_value_round_trips() -> None:
    text = taints_annotation([Taint(key="example.com/dedicated")])
    assert text == "example.com/dedicated:NoSchedule"
    assert parse_taints(text) == (
        {"key": "example.com/dedicated", "value": "", "effect": "NoSchedule"},
    )
