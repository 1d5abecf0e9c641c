"""Extra Kubernetes objects from the stack config, deployed as they are written.

They exist for the small things a platform needs beside mlstack's own objects (a StorageClass,
a team's CronJob); the policy pack checks them like everything else, which is the point of
declaring them here rather than applying them by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi

from mlstack.components import Options
from mlstack.components.kubernetes.resources import declare


def extra_manifest_key(manifest: Mapping[str, Any]) -> str:
    """A manifest's logical resource name: kind, group, namespace and name (not its position,
    so reordering the list replaces nothing)."""
    metadata = manifest["metadata"]
    namespace = metadata.get("namespace") or "cluster"
    group = manifest["apiVersion"].rpartition("/")[0] or "core"
    return f"{manifest['kind'].lower()}.{group}_{namespace}_{metadata['name']}"


@dataclass(frozen=True)
class ExtraManifestsArgs:
    #: Kubernetes objects as written in the stack config (`platform.extra_manifests`).
    manifests: Sequence[Mapping[str, Any]]


class ExtraManifests(pulumi.ComponentResource):
    def __init__(self, name: str, args: ExtraManifestsArgs, opts: Options = None) -> None:
        super().__init__("mlstack:kubernetes:ExtraManifests", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.resources = [
            declare(f"{name}-{extra_manifest_key(m)}", m, child) for m in args.manifests
        ]
        self.register_outputs({"count": len(self.resources)})
