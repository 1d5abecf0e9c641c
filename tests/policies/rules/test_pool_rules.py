"""Pool rules (policies/rules/pools.py): GPU pools are tainted, whatever declared them."""

from __future__ import annotations

import pytest
from rule_args import fails, messages, resource_args, wire

from mlstack.policies.rules import pools
from mlstack.stacks.names import (
    CAPACITY_LABEL,
    GPU_TAINT_KEY,
    POOL_KIND_LABEL,
    POOL_LABEL,
    POOL_TAINTS_ANNOTATION,
)
from mlstack.stacks.plan import Plan

NODE_PATCH = "kubernetes:core/v1:NodePatch"
GPU_TAINT = {"key": GPU_TAINT_KEY, "value": "present", "effect": "NoSchedule"}


def node(
    name: str = "dgx-01",
    pool: str | None = "a100",
    kind: str | None = "gpu",
    taints: list[dict] | None = None,
    capacity: str | None = None,
) -> dict:
    labels = {POOL_LABEL: pool, POOL_KIND_LABEL: kind, CAPACITY_LABEL: capacity}
    metadata = {"name": name, "labels": {k: v for k, v in labels.items() if v is not None}}
    manifest = {"apiVersion": "v1", "kind": "Node", "metadata": metadata}
    if taints is not None:
        # On-prem patches name their pool's taints in an annotation; they do not apply them.
        metadata["annotations"] = {
            POOL_TAINTS_ANNOTATION: ",".join(
                f"{t['key']}={t['value']}:{t['effect']}" for t in taints
            )
        }
    return manifest


def check(manifest: dict, resource_type: str = NODE_PATCH) -> list[str]:
    return messages(pools.gpu_pools_tainted, resource_args(resource_type, manifest))


def test_a_node_patch_is_read_as_its_pool() -> None:
    found = pools.pool_of(NODE_PATCH, wire(node(taints=[GPU_TAINT], capacity="spot")))
    assert found == pools.PoolNodes(
        pool="a100",
        kind="gpu",
        capacity="spot",
        taints=((GPU_TAINT_KEY, "present", "NoSchedule"),),
    )
    assert found is not None
    assert dict(found.labels) == {
        CAPACITY_LABEL: "spot",
        POOL_KIND_LABEL: "gpu",
        POOL_LABEL: "a100",
    }


def test_pool_kind_and_capacity_default_to_cpu_on_demand() -> None:
    found = pools.pool_of(NODE_PATCH, wire(node(pool="cpu", kind=None)))
    assert found is not None
    assert (found.kind, found.capacity, found.taints) == ("cpu", "on-demand", ())


def test_nodes_outside_any_pool_and_other_types_are_not_pools() -> None:
    assert pools.pool_of(NODE_PATCH, wire(node(pool=None))) is None
    assert pools.pool_of("kubernetes:core/v1:ConfigMap", wire(node())) is None


def test_a_gpu_pool_with_the_gpu_taint_passes() -> None:
    extra = {"key": "lab.internal/maintenance", "value": "true", "effect": "NoExecute"}
    assert check(node(taints=[extra, GPU_TAINT])) == []


def test_cpu_pools_need_no_taint() -> None:
    assert check(node(name="cpu-01", pool="cpu", kind="cpu")) == []
    assert check(node(name="cpu-01", pool="cpu", kind=None)) == []


def test_untainted_gpu_nodes_of_other_types_are_not_checked() -> None:
    assert check(node(taints=[]), resource_type="kubernetes:core/v1:ConfigMap") == []


@fails("gpu-pools-tainted")
@pytest.mark.parametrize(
    "taints",
    [
        None,
        [],
        [{"key": GPU_TAINT_KEY, "value": "present", "effect": "PreferNoSchedule"}],
        [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}],
        # GPU pods tolerate `present` (or the key with Exists): another value strands them.
        [{"key": GPU_TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
    ],
)
def test_a_gpu_pool_without_the_no_schedule_gpu_taint_is_reported(taints: list | None) -> None:
    [message] = check(node(taints=taints))
    assert message.startswith(
        f"GPU pool 'a100' is not tainted {GPU_TAINT_KEY}=present:NoSchedule, so any pod can "
        "fill its GPU nodes"
    )
    assert "include that taint" in message


def test_every_gpu_node_of_the_lab_stack_passes(lab_plan: Plan) -> None:
    patches = lab_plan.of_type(NODE_PATCH)
    assert len(patches) == 9
    for r in patches:
        assert messages(pools.gpu_pools_tainted, resource_args(r.type, r.inputs, name=r.name)) == []


def test_node_patches_naming_their_taints_in_the_annotation_pass(lab_plan: Plan) -> None:
    for r in lab_plan.resources:
        if r.type == NODE_PATCH:
            assert (
                messages(pools.node_patches_leave_taints, resource_args(NODE_PATCH, r.inputs)) == []
            )


@fails("node-patches-leave-taints")
def test_a_node_patch_that_sets_taints_is_reported() -> None:
    """What on-prem pools did before issue 16: the patch owned the node's whole taint list."""
    manifest = node(taints=None)
    manifest["spec"] = {"taints": [GPU_TAINT]}
    [message] = messages(pools.node_patches_leave_taints, resource_args(NODE_PATCH, manifest))
    assert "atomic" in message and POOL_TAINTS_ANNOTATION in message
