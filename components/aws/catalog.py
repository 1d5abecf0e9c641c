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

from mlstack.stacks.catalog import MachineType, machine_table

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

#: Instance families that carry GPUs (P and G families: p3, p5en, p6-b200, g4ad, g5g, gr6, ...):
#: a CPU pool must not name one.
_GPU_FAMILY = re.compile(r"^(p|g|gr)[0-9]")


def is_gpu_family(instance_family: str) -> bool:
    return bool(_GPU_FAMILY.match(instance_family))


#: The cluster autoscaler release per Kubernetes minor version (it must match the control plane).
CLUSTER_AUTOSCALER_IMAGES: MappingProxyType[str, str] = MappingProxyType(
    {
        "1.29": "v1.29.5",
        "1.30": "v1.30.6",
        "1.31": "v1.31.4",
        "1.32": "v1.32.3",
        "1.33": "v1.33.1",
        "1.34": "v1.34.0",
        "1.35": "v1.35.0",
    }
)


#: What the EKS AL2023 AMI's kubelet keeps of a node's root disk from pods (nodeadm,
#: awslabs/amazon-eks-ami nodeadm/internal/kubelet/config.go): `kubeReserved` ephemeral-storage
#: "1Gi" (withDefaultReservedResources; no systemReserved storage) and the hard eviction
#: threshold `nodefs.available: "10%"` (defaultKubeletSubConfig). Node allocatable is capacity
#: less reserved less the eviction threshold (the kubelet's node-allocatable rule).
KUBE_RESERVED_EPHEMERAL_GIB = 1
NODEFS_EVICTION_PERCENT = 10


def allocatable_ephemeral_storage_gib(disk_gib: int) -> int:
    """The ephemeral storage (GiB, rounded down) the kubelet of an EKS AL2023 node with a
    `disk_gib` root volume offers pods; the filesystem's own overhead makes the real figure a
    little lower still, so this errs toward not promising storage a node lacks."""
    evicted = -(-disk_gib * NODEFS_EVICTION_PERCENT // 100)  # ceil: the threshold is kept free
    return max(disk_gib - KUBE_RESERVED_EPHEMERAL_GIB - evicted, 0)


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
