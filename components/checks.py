"""Config checks that every cloud backend with managed node pools makes the same way.

Each backend has a system pool for the add-ons (sized in its own section), may forbid spot
capacity, names CPU machine types that must not carry GPUs, and needs image repositories; only
the words differ (node group or node pool, instance or machine type), so they are parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mlstack.stacks.errors import Problem, format_path
from mlstack.stacks.names import SYSTEM_POOL
from mlstack.stacks.schema import Capacity, Platform, PoolKind


@dataclass(frozen=True)
class PoolWords:
    """How one cloud names things in its messages."""

    section: str  # "aws" or "gcp"
    pool: str  # "node group" or "node pool"
    machine: str  # "an EC2 instance type" or "a GCE machine type"
    cpu_example: str  # "m6i.2xlarge"


def system_pool_problems(words: PoolWords, min_nodes: int, max_nodes: int) -> list[Problem]:
    if min_nodes <= max_nodes:
        return []
    return [
        Problem(
            f"platform.{words.section}.system_pool.min_nodes",
            f"is above max_nodes ({max_nodes})",
            f"set it to at most {max_nodes}",
            min_nodes,
        )
    ]


def pool_problems(words: PoolWords, platform: Platform, allow_spot: bool) -> list[Problem]:
    """A pool named like the system pool, and spot pools in a stack that forbids them."""
    problems = []
    for i, pool in enumerate(platform.node_pools):
        if pool.name == SYSTEM_POOL:
            problems.append(
                Problem(
                    format_path(("node_pools", i, "name")),
                    f"is the {words.pool} mlstack creates for cluster add-ons",
                    f"give the pool another name (size the system {words.pool} with "
                    f"{words.section}.system_pool)",
                    pool.name,
                )
            )
        if pool.capacity is Capacity.SPOT and not allow_spot:
            problems.append(
                Problem(
                    format_path(("node_pools", i, "capacity")),
                    f"this stack forbids spot capacity ({words.section}.allow_spot: false)",
                    "use capacity: on-demand, or allow spot in this stack",
                    pool.capacity.value,
                )
            )
    return problems


def cpu_machine_problems(
    words: PoolWords,
    platform: Platform,
    settings: Sequence[tuple[str, str]],
    unsold: Callable[[str, str], tuple[str, str] | None],
    is_gpu_machine: Callable[[str], bool],
) -> list[Problem]:
    """Machine types of CPU nodes: the section's own `settings` ((field, type) pairs) and each
    CPU pool's instance_type must be types the cloud sells and carry no GPU. `unsold(type,
    example)` is the cloud's table: None for a type it sells, else what is wrong ('' for a value
    not even shaped like a type) and the nearest real type to suggest."""
    where = [(f"platform.{words.section}.{field}", mtype) for field, mtype in settings]
    where += [
        (format_path(("node_pools", i, "instance_type")), pool.instance_type)
        for i, pool in enumerate(platform.node_pools)
        if pool.kind is PoolKind.CPU and pool.instance_type is not None
    ]
    problems = []
    for path, mtype in where:
        verdict = unsold(mtype, words.cpu_example)
        if verdict is not None:
            reason, instead = verdict
            problems.append(
                Problem(
                    path,
                    f"not {words.machine}" + (f" ({reason})" if reason else ""),
                    f"use e.g. {instead}",
                    mtype,
                )
            )
        elif is_gpu_machine(mtype):
            in_pool = path.startswith("platform.node_pools")
            problems.append(
                Problem(
                    path,
                    "is a GPU machine: CPU nodes would pay for GPUs nobody can request",
                    f"use a CPU type such as {words.cpu_example}"
                    + (", or make the pool kind: gpu" if in_pool else ""),
                    mtype,
                )
            )
    return problems


def registry_problems(platform: Platform) -> list[Problem]:
    if platform.registry.repositories:
        return []
    return [
        Problem(
            "platform.registry.repositories",
            "the platform needs at least one image repository",
            "list the workload images, e.g. [train, serve]",
            [],
        )
    ]
