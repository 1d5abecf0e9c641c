"""What mlstack knows about AWS: its instance types, its regions' zones and GPU families.

Instance types: every type a pool can resolve to (the GPU types per accelerator, in the order
that picks a pool's default) and the CPU types the backend uses by default or the shipped stacks
name, with vCPUs, memory (GiB) and GPUs as the EC2 instance type pages list them
(https://aws.amazon.com/ec2/instance-types/, the G4dn, G5, G6, G6e, P4, P5 and M6i pages, and
https://docs.aws.amazon.com/ec2/latest/instancetypes/ac.html), as of 2025-10.

Regions: a region listed here is checked: its zones must be ones it has, and a GPU pool's
instance family must be offered there. A region not listed is accepted as written (AWS adds
regions and families faster than any table); `mlstack plan` says so. The table follows the EC2
instance type pages as of 2025-10; a family AWS launches in a listed region later is added here
in a reviewed change.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from mlstack.stacks.catalog import (
    CPU_RESERVE_TIERS,
    Allocatable,
    MachineType,
    machine_table,
    tiered_reserve,
)

#: Every instance type mlstack resolves pools to or uses by default: name, vCPUs, memory (GiB),
#: GPUs and their accelerator. Within an accelerator, the order is the order a pool's machine is
#: picked in (the first type with the GPU count asked for; the first with the most when none is).
MACHINES: MappingProxyType[str, MachineType] = machine_table(
    [
        MachineType("g4dn.xlarge", 4, 16, 1, "t4"),
        MachineType("g4dn.2xlarge", 8, 32, 1, "t4"),
        MachineType("g4dn.4xlarge", 16, 64, 1, "t4"),
        MachineType("g4dn.8xlarge", 32, 128, 1, "t4"),
        MachineType("g4dn.16xlarge", 64, 256, 1, "t4"),
        MachineType("g4dn.12xlarge", 48, 192, 4, "t4"),
        MachineType("g4dn.metal", 96, 384, 8, "t4"),
        MachineType("g5.xlarge", 4, 16, 1, "a10g"),
        MachineType("g5.2xlarge", 8, 32, 1, "a10g"),
        MachineType("g5.4xlarge", 16, 64, 1, "a10g"),
        MachineType("g5.8xlarge", 32, 128, 1, "a10g"),
        MachineType("g5.16xlarge", 64, 256, 1, "a10g"),
        MachineType("g5.12xlarge", 48, 192, 4, "a10g"),
        MachineType("g5.24xlarge", 96, 384, 4, "a10g"),
        MachineType("g5.48xlarge", 192, 768, 8, "a10g"),
        MachineType("g6.xlarge", 4, 16, 1, "l4"),
        MachineType("g6.2xlarge", 8, 32, 1, "l4"),
        MachineType("g6.4xlarge", 16, 64, 1, "l4"),
        MachineType("g6.8xlarge", 32, 128, 1, "l4"),
        MachineType("g6.16xlarge", 64, 256, 1, "l4"),
        MachineType("g6.12xlarge", 48, 192, 4, "l4"),
        MachineType("g6.24xlarge", 96, 384, 4, "l4"),
        MachineType("g6.48xlarge", 192, 768, 8, "l4"),
        MachineType("g6e.xlarge", 4, 32, 1, "l40s"),
        MachineType("g6e.2xlarge", 8, 64, 1, "l40s"),
        MachineType("g6e.4xlarge", 16, 128, 1, "l40s"),
        MachineType("g6e.8xlarge", 32, 256, 1, "l40s"),
        MachineType("g6e.16xlarge", 64, 512, 1, "l40s"),
        MachineType("g6e.12xlarge", 48, 384, 4, "l40s"),
        MachineType("g6e.24xlarge", 96, 768, 4, "l40s"),
        MachineType("g6e.48xlarge", 192, 1536, 8, "l40s"),
        MachineType("p4d.24xlarge", 96, 1152, 8, "a100-40gb"),
        MachineType("p4de.24xlarge", 96, 1152, 8, "a100-80gb"),
        MachineType("p5.48xlarge", 192, 2048, 8, "h100-80gb"),
        MachineType("p5e.48xlarge", 192, 2048, 8, "h200"),
        MachineType("p5en.48xlarge", 192, 2048, 8, "h200"),
        MachineType("m6i.large", 2, 8),
        MachineType("m6i.xlarge", 4, 16),
        MachineType("m6i.2xlarge", 8, 32),
        MachineType("m6i.4xlarge", 16, 64),
    ]
)


@dataclass(frozen=True)
class Region:
    name: str
    zones: tuple[str, ...]
    gpu_families: frozenset[str]


def _region(name: str, zone_letters: str, families: str) -> Region:
    return Region(
        name=name,
        zones=tuple(f"{name}{letter}" for letter in zone_letters),
        gpu_families=frozenset(families.split()),
    )


REGIONS: MappingProxyType[str, Region] = MappingProxyType(
    {
        r.name: r
        for r in (
            _region("us-east-1", "abcdf", "g4dn g5 g6 g6e p4d p4de p5 p5e p5en"),
            _region("us-east-2", "abc", "g4dn g5 g6 g6e p4d p5 p5en"),
            _region("us-west-2", "abcd", "g4dn g5 g6 g6e p4d p4de p5 p5e p5en"),
            _region("ca-central-1", "abd", "g4dn g5 g6"),
            _region("eu-central-1", "abc", "g4dn g5 g6 g6e p4d p5"),
            _region("eu-west-1", "abc", "g4dn g5 g6 p4d"),
            _region("eu-north-1", "abc", "g4dn g5 g6 g6e p5 p5en"),
            _region("ap-northeast-1", "acd", "g4dn g5 g6 g6e p4d p5"),
            _region("ap-south-1", "abc", "g4dn g5 g6"),
            _region("sa-east-1", "abc", "g4dn g5"),
        )
    }
)

#: Seconds between EC2's spot interruption notice and the interruption: "a warning that is
#: issued two minutes before Amazon EC2 stops or terminates your Spot Instance" (EC2 User Guide,
#: "Spot Instance interruption notices"). EKS managed node groups drain a spot node when the
#: notice (or an earlier rebalance recommendation) comes, so pods on spot get at most this long
#: between SIGTERM and the end of the node.
SPOT_INTERRUPTION_NOTICE_S = 120

#: Instance families that carry GPUs (P and G families: p3, p5en, p6-b200, g4ad, g5g, gr6, ...):
#: a CPU pool must not name one.
_GPU_FAMILY = re.compile(r"^(p|g|gr)[0-9]")


def is_gpu_family(instance_family: str) -> bool:
    return bool(_GPU_FAMILY.match(instance_family))


def allocatable_ephemeral_storage_gib(disk_gib: int) -> int:
    """The ephemeral storage (GiB, rounded down) the kubelet of an EKS node with a `disk_gib`
    root volume offers pods: what the cluster autoscaler's node template may promise. The same
    reserve and eviction threshold as `node_allocatable` (below); the filesystem's own overhead
    makes the real figure a little lower still."""
    disk_mib = disk_gib * 1024
    return max(
        int(disk_mib * (1 - EVICTION_NODEFS_FRACTION) - KUBE_RESERVED_EPHEMERAL_MIB) // 1024, 0
    )


def family(instance_type: str) -> str:
    """'p5.48xlarge' -> 'p5'."""
    return instance_type.split(".", 1)[0]


def default_zones(region: str, environment: str) -> tuple[str, ...] | None:
    """The first 2 zones in dev, 3 otherwise; None for a region the catalog does not know."""
    known = REGIONS.get(region)
    if known is None:
        return None
    return known.zones[: 2 if environment == "dev" else 3]


def region_machine(region: Region, machines: Mapping[str, int], gpus: int) -> str | None:
    """The first of `machines` (type -> GPUs) with `gpus` GPUs whose family `region` offers."""
    return next(
        (t for t, n in machines.items() if n == gpus and family(t) in region.gpu_families), None
    )


#: Pods per node of each catalog type as the EKS AMIs set kubelet's maxPods (ENIs x (IPv4
#: addresses per ENI - 1) + 2): awslabs/amazon-eks-ami nodeadm/internal/kubelet/eni-max-pods.txt.
#: It sizes the memory the AMI reserves for the kubelet.
MAX_PODS: MappingProxyType[str, int] = MappingProxyType(
    {
        "g4dn.xlarge": 29,
        "g4dn.2xlarge": 29,
        "g4dn.4xlarge": 29,
        "g4dn.8xlarge": 58,
        "g4dn.16xlarge": 58,
        "g4dn.12xlarge": 234,
        "g4dn.metal": 737,
        "g5.xlarge": 58,
        "g5.2xlarge": 58,
        "g5.4xlarge": 234,
        "g5.8xlarge": 234,
        "g5.16xlarge": 234,
        "g5.12xlarge": 737,
        "g5.24xlarge": 737,
        "g5.48xlarge": 345,
        "g6.xlarge": 58,
        "g6.2xlarge": 58,
        "g6.4xlarge": 234,
        "g6.8xlarge": 234,
        "g6.16xlarge": 737,
        "g6.12xlarge": 234,
        "g6.24xlarge": 737,
        "g6.48xlarge": 737,
        "g6e.xlarge": 58,
        "g6e.2xlarge": 58,
        "g6e.4xlarge": 234,
        "g6e.8xlarge": 234,
        "g6e.16xlarge": 737,
        "g6e.12xlarge": 292,
        "g6e.24xlarge": 492,
        "g6e.48xlarge": 492,
        "p4d.24xlarge": 737,
        "p4de.24xlarge": 737,
        "p5.48xlarge": 100,
        "p5e.48xlarge": 100,
        "p5en.48xlarge": 198,
        "m6i.large": 29,
        "m6i.xlarge": 58,
        "m6i.2xlarge": 58,
        "m6i.4xlarge": 234,
    }
)
#: kubelet's default hard eviction thresholds, which the EKS AMIs keep: memory.available<100Mi
#: and nodefs.available<10% (kubernetes.io "Node-pressure Eviction", default eviction
#: thresholds).
EVICTION_MEMORY_MIB = 100
EVICTION_NODEFS_FRACTION = 0.10
#: The ephemeral storage nodeadm reserves for the kubelet (kubeReserved ephemeral-storage 1Gi).
KUBE_RESERVED_EPHEMERAL_MIB = 1024


def node_allocatable(instance_type: str, disk_gib: float | None) -> Allocatable | None:
    """What a node of `instance_type` on an EKS AMI offers pods; None for a type the catalog does
    not know. The AMI's kube-reserved (awslabs/amazon-eks-ami nodeadm/internal/kubelet/config.go,
    withDefaultReservedResources): CPU by CPU_RESERVE_TIERS, memory 11 MiB per pod of maxPods plus
    255 MiB, ephemeral storage 1 GiB; then kubelet's eviction thresholds. The machine's memory is
    taken as the EC2 page gives it (the kernel keeps a little more, so this is an upper bound)."""
    machine = MACHINES.get(instance_type)
    if machine is None or instance_type not in MAX_PODS:
        return None
    millis = machine.vcpus * 1000
    memory_mib = round(machine.memory_gib * 1024)
    reserved_memory = 11 * MAX_PODS[instance_type] + 255
    ephemeral = None
    if disk_gib is not None:
        disk_mib = disk_gib * 1024
        ephemeral = int(disk_mib * (1 - EVICTION_NODEFS_FRACTION) - KUBE_RESERVED_EPHEMERAL_MIB)
    return Allocatable(
        machine=instance_type,
        vcpus=machine.vcpus,
        memory_gib=machine.memory_gib,
        cpu_millis=millis - int(tiered_reserve(millis, CPU_RESERVE_TIERS)),
        memory_mib=memory_mib - reserved_memory - EVICTION_MEMORY_MIB,
        gpus=machine.gpus,
        ephemeral_mib=ephemeral,
    )
