"""On-prem node pools: existing nodes, labelled so workloads can select them; the operator
taints them (see node_patch_manifest)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi

from mlstack.components import Options
from mlstack.components.kubernetes.resources import declare
from mlstack.stacks.names import POOL_TAINTS_ANNOTATION
from mlstack.stacks.schema import NodePool, Taint


def taints_annotation(taints: Sequence[Taint]) -> str:
    """`taints` in kubectl's `key=value:Effect` syntax, comma separated."""
    return ",".join(
        f"{t.key}={t.value}:{t.effect.value}" if t.value else f"{t.key}:{t.effect.value}"
        for t in taints
    )


def parse_taints(text: str) -> tuple[dict[str, str], ...]:
    """The taints of a `taints_annotation`, as Kubernetes spells them."""
    taints = []
    for item in filter(None, text.split(",")):
        key_value, _, effect = item.rpartition(":")
        key, _, value = key_value.partition("=")
        taints.append({"key": key, "value": value, "effect": effect})
    return tuple(taints)


def node_patch_manifest(node: str, pool: NodePool) -> dict[str, Any]:
    """The fields mlstack owns on a node of `pool`: its pool labels, and an annotation naming
    the taints the pool declares. The taints themselves are not applied.

    `spec.taints` is an atomic list (`x-kubernetes-list-type: atomic` in the Kubernetes
    OpenAPI for NodeSpec), so under server-side apply one manager owns the whole list: applying
    mlstack's taints conflicts with every other manager's (kubelet's registration taints, the
    node lifecycle controller's `node.kubernetes.io/*`, the autoscaler's), and forcing it drops
    theirs until they write the list back (fluxcd/kustomize-controller#772). Labels and
    annotations are maps, owned key by key, so mlstack applies only those; the operator taints
    the nodes at registration (README, "On-prem"), and the pool rules read the annotation.
    """
    metadata: dict[str, Any] = {"name": node, "labels": pool.node_labels}
    if pool.effective_taints:
        metadata["annotations"] = {POOL_TAINTS_ANNOTATION: taints_annotation(pool.effective_taints)}
    return {"apiVersion": "v1", "kind": "Node", "metadata": metadata}


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
