"""The NVIDIA device plugin: advertises `nvidia.com/gpu` on GPU nodes so pods can request GPUs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi

from mlstack.components import Options
from mlstack.components.kubernetes.addons import NVIDIA_DEVICE_PLUGIN
from mlstack.stacks.names import POOL_KIND_LABEL
from mlstack.stacks.schema import NodePool, PoolKind

#: The plugin mounts the kubelet's device-plugin socket directory, which the restricted Pod
#: Security level forbids; kube-system is where clusters admit such node agents.
NAMESPACE = "kube-system"


def device_plugin_values(gpu_pools: Sequence[NodePool]) -> dict[str, Any]:
    """Helm values: run only on GPU pool nodes, tolerating every taint those pools carry."""
    keys = sorted({t.key for p in gpu_pools for t in p.effective_taints})
    return {
        "nodeSelector": {POOL_KIND_LABEL: PoolKind.GPU.value},
        "tolerations": [{"key": key, "operator": "Exists"} for key in keys],
        "priorityClassName": "system-node-critical",
        "failOnInitError": True,
    }


@dataclass(frozen=True)
class NvidiaDevicePluginArgs:
    #: The pools whose nodes the plugin runs on; it tolerates their taints.
    gpu_pools: Sequence[NodePool]


class NvidiaDevicePlugin(pulumi.ComponentResource):
    """The device plugin's Helm release, pinned, on the GPU pools' nodes."""

    def __init__(self, name: str, args: NvidiaDevicePluginArgs, opts: Options = None) -> None:
        super().__init__("mlstack:kubernetes:NvidiaDevicePlugin", name, None, opts)
        self.release = NVIDIA_DEVICE_PLUGIN.release(
            f"{name}-release",
            name="nvidia-device-plugin",
            namespace=NAMESPACE,
            parent=self,
            values=device_plugin_values(args.gpu_pools),
        )
        self.register_outputs({"release": self.release.name})
