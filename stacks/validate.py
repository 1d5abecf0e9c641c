"""Load and validate a platform config: every problem at once, before anything is declared.

Field problems (types, unknown fields, ranges) come from the schema and are all reported in one
pass. Only when the fields are sound do the cross-field checks run, again all reported at once:
they need a well-formed config to say anything true. This module orchestrates them the way
`stacks/platform.py` orchestrates resources: the platform's own checks (cloud section, unique
names, pools and their machines) here, then each layer's, kept beside what they check: tenancy
(`policies/tenancy_checks.py`), workloads (`workloads/deploy/checks.py`), extra manifests
(`components/kubernetes/extra_checks.py`) and the cloud's own (its backend's `check`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from mlstack.components.backend import (
    BackendUnavailableError,
    CloudBackend,
    available_clouds,
    get_backend,
)
from mlstack.components.features import CAPACITY_FEATURES, Feature
from mlstack.components.kubernetes.extra_checks import extra_manifest_problems
from mlstack.policies.tenancy_checks import gpu_quota_problems, tenancy_problems
from mlstack.stacks.catalog import CLOUDS, CatalogError
from mlstack.stacks.errors import ConfigError, Problem, format_path
from mlstack.stacks.parse import parse_platform
from mlstack.stacks.schema import NodePool, Platform, PoolKind
from mlstack.workloads.deploy.checks import workload_problems
from mlstack.workloads.deploy.pipeline_checks import pipeline_problems


def load_platform(raw: Any, source: str | None = None) -> Platform:
    """Validate raw config (the `mlstack:platform` value) into a resolved, frozen Platform.

    Raises ConfigError listing every problem found.
    """
    platform = parse_platform(raw, source)
    problems = check_platform(platform)
    if problems:
        raise ConfigError(problems, source)
    return _resolve(platform)


def check_platform(p: Platform) -> list[Problem]:
    """Cross-field checks on a platform whose fields are individually valid."""
    backend = _backend(p)
    problems = _check_cloud(p)
    problems += _check_unique(p)
    # Index and GPUs per node of each sound GPU pool: the layers' checks size work by them.
    sound: dict[str, tuple[int, int]] = {}
    for i, pool in enumerate(p.node_pools):
        pool_problems = _check_pool(p, backend, i, pool)
        problems += pool_problems
        if (
            not pool_problems
            and backend is not None
            and pool.kind is PoolKind.GPU
            and pool.accelerator is not None
        ):
            machine = backend.resolve_gpu_machine(
                pool.accelerator, pool.instance_type, pool.gpus_per_node
            )
            sound.setdefault(pool.name, (i, machine.gpus_per_node))
    problems += gpu_quota_problems(p, sound)
    problems += tenancy_problems(p)
    problems += workload_problems(p, sound)
    problems += pipeline_problems(p, sound)
    problems += extra_manifest_problems(p)
    problems += _backend_checks(p, backend)
    return problems


def _backend(p: Platform) -> type[CloudBackend] | None:
    """The platform's backend; None for a cloud without one (reported by _check_cloud)."""
    try:
        return get_backend(p.cloud)
    except LookupError:
        return None


def _check_cloud(p: Platform) -> list[Problem]:
    problems = []
    try:
        get_backend(p.cloud)
    except BackendUnavailableError as exc:
        problems.append(
            Problem(
                "platform.cloud", str(exc), f"use one of: {', '.join(available_clouds())}", p.cloud
            )
        )
    for section in CLOUDS:
        present = getattr(p, section) is not None
        if section == p.cloud and not present:
            problems.append(
                Problem(
                    f"platform.{section}",
                    f"cloud is {p.cloud} but the {section} section is missing",
                    f"add the {section}: section (see the README's config reference)",
                )
            )
        elif section != p.cloud and present:
            problems.append(
                Problem(
                    f"platform.{section}",
                    f"the {section} section is only read when cloud is {section}, not {p.cloud}",
                    f"remove it, or set cloud: {section}",
                )
            )
    return problems


