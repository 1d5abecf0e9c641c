"""The accelerator catalog: which GPUs each cloud offers, on which machine types, how many per node.

One source for validation (an accelerator the chosen cloud offers, a machine type that carries
it), for the backends (instance and machine types, GCP accelerator names) and for the capacity
table. On-prem clusters bring their own machines, so there any GPU count per node is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

Cloud = Literal["aws", "gcp", "onprem"]
CLOUDS: tuple[Cloud, ...] = ("aws", "gcp", "onprem")

#: Most GPUs an on-prem node is accepted with (HGX boards carry 8; a few 16-GPU systems exist).
MAX_ONPREM_GPUS_PER_NODE = 16


@dataclass(frozen=True)
class Accelerator:
    """A GPU model and the machine types that carry it on each cloud (type -> GPUs per node)."""

    name: str
    product: str
    memory_gib: int
    #: Dense bf16 tensor peak per GPU in TFLOP/s (fp16 for the T4, which lacks bf16); used for MFU.
    peak_tflops: float
    aws: MappingProxyType[str, int] = field(default_factory=lambda: MappingProxyType({}))
    gcp: MappingProxyType[str, int] = field(default_factory=lambda: MappingProxyType({}))
    #: The GKE accelerator type (`guest_accelerator.type`), where GCP offers this GPU.
    gcp_accelerator_type: str | None = None

    def machines(self, cloud: Cloud) -> MappingProxyType[str, int]:
        """Machine types offering this accelerator on `cloud`; empty for on-prem (any machine)."""
        if cloud == "aws":
            return self.aws
        if cloud == "gcp":
            return self.gcp
        return MappingProxyType({})

    def offered_on(self, cloud: Cloud) -> bool:
        return cloud == "onprem" or bool(self.machines(cloud))


def _types(pairs: dict[str, int]) -> MappingProxyType[str, int]:
    return MappingProxyType(dict(pairs))


ACCELERATORS: MappingProxyType[str, Accelerator] = MappingProxyType(
    {
        a.name: a
        for a in (
            Accelerator(
                name="t4",
                product="NVIDIA T4",
                memory_gib=16,
                peak_tflops=65.0,
                aws=_types(
                    {
                        "g4dn.xlarge": 1,
                        "g4dn.2xlarge": 1,
                        "g4dn.4xlarge": 1,
                        "g4dn.8xlarge": 1,
                        "g4dn.16xlarge": 1,
                        "g4dn.12xlarge": 4,
                        "g4dn.metal": 8,
                    }
                ),
                gcp=_types({"n1-standard-8": 1, "n1-standard-16": 2, "n1-standard-32": 4}),
                gcp_accelerator_type="nvidia-tesla-t4",
            ),
            Accelerator(
                name="a10g",
                product="NVIDIA A10G",
                memory_gib=24,
                peak_tflops=70.0,
                aws=_types(
                    {
                        "g5.xlarge": 1,
                        "g5.2xlarge": 1,
                        "g5.4xlarge": 1,
                        "g5.8xlarge": 1,
                        "g5.16xlarge": 1,
                        "g5.12xlarge": 4,
                        "g5.24xlarge": 4,
                        "g5.48xlarge": 8,
                    }
                ),
            ),
            Accelerator(
                name="l4",
                product="NVIDIA L4",
                memory_gib=24,
                peak_tflops=121.0,
                aws=_types(
                    {
                        "g6.xlarge": 1,
                        "g6.2xlarge": 1,
                        "g6.4xlarge": 1,
                        "g6.8xlarge": 1,
                        "g6.16xlarge": 1,
                        "g6.12xlarge": 4,
                        "g6.24xlarge": 4,
                        "g6.48xlarge": 8,
                    }
                ),
                gcp=_types(
                    {
                        "g2-standard-4": 1,
                        "g2-standard-8": 1,
                        "g2-standard-12": 1,
                        "g2-standard-16": 1,
                        "g2-standard-32": 1,
                        "g2-standard-24": 2,
                        "g2-standard-48": 4,
                        "g2-standard-96": 8,
                    }
                ),
                gcp_accelerator_type="nvidia-l4",
            ),
            Accelerator(
                name="l40s",
                product="NVIDIA L40S",
                memory_gib=48,
                peak_tflops=362.0,
                aws=_types(
                    {
                        "g6e.xlarge": 1,
                        "g6e.2xlarge": 1,
                        "g6e.4xlarge": 1,
                        "g6e.8xlarge": 1,
                        "g6e.16xlarge": 1,
                        "g6e.12xlarge": 4,
                        "g6e.24xlarge": 4,
                        "g6e.48xlarge": 8,
                    }
                ),
            ),
            Accelerator(
                name="a100-40gb",
                product="NVIDIA A100 40GB",
                memory_gib=40,
                peak_tflops=312.0,
                aws=_types({"p4d.24xlarge": 8}),
                gcp=_types(
                    {
                        "a2-highgpu-1g": 1,
                        "a2-highgpu-2g": 2,
                        "a2-highgpu-4g": 4,
                        "a2-highgpu-8g": 8,
                        "a2-megagpu-16g": 16,
                    }
                ),
                gcp_accelerator_type="nvidia-tesla-a100",
            ),
            Accelerator(
                name="a100-80gb",
                product="NVIDIA A100 80GB",
                memory_gib=80,
                peak_tflops=312.0,
                aws=_types({"p4de.24xlarge": 8}),
                gcp=_types(
                    {
                        "a2-ultragpu-1g": 1,
                        "a2-ultragpu-2g": 2,
                        "a2-ultragpu-4g": 4,
                        "a2-ultragpu-8g": 8,
                    }
                ),
                gcp_accelerator_type="nvidia-a100-80gb",
            ),
            Accelerator(
                name="h100-80gb",
                product="NVIDIA H100 80GB",
                memory_gib=80,
                peak_tflops=989.0,
                aws=_types({"p5.48xlarge": 8}),
                gcp=_types(
                    {
                        "a3-highgpu-1g": 1,
                        "a3-highgpu-2g": 2,
                        "a3-highgpu-4g": 4,
                        "a3-highgpu-8g": 8,
                    }
                ),
                gcp_accelerator_type="nvidia-h100-80gb",
            ),
            Accelerator(
                name="h200",
                product="NVIDIA H200 141GB",
                memory_gib=141,
                peak_tflops=989.0,
                aws=_types({"p5e.48xlarge": 8, "p5en.48xlarge": 8}),
                gcp=_types({"a3-ultragpu-8g": 8}),
                gcp_accelerator_type="nvidia-h200-141gb",
            ),
        )
    }
)


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
    cloud: Cloud, accelerator_name: str, instance_type: str | None, gpus_per_node: int | None
) -> Machine:
    """Resolve a GPU pool to a machine type and GPU count, or raise CatalogError saying why not.

    With no instance type, the smallest machine carrying `gpus_per_node` GPUs is chosen
    (the largest machine when no count is given: GPU training nodes are usually full boards).
    """
    acc = accelerator(accelerator_name)
    if cloud == "onprem":
        if instance_type is not None:
            raise CatalogError(
                "instance_type",
                "onprem pools are existing machines and have no instance type",
                "remove instance_type",
            )
        if gpus_per_node is None:
            raise CatalogError(
                "gpus_per_node",
                "onprem GPU pools must say how many GPUs each node carries",
                f"set gpus_per_node (1-{MAX_ONPREM_GPUS_PER_NODE})",
            )
        if not 1 <= gpus_per_node <= MAX_ONPREM_GPUS_PER_NODE:
            raise CatalogError(
                "gpus_per_node",
                f"{gpus_per_node} GPUs per node is outside 1-{MAX_ONPREM_GPUS_PER_NODE}",
                f"set gpus_per_node between 1 and {MAX_ONPREM_GPUS_PER_NODE}",
            )
        return Machine(None, gpus_per_node)

    machines = acc.machines(cloud)
    if not machines:
        offered = [a.name for a in ACCELERATORS.values() if a.offered_on(cloud)]
        raise CatalogError(
            "accelerator",
            f"{cloud} does not offer accelerator {acc.name!r}",
            f"use one of: {', '.join(offered)}",
        )
    if instance_type is not None:
        if instance_type not in machines:
            raise CatalogError(
                "instance_type",
                f"{instance_type!r} does not carry {acc.name} on {cloud}",
                f"use one of: {', '.join(machines)}",
            )
        carried = machines[instance_type]
        if gpus_per_node is not None and gpus_per_node != carried:
            raise CatalogError(
                "gpus_per_node",
                f"{instance_type} carries {carried} x {acc.name}, not {gpus_per_node}",
                f"set gpus_per_node to {carried} or remove it",
            )
        return Machine(instance_type, carried)
    if gpus_per_node is None:
        best = max(machines.values())
        return Machine(next(t for t, n in machines.items() if n == best), best)
    for itype, count in machines.items():
        if count == gpus_per_node:
            return Machine(itype, count)
    counts = sorted(set(machines.values()))
    raise CatalogError(
        "gpus_per_node",
        f"no {cloud} machine carries {gpus_per_node} x {acc.name}",
        f"use one of: {', '.join(str(c) for c in counts)}",
    )
