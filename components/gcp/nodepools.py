"""GKE node pools: the system pool and one pool per config pool, each autoscaled by GKE.

GPU pools attach their accelerators (`guest_accelerators`) with the driver installed by GKE at
the configured version, so no driver DaemonSet and no device plugin chart: GKE runs its own
plugin on GPU nodes. Pools size between their totals across zones (`total_*_node_count`),
from `min_nodes` (default 0) to `max_nodes`; GKE's cluster autoscaler knows an empty pool's
machine, labels and taints from the pool itself, so scale-from-zero needs no node templates.
Nodes run as the cluster's node service account, see only the GKE metadata server (Workload
Identity), and boot shielded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from mlstack.components import Options
from mlstack.components.gcp.catalog import (
    ACCELERATOR_TYPES,
    SPOT_SHUTDOWN_DEFAULT_S,
    boot_disk_type,
    spot_shutdown_s,
)
from mlstack.components.gcp.cluster import CLOUD_PLATFORM_SCOPE
from mlstack.stacks.names import POOL_KIND_LABEL, POOL_LABEL, SYSTEM_POOL
from mlstack.stacks.schema import Capacity, NodePool, PoolKind, TaintEffect

TAINT_EFFECTS = {
    TaintEffect.NO_SCHEDULE: "NO_SCHEDULE",
    TaintEffect.PREFER_NO_SCHEDULE: "PREFER_NO_SCHEDULE",
    TaintEffect.NO_EXECUTE: "NO_EXECUTE",
}
GPU_DRIVER_VERSIONS = {"default": "DEFAULT", "latest": "LATEST"}


@dataclass(frozen=True)
class PoolShape:
    """What one GKE node pool is made of, resolved from the config."""

    name: str
    machine_type: str
    zones: tuple[str, ...]
    sizes: tuple[int, int]
    spot: bool
    labels: Mapping[str, str]
    taints: tuple[tuple[str, str, str], ...]  # (key, value, GKE effect)
    disk_gib: int
    #: The boot disk type, which the machine series decides (catalog.BOOT_DISK_TYPES).
    disk_type: str
    accelerator_type: str | None = None
    gpus: int = 0
    #: A spot pool's graceful shutdown (whole period, critical pods' share) where it differs
    #: from GKE's default (catalog.spot_shutdown_s); None: the default.
    spot_shutdown_s: tuple[int, int] | None = None


def pool_shape(pool: NodePool, zones: Sequence[str], kubernetes_version: str) -> PoolShape:
    spot = pool.capacity is Capacity.SPOT
    shutdown = spot_shutdown_s(kubernetes_version) if spot else None
    return PoolShape(
        name=pool.name,
        machine_type=pool.instance_type or "",
        zones=tuple(zones),
        sizes=(pool.min_nodes or 0, pool.max_nodes),
        spot=spot,
        labels=pool.node_labels,
        taints=tuple((t.key, t.value, TAINT_EFFECTS[t.effect]) for t in pool.effective_taints),
        disk_gib=pool.disk_gib,
        disk_type=boot_disk_type(pool.instance_type or ""),
        accelerator_type=(
            ACCELERATOR_TYPES.get(pool.accelerator or "") if pool.kind is PoolKind.GPU else None
        ),
        gpus=pool.gpus,
        spot_shutdown_s=shutdown if shutdown != SPOT_SHUTDOWN_DEFAULT_S else None,
    )


def system_shape(machine_type: str, zones: Sequence[str], sizes: tuple[int, int]) -> PoolShape:
    return PoolShape(
        name=SYSTEM_POOL,
        machine_type=machine_type,
        zones=tuple(zones),
        sizes=sizes,
        spot=False,
        labels={POOL_LABEL: SYSTEM_POOL, POOL_KIND_LABEL: PoolKind.CPU.value},
        taints=(),
        disk_gib=50,
        disk_type=boot_disk_type(machine_type),
    )


@dataclass(frozen=True)
class NodePoolsArgs:
    cluster: pulumi.Input[str]
    project: str
    region: str
    #: The node service account's email.
    service_account: pulumi.Input[str]
    network_tags: Sequence[str]
    #: A key of GPU_DRIVER_VERSIONS.
    gpu_driver_version: str
    system: PoolShape
    pools: Sequence[PoolShape]


class NodePools(pulumi.ComponentResource):
    """The system pool and one GKE node pool per config pool."""

    def __init__(self, name: str, args: NodePoolsArgs, opts: Options = None) -> None:
        super().__init__("mlstack:gcp:NodePools", name, None, opts)
        self._common = {
            "cluster": args.cluster,
            "project": args.project,
            "region": args.region,
            "service_account": args.service_account,
            "tags": list(args.network_tags),
            "driver": GPU_DRIVER_VERSIONS[args.gpu_driver_version],
        }
        self.system = self._pool(f"{name}-{SYSTEM_POOL}", args.system)
        self.pools = {p.name: self._pool(f"{name}-{p.name}", p) for p in args.pools}
        self.register_outputs({"pools": [SYSTEM_POOL, *self.pools]})

    def _pool(self, resource_name: str, shape: PoolShape) -> gcp.container.NodePool:
        c = self._common
        low, high = shape.sizes
        gpu = shape.accelerator_type is not None
        accelerators = (
            [
                gcp.container.NodePoolNodeConfigGuestAcceleratorArgs(
                    type=shape.accelerator_type or "",
                    count=shape.gpus,
                    gpu_driver_installation_config=gcp.container.NodePoolNodeConfigGuestAcceleratorGpuDriverInstallationConfigArgs(
                        gpu_driver_version=c["driver"]
                    ),
                )
            ]
            if gpu
            else None
        )
        return gcp.container.NodePool(
            resource_name,
            gcp.container.NodePoolArgs(
                name=shape.name,
                cluster=c["cluster"],
                project=c["project"],
                location=c["region"],
                node_locations=list(shape.zones),
                # Per zone at creation; the autoscaler owns the size afterwards.
                initial_node_count=0 if low == 0 else max(1, low // len(shape.zones)),
                autoscaling=gcp.container.NodePoolAutoscalingArgs(
                    total_min_node_count=low,
                    total_max_node_count=high,
                    # GPUs and spot capacity come where they are free; CPU pools spread.
                    location_policy="ANY" if gpu or shape.spot else "BALANCED",
                ),
                management=gcp.container.NodePoolManagementArgs(
                    auto_repair=True, auto_upgrade=True
                ),
                # GPU quota rarely has room for surge nodes: replace one node at a time.
                upgrade_settings=gcp.container.NodePoolUpgradeSettingsArgs(
                    strategy="SURGE",
                    max_surge=0 if gpu else 1,
                    max_unavailable=1 if gpu else 0,
                ),
                node_config=gcp.container.NodePoolNodeConfigArgs(
                    machine_type=shape.machine_type,
                    disk_size_gb=shape.disk_gib,
                    disk_type=shape.disk_type,
                    image_type="COS_CONTAINERD",
                    spot=shape.spot,
                    labels=dict(shape.labels),
                    taints=[
                        gcp.container.NodePoolNodeConfigTaintArgs(
                            key=key, value=value, effect=effect
                        )
                        for key, value, effect in shape.taints
                    ],
                    guest_accelerators=accelerators,
                    kubelet_config=_spot_kubelet(shape),
                    service_account=c["service_account"],
                    oauth_scopes=[CLOUD_PLATFORM_SCOPE],
                    workload_metadata_config=gcp.container.NodePoolNodeConfigWorkloadMetadataConfigArgs(
                        mode="GKE_METADATA"
                    ),
                    shielded_instance_config=gcp.container.NodePoolNodeConfigShieldedInstanceConfigArgs(
                        enable_secure_boot=True, enable_integrity_monitoring=True
                    ),
                    metadata={"disable-legacy-endpoints": "true"},
                    tags=c["tags"],
                    resource_labels={"mlstack-pool": shape.name},
                ),
            ),
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["initialNodeCount"]),
        )


def _spot_kubelet(shape: PoolShape) -> gcp.container.NodePoolNodeConfigKubeletConfigArgs | None:
    """A spot pool's extended graceful shutdown, so that pods get the time their
    terminationGracePeriodSeconds asks (up to the whole period less the critical pods' share);
    None leaves GKE's default kubelet."""
    if shape.spot_shutdown_s is None:
        return None
    whole, critical = shape.spot_shutdown_s
    return gcp.container.NodePoolNodeConfigKubeletConfigArgs(
        shutdown_grace_period_seconds=whole,
        shutdown_grace_period_critical_pods_seconds=critical,
    )