def _check_unique(p: Platform) -> list[Problem]:
    problems = []
    groups: Iterable[tuple[str, Iterable[str]]] = (
        ("node_pools", (x.name for x in p.node_pools)),
        ("teams", (x.name for x in p.teams)),
        ("tenancy.cohorts", (x.name for x in p.tenancy.cohorts)),
    )
    for field, names_iter in groups:
        names = list(names_iter)
        for name, count in Counter(names).items():
            if count > 1:
                i = [j for j, n in enumerate(names) if n == name][1]
                problems.append(
                    Problem(
                        f"platform.{field}[{i}].name",
                        f"name is used {count} times",
                        "give each entry its own name",
                        name,
                    )
                )
    # A job's JobSet and a service's objects are named after them in the team's namespace:
    # names are unique per team.
    for kind, what in (("training_jobs", "training jobs"), ("inference_services", "services")):
        keys = [(x.team, x.name) for x in getattr(p.workloads, kind)]
        for (team, name), count in Counter(keys).items():
            if count > 1:
                i = [j for j, key in enumerate(keys) if key == (team, name)][1]
                problems.append(
                    Problem(
                        f"platform.workloads.{kind}[{i}].name",
                        f"team {team} has {count} {what} of this name",
                        f"give each of the team's {what} its own name",
                        name,
                    )
                )
    buckets = p.storage.bucket_names()
    for name, count in Counter(buckets.values()).items():
        if count > 1:
            purposes = [k for k, v in buckets.items() if v == name]
            # Point at a name the user wrote, not at a default they never saw.
            written = [k for k in purposes if getattr(p.storage, k).name is not None]
            at = written[-1] if written else purposes[1]
            other = next(k for k in purposes if k != at)
            problems.append(
                Problem(
                    f"platform.storage.{at}.name",
                    f"bucket is also used for {other}",
                    "give each purpose its own bucket",
                    name,
                )
            )
    return problems


def _pool_machine_problem(
    backend: type[CloudBackend] | None, pool: NodePool
) -> CatalogError | None:
    if backend is None or pool.kind is not PoolKind.GPU or pool.accelerator is None:
        return None
    try:
        backend.resolve_gpu_machine(pool.accelerator, pool.instance_type, pool.gpus_per_node)
    except CatalogError as exc:
        return exc
    return None


def _check_pool(
    p: Platform, backend: type[CloudBackend] | None, i: int, pool: NodePool
) -> list[Problem]:
    problems = []

    def path(field: str) -> str:
        return format_path(("node_pools", i, field))

    if pool.kind is PoolKind.GPU:
        if pool.accelerator is None:
            problems.append(
                Problem(path("accelerator"), "GPU pools need an accelerator", "set one, e.g. l4")
            )
        err = _pool_machine_problem(backend, pool)
        if err is not None:
            value = getattr(pool, err.field)
            problems.append(Problem(path(err.field), err.message, err.fix, value))
    else:
        for field in ("accelerator", "gpus_per_node"):
            if getattr(pool, field) is not None:
                problems.append(
                    Problem(
                        path(field),
                        "CPU pools carry no GPUs",
                        f"remove {field}, or set kind: gpu",
                        getattr(pool, field),
                    )
                )
    # Nodes are named only where pools are existing machines, which the backend cannot scale.
    scales = backend is None or backend.supports(Feature.AUTOSCALING)
    if scales and pool.nodes is not None:
        problems.append(
            Problem(
                path("nodes"),
                f"{p.cloud} pools are created and scaled by mlstack; nodes is onprem only",
                "remove nodes",
                pool.nodes,
            )
        )
    if pool.min_nodes is not None and pool.min_nodes > pool.max_nodes:
        problems.append(
            Problem(
                path("min_nodes"),
                f"min_nodes is above max_nodes ({pool.max_nodes})",
                f"set min_nodes to at most {pool.max_nodes}",
                pool.min_nodes,
            )
        )
    return problems


def _backend_checks(p: Platform, backend: type[CloudBackend] | None) -> list[Problem]:
    if backend is None:
        return []
    problems = []
    for i, pool in enumerate(p.node_pools):
        feature = CAPACITY_FEATURES.get(pool.capacity)
        reason = backend.unsupported.get(feature) if feature is not None else None
        if reason is not None:
            problems.append(
                Problem(
                    format_path(("node_pools", i, "capacity")),
                    f"{p.cloud} has no {pool.capacity.value} capacity: {reason}",
                    "use capacity: on-demand",
                    pool.capacity.value,
                )
            )
    return problems + backend.check(p)


def _resolve(p: Platform) -> Platform:
    """Fill in what the catalog and defaults decide: machine types, GPU counts, min sizes."""
    backend = get_backend(p.cloud)
    pools = []
    for pool in p.node_pools:
        update: dict[str, Any] = {}
        if pool.kind is PoolKind.GPU and pool.accelerator is not None:
            machine = backend.resolve_gpu_machine(
                pool.accelerator, pool.instance_type, pool.gpus_per_node
            )
            update = {
                "instance_type": machine.instance_type,
                "gpus_per_node": machine.gpus_per_node,
            }
        # Pools the backend scales rest at zero nodes unless the config says otherwise.
        if pool.min_nodes is None and backend.supports(Feature.AUTOSCALING):
            update["min_nodes"] = 0
        pools.append(backend.resolve_pool(p, pool.model_copy(update=update) if update else pool))
    return p.model_copy(update={"node_pools": tuple(pools)})
