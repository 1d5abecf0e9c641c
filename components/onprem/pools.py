"""On-prem node pools: existing nodes, labelled and tainted so workloads can select them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from mlstack.components import Options
from mlstack.components.kubernetes.resources import declare
from mlstack.stacks.schema import NodePool


def node_patch_manifest(node: str, pool: NodePool) -> dict[str, Any]:
    """The fields mlstack owns on a node of `pool`: its pool labels and taints.

    A pool without taints sends no taint list at all: under server-side apply an empty list
    would still claim the field, and mlstack must not own taints it never set.
    """
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node, "labels": pool.node_labels},
    }
    if pool.effective_taints:
        manifest["spec"] = {
            "taints": [
                {"key": t.key, "value": t.value, "effect": t.effect.value}
                for t in pool.effective_taints
            ]
        }
    return manifest


@dataclass(frozen=True)
class LabeledNodePoolArgs:
    #: A checked pool of the stack config; its `nodes` are the existing nodes to label.
    pool: NodePool


class LabeledNodePool(pulumi.ComponentResource):
    """One pool of existing nodes: a server-side-apply patch per node."""

    def __init__(self, name: str, args: LabeledNodePoolArgs, opts: Options = None) -> None:
        # 'NodePool', not 'LabeledNodePool': the token is part of every patch's URN, and
        # renaming it would replace the patches (and drop the labels) on deployed clusters.
        super().__init__("mlstack:onprem:NodePool", name, None, opts)
        pool = args.pool
        child = pulumi.ResourceOptions(parent=self)
        # '_' appears in neither pool nor node names, so no two pools' patches share a URN
        # (pool 'gpu' + node 'a-1' vs pool 'gpu-a' + node '1' would with '-').
        self.patches = [
            declare(f"{name}_{node}", node_patch_manifest(node, pool), child, patch=True)
            for node in pool.nodes or ()
        ]
        self.register_outputs({"nodes": list(pool.nodes or ())})
