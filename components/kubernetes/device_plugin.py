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


def gpu_node_affinity() -> dict[str, Any]:
    """A required node affinity on mlstack's own GPU pool label.

    The chart's default `affinity` requires NFD's PCI or CPU-vendor label or
    `nvidia.com/gpu.present=true` (values.yaml at v0.18.2; chart_defaults.py), none of which
    mlstack's pools carry, and the DaemonSet template renders it beside `nodeSelector`, so the
    two would be ANDed and the DaemonSet would get no pods (NVIDIA/k8s-device-plugin#607).
    Helm merges maps but replaces lists, so this `nodeSelectorTerms` list replaces the default
    one; nulling `affinity` is not an option, as Pulumi's Python SDK drops None from values
    (pulumi/pulumi-kubernetes#3811).
    """
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": POOL_KIND_LABEL,
                                "operator": "In",
                                "values": [PoolKind.GPU.value],
                            }
                        ]
                    }
                ]
            }
        }
    }


def device_plugin_values(gpu_pools: Sequence[NodePool]) -> dict[str, Any]:
    """Helm values: run exactly on GPU pool nodes, tolerating every taint those pools carry.

    The placement is the affinity alone (the chart's nodeSelector default is empty); the
    tolerations replace the chart's list, which tolerates only `nvidia.com/gpu` and the
    deprecated CriticalAddonsOnly.
    """
    keys = sorted({t.key for p in gpu_pools for t in p.effective_taints})
    return {
        "affinity": gpu_node_affinity(),
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
