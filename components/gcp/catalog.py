"""What mlstack knows about GCP: its machine types, its regions' zones and the GPUs they offer.

Machine types: every type a pool can resolve to (the GPU types per accelerator, in the order that
picks a pool's default) and the CPU types the backend uses by default or the shipped stacks name,
with vCPUs, memory (GiB) and GPUs as Compute Engine's machine type pages list them
(https://cloud.google.com/compute/docs/accelerator-optimized-machines for A2, A3 and G2,
https://cloud.google.com/compute/docs/gpus for T4s on N1, and
https://cloud.google.com/compute/docs/general-purpose-machines for E2, N1 and N2), as of 2025-10.
Compute Engine's "GB" of memory are GiB (the API reports n1-standard-8's 30 GB as 30720 MiB).

Regions: GPUs on GCP are zonal: a region can offer an L4 in two of its zones and an H100 in one.
A GPU pool's nodes go in the cluster's zones that offer its accelerator; a zone named for a pool
must offer it. A region not listed here is accepted as written (zones must then be listed) and
`mlstack plan` says its GPUs were not checked. The table follows Google Cloud's "GPU regions and
zones" page as of 2025-10; a zone Google adds later is added here in a reviewed change.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from mlstack.stacks.catalog import (
    CPU_RESERVE_TIERS,
    Allocatable,
    MachineType,
    machine_table,
    tiered_reserve,
)

#: Every machine type mlstack resolves pools to or uses by default: name, vCPUs, memory (GiB),
#: GPUs and their accelerator. N1 types carry no GPU of their own: the count is the T4s mlstack
#: attaches to them. Within an accelerator, the order is the order a pool's machine is picked in
#: (the first type with the GPU count asked for; the first with the most when none is).
MACHINES: MappingProxyType[str, MachineType] = machine_table(
    [
        MachineType("n1-standard-8", 8, 30, 1, "t4"),
        MachineType("n1-standard-16", 16, 60, 2, "t4"),
        MachineType("n1-standard-32", 32, 120, 4, "t4"),
        MachineType("g2-standard-4", 4, 16, 1, "l4"),
        MachineType("g2-standard-8", 8, 32, 1, "l4"),
        MachineType("g2-standard-12", 12, 48, 1, "l4"),
        MachineType("g2-standard-16", 16, 64, 1, "l4"),
        MachineType("g2-standard-32", 32, 128, 1, "l4"),
        MachineType("g2-standard-24", 24, 96, 2, "l4"),
        MachineType("g2-standard-48", 48, 192, 4, "l4"),
        MachineType("g2-standard-96", 96, 384, 8, "l4"),
        MachineType("a2-highgpu-1g", 12, 85, 1, "a100-40gb"),
        MachineType("a2-highgpu-2g", 24, 170, 2, "a100-40gb"),
        MachineType("a2-highgpu-4g", 48, 340, 4, "a100-40gb"),
        MachineType("a2-highgpu-8g", 96, 680, 8, "a100-40gb"),
        MachineType("a2-megagpu-16g", 96, 1360, 16, "a100-40gb"),
        MachineType("a2-ultragpu-1g", 12, 170, 1, "a100-80gb"),
        MachineType("a2-ultragpu-2g", 24, 340, 2, "a100-80gb"),
        MachineType("a2-ultragpu-4g", 48, 680, 4, "a100-80gb"),
        MachineType("a2-ultragpu-8g", 96, 1360, 8, "a100-80gb"),
        MachineType("a3-highgpu-1g", 26, 234, 1, "h100-80gb"),
        MachineType("a3-highgpu-2g", 52, 468, 2, "h100-80gb"),
        MachineType("a3-highgpu-4g", 104, 936, 4, "h100-80gb"),
        MachineType("a3-highgpu-8g", 208, 1872, 8, "h100-80gb"),
        MachineType("a3-ultragpu-8g", 224, 2952, 8, "h200"),
        MachineType("e2-standard-4", 4, 16),
        MachineType("e2-standard-8", 8, 32),
        MachineType("n2-standard-8", 8, 32),
        MachineType("n2-standard-16", 16, 64),
    ]
)

#: The GKE accelerator type (`guest_accelerator.type`) of each accelerator GCP offers.
ACCELERATOR_TYPES: MappingProxyType[str, str] = MappingProxyType(
    {
        "t4": "nvidia-tesla-t4",
        "l4": "nvidia-l4",
        "a100-40gb": "nvidia-tesla-a100",
        "a100-80gb": "nvidia-a100-80gb",
        "h100-80gb": "nvidia-h100-80gb",
        "h200": "nvidia-h200-141gb",
    }
)


@dataclass(frozen=True)
class Region:
    name: str
    #: zone -> accelerator names (stacks.catalog) offered there.
    zones: MappingProxyType[str, frozenset[str]]

    def offering(self, accelerator: str) -> tuple[str, ...]:
        """Zones of this region that offer `accelerator`, in catalog order."""
        return tuple(z for z, gpus in self.zones.items() if accelerator in gpus)


def _region(name: str, zones: dict[str, str]) -> Region:
    return Region(
        name=name,
        zones=MappingProxyType(
            {f"{name}-{letter}": frozenset(gpus.split()) for letter, gpus in zones.items()}
        ),
    )


REGIONS: MappingProxyType[str, Region] = MappingProxyType(
    {
        r.name: r
        for r in (
            _region(
                "us-central1",
                {
                    "a": "t4 l4 a100-40gb a100-80gb h100-80gb",
                    "b": "t4 l4 a100-40gb h100-80gb h200",
                    "c": "t4 l4 a100-40gb a100-80gb h100-80gb",
                    "f": "t4 a100-40gb",
                },
            ),
            _region(
                "us-east1",
                {"b": "l4 a100-40gb", "c": "t4 l4", "d": "t4 l4 h100-80gb"},
            ),
            _region(
                "us-east4",
                {"a": "t4 l4 h100-80gb", "b": "t4 h100-80gb", "c": "t4 l4 a100-80gb h100-80gb"},
            ),
            _region(
                "us-west1",
                {"a": "t4 l4 h100-80gb", "b": "t4 l4 a100-40gb h100-80gb", "c": "l4"},
            ),
            _region(
                "us-west4",
                {"a": "t4 l4 h100-80gb", "b": "t4 a100-40gb", "c": "l4"},
            ),
            _region(
                "europe-west1",
                {"b": "t4 l4", "c": "t4 l4", "d": "t4"},
            ),
            _region(
                "europe-west4",
                {
                    "a": "l4 a100-40gb a100-80gb h100-80gb",
                    "b": "t4 l4 a100-40gb h100-80gb h200",
                    "c": "t4 l4 h100-80gb",
                },
            ),
            _region(
                "asia-northeast1",
                {"a": "t4 l4 a100-40gb", "b": "h100-80gb", "c": "t4 l4 a100-40gb"},
            ),
            _region(
                "asia-southeast1",
                {"a": "t4 l4", "b": "t4 l4 a100-40gb h100-80gb", "c": "t4 l4 a100-40gb h100-80gb"},
            ),
        )
    }
)

#: Machine series whose machines carry GPUs (a CPU pool must not name one).
GPU_SERIES = frozenset({"a2", "a3", "a4", "g2", "g4"})


def series(machine_type: str) -> str:
    """'a3-highgpu-8g' -> 'a3'."""
    return machine_type.split("-", 1)[0]


#: The boot disk of machines whose series (or series and family, where one family of a series
#: differs) cannot boot from Persistent Disk. A3 Ultra (`a3-ultragpu-*`, H200) boots from
#: Hyperdisk Balanced: Vertex AI's DiskSpec.bootDiskType says "for A3U machines, the default
#: value is "hyperdisk-balanced"" (docs.cloud.google.com/vertex-ai/docs/reference/rest/v1/
#: DiskSpec), and Compute Engine's "About Google Cloud Hyperdisk" (compute/docs/disks/
#: hyperdisks, "Machine series support") lists Hyperdisk Balanced for A3 (H200), A4 (A4X, its
#: Grace-based sibling, alike), C4, C4A,
#: C4D and N4, series that list Hyperdisk only among their supported disks. Hyperdisk Balanced
#: is the one Hyperdisk type every instance may boot from (compute/docs/disks/hd-types/
#: hyperdisk-balanced), so it is a safe pick for each series here. A3 High and Mega, A2, G2,
#: N1, N2 and E2 keep Persistent Disk. A series Google adds later is added here.
BOOT_DISK_TYPES: MappingProxyType[str, str] = MappingProxyType(
    {
        "a3-ultragpu": "hyperdisk-balanced",
        "a4": "hyperdisk-balanced",
        "a4x": "hyperdisk-balanced",
        "c4": "hyperdisk-balanced",
        "c4a": "hyperdisk-balanced",
        "c4d": "hyperdisk-balanced",
        "n4": "hyperdisk-balanced",
    }
)
#: The boot disk of every other machine: SSD-backed and cheaper than pd-ssd.
DEFAULT_BOOT_DISK_TYPE = "pd-balanced"


def boot_disk_type(machine_type: str) -> str:
    """The boot disk type a node of `machine_type` can have: 'a3-ultragpu-8g' ->
    'hyperdisk-balanced', 'a3-highgpu-8g' -> 'pd-balanced'."""
    family = "-".join(machine_type.split("-", 2)[:2])
    return BOOT_DISK_TYPES.get(family) or BOOT_DISK_TYPES.get(
        series(machine_type), DEFAULT_BOOT_DISK_TYPE
    )


#: Graceful node shutdown of a spot node (GKE "Spot VMs" concept page, "Termination and
#: graceful shutdown of Spot VMs"): on the preemption notice the kubelet has 30 s by default, the
#: first 15 s for ordinary pods and the last 15 s for critical system pods. A Standard node pool
#: may extend the whole period to 120 s through the node system configuration (kubelet
#: `shutdownGracePeriodSeconds`, `shutdownGracePeriodCriticalPodsSeconds`: pulumi-gcp's
#: NodePoolNodeConfigKubeletConfigArgs, "only if the node pool uses Spot VMs or Preemptible
#: VMs") when the control plane runs 1.35.0-gke.1171000 or later; mlstack does so on 1.35 and up.
SPOT_SHUTDOWN_DEFAULT_S: tuple[int, int] = (30, 15)
SPOT_SHUTDOWN_EXTENDED_S: tuple[int, int] = (120, 15)
SPOT_SHUTDOWN_EXTENDED_FROM: tuple[int, int] = (1, 35)


def spot_shutdown_s(kubernetes_version: str) -> tuple[int, int]:
    """(whole period, critical pods' share) of a spot node's graceful shutdown on a cluster of
    `kubernetes_version` ('1.35'), as mlstack configures it: ordinary pods get the difference."""
    major, _, minor = kubernetes_version.partition(".")
    known = major.isdigit() and minor.isdigit()
    if known and (int(major), int(minor)) >= SPOT_SHUTDOWN_EXTENDED_FROM:
        return SPOT_SHUTDOWN_EXTENDED_S
    return SPOT_SHUTDOWN_DEFAULT_S


def default_zones(region: str, environment: str) -> tuple[str, ...] | None:
    """The first 2 zones in dev, 3 otherwise; None for a region the catalog does not know."""
    known = REGIONS.get(region)
    if known is None:
        return None
    return tuple(known.zones)[: 2 if environment == "dev" else 3]


#: The memory GKE reserves, as (up to this many GiB, this fraction of them): 25% of the first
#: 4 GiB, 20% of the next 4, 10% of the next 8, 6% of the next 112 and 2% of any above 128 GiB;
#: plus 100 MiB for kubelet's eviction threshold. "Plan GKE Standard node sizes"
#: (cloud.google.com/kubernetes-engine/docs/concepts/plan-node-sizes, "Memory and CPU
#: reservations"; the same ladder in hatemosphere/gke-node-allocatable-memory-calculator).
MEMORY_RESERVE_TIERS: tuple[tuple[float, float], ...] = (
    (4, 0.25),
    (8, 0.20),
    (16, 0.10),
    (128, 0.06),
    (float("inf"), 0.02),
)
EVICTION_MEMORY_MIB = 100
#: kubelet's default nodefs.available<10% hard eviction. GKE's own ephemeral-storage reserve
#: differs by node image and is not counted, so the figure is an upper bound: a pod refused
#: here cannot fit, one admitted may still not.
EVICTION_NODEFS_FRACTION = 0.10


def node_allocatable(
    machine_type: str, disk_gib: float | None, gpus: int | None = None
) -> Allocatable | None:
    """What a GKE node of `machine_type` offers pods; None for a type the catalog does not know.
    `gpus`: the GPUs the node pool attaches (N1 machines carry none of their own)."""
    machine = MACHINES.get(machine_type)
    if machine is None:
        return None
    millis = machine.vcpus * 1000
    reserved_gib = tiered_reserve(machine.memory_gib, MEMORY_RESERVE_TIERS)
    memory_mib = machine.memory_gib * 1024
    return Allocatable(
        machine=machine_type,
        vcpus=machine.vcpus,
        memory_gib=machine.memory_gib,
        cpu_millis=millis - int(tiered_reserve(millis, CPU_RESERVE_TIERS)),
        memory_mib=int(memory_mib - reserved_gib * 1024 - EVICTION_MEMORY_MIB),
        gpus=machine.gpus if gpus is None else gpus,
        ephemeral_mib=None
        if disk_gib is None
        else int(disk_gib * 1024 * (1 - EVICTION_NODEFS_FRACTION)),
    )
