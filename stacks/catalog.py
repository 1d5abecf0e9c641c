"""The accelerator catalog: the GPU models mlstack knows, and how a GPU pool resolves to a machine.

What is shared by every cloud lives here: each GPU model (product, memory, peak TFLOP/s for the
capacity table and MFU), the shape of a machine type, and the rule that picks a pool's machine
from a cloud's table. Which machine types a cloud has, and which GPUs they carry, is that cloud's
own knowledge (`components/<cloud>/catalog.py`), reached through its backend: validation, the
backends and the capacity table all read the same tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

Cloud = Literal["aws", "gcp", "onprem"]
CLOUDS: tuple[Cloud, ...] = ("aws", "gcp", "onprem")


@dataclass(frozen=True)
class Accelerator:
    """A GPU model, the same on every cloud."""

    name: str
    product: str
    memory_gib: int
    #: Dense bf16 tensor peak per GPU in TFLOP/s (fp16 for the T4, which lacks bf16); used for MFU.
    peak_tflops: float


ACCELERATORS: MappingProxyType[str, Accelerator] = MappingProxyType(
    {
        a.name: a
        for a in (
            Accelerator(name="t4", product="NVIDIA T4", memory_gib=16, peak_tflops=65.0),
            Accelerator(name="a10g", product="NVIDIA A10G", memory_gib=24, peak_tflops=70.0),
            Accelerator(name="l4", product="NVIDIA L4", memory_gib=24, peak_tflops=121.0),
            Accelerator(name="l40s", product="NVIDIA L40S", memory_gib=48, peak_tflops=362.0),
            Accelerator(
                name="a100-40gb", product="NVIDIA A100 40GB", memory_gib=40, peak_tflops=312.0
            ),
            Accelerator(
                name="a100-80gb", product="NVIDIA A100 80GB", memory_gib=80, peak_tflops=312.0
            ),
            Accelerator(
                name="h100-80gb", product="NVIDIA H100 80GB", memory_gib=80, peak_tflops=989.0
            ),
            Accelerator(
                name="h200", product="NVIDIA H200 141GB", memory_gib=141, peak_tflops=989.0
            ),
        )
    }
)


@dataclass(frozen=True)
class MachineType:
    """A cloud machine type's shape: what one node has before the kubelet and system daemons
    take their share."""

    name: str
    vcpus: int
    memory_gib: float
    gpus: int = 0
    #: The accelerator (a key of ACCELERATORS) its GPUs are; None for CPU machines.
    accelerator: str | None = None


def machine_table(machines: Iterable[MachineType]) -> MappingProxyType[str, MachineType]:
    """A cloud's machine types by name, in the order given: the order picks defaults and lists
    choices in messages."""
    return MappingProxyType({m.name: m for m in machines})


def gpu_machines(machines: Mapping[str, MachineType], accelerator: str) -> dict[str, int]:
    """The machine types of a cloud's table that carry `accelerator`: type -> GPUs per node."""
    return {m.name: m.gpus for m in machines.values() if m.accelerator == accelerator}


@dataclass(frozen=True)
class Machine:
    """What a GPU pool resolves to on its cloud."""

    instance_type: str | None
    gpus_per_node: int


class CatalogError(ValueError):
    """A pool's accelerator, machine type or GPU count does not fit the catalog."""

    def __init__(self, field: str, message: str, fix: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.fix = fix


def accelerator(name: str) -> Accelerator:
    """Look an accelerator up by name; an unknown name lists the known ones."""
    try:
        return ACCELERATORS[name]
    except KeyError:
        raise CatalogError(
            "accelerator",
            f"unknown accelerator {name!r}",
            f"use one of: {', '.join(ACCELERATORS)}",
        ) from None


def resolve_gpu_machine(
    cloud: str,
    machines: Mapping[str, MachineType],
    accelerator_name: str,
    instance_type: str | None,
    gpus_per_node: int | None,
) -> Machine:
    """Resolve a GPU pool to a machine type of `cloud`'s table `machines` and its GPU count, or
    raise CatalogError saying why not.

    With no instance type, the smallest machine carrying `gpus_per_node` GPUs is chosen
    (the largest machine when no count is given: GPU training nodes are usually full boards).
    """
    acc = accelerator(accelerator_name)
    carrying = gpu_machines(machines, acc.name)
    if not carrying:
        offered = [name for name in ACCELERATORS if gpu_machines(machines, name)]
        raise CatalogError(
            "accelerator",
            f"{cloud} does not offer accelerator {acc.name!r}",
            f"use one of: {', '.join(offered)}",
        )
    if instance_type is not None:
        if instance_type not in carrying:
            raise CatalogError(
                "instance_type",
                f"{instance_type!r} does not carry {acc.name} on {cloud}",
                f"use one of: {', '.join(carrying)}",
            )
        carried = carrying[instance_type]
        if gpus_per_node is not None and gpus_per_node != carried:
            raise CatalogError(
                "gpus_per_node",
                f"{instance_type} carries {carried} x {acc.name}, not {gpus_per_node}",
                f"set gpus_per_node to {carried} or remove it",
            )
        return Machine(instance_type, carried)
    if gpus_per_node is None:
        best = max(carrying.values())
        return Machine(next(t for t, n in carrying.items() if n == best), best)
    for itype, count in carrying.items():
        if count == gpus_per_node:
            return Machine(itype, count)
    counts = sorted(set(carrying.values()))
    raise CatalogError(
        "gpus_per_node",
        f"no {cloud} machine carries {gpus_per_node} x {acc.name}",
        f"use one of: {', '.join(str(c) for c in counts)}",
    )


# --- what a node offers pods: the machine less the share its cloud reserves -----------------


@dataclass(frozen=True)
class Allocatable:
    """What the scheduler may place on one node: the machine's capacity less the kubelet's and
    the system's reserve and the hard eviction threshold (Kubernetes' "Reserve Compute Resources
    for System Daemons": allocatable = capacity - kube-reserved - system-reserved - eviction).

    `machine` names where the numbers come from, for messages; `ephemeral_mib` is None where the
    plan does not say how large the node's disk is.
    """

    machine: str
    vcpus: int
    memory_gib: float
    cpu_millis: int
    memory_mib: int
    gpus: int
    ephemeral_mib: int | None


#: The CPU share that EKS's AMIs and GKE both reserve, as (up to this many millicores, this
#: fraction of them): 6% of the first core, 1% of the second, 0.5% of the next two, 0.25% of
#: every core above four. awslabs/amazon-eks-ami nodeadm/internal/kubelet/config.go
#: (getCPUMillicoresToReserve: ranges 0/1000/2000/4000, 600/100/50/25 ten-thousandths) and
#: GKE's "Plan GKE Standard node sizes" (cloud.google.com/kubernetes-engine/docs/concepts/
#: plan-node-sizes, "Memory and CPU reservations").
CPU_RESERVE_TIERS: tuple[tuple[float, float], ...] = (
    (1000, 0.06),
    (2000, 0.01),
    (4000, 0.005),
    (float("inf"), 0.0025),
)


def tiered_reserve(total: float, tiers: Iterable[tuple[float, float]]) -> float:
    """The reserve of `total` under a ladder of (upper bound, fraction) tiers, each fraction
    taken of the part of `total` within its tier."""
    reserved, lower = 0.0, 0.0
    for upper, fraction in tiers:
        if total <= lower:
            break
        reserved += (min(total, upper) - lower) * fraction
        lower = upper
    return reserved
