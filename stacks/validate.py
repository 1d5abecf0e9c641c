"""Load and validate a platform config: every problem at once, before anything is declared.

Field problems (types, unknown fields, ranges) come from the schema and are all reported in one
pass. Only when the fields are sound do the cross-field checks run (unique names, references,
the accelerator catalog, capacity, the backend's own rules), again all reported at once: they
need a well-formed config to say anything true.
"""

from __future__ import annotations

import difflib
import types
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from mlstack.components.backend import (
    BackendUnavailableError,
    CloudBackend,
    available_clouds,
    get_backend,
)
from mlstack.components.features import CAPACITY_FEATURES, Feature
from mlstack.components.kubernetes.extra import extra_manifest_key
from mlstack.components.kubernetes.resources import top_level_fields
from mlstack.policies.queues import DEFAULT_FLAVOR, PRIORITIES
from mlstack.stacks.catalog import CLOUDS, CatalogError
from mlstack.stacks.errors import ConfigError, Problem, format_path
from mlstack.stacks.prefixes import prefix_problem, prefixes_nest
from mlstack.stacks.schema import InferenceService, NodePool, Platform, PoolKind, Team, TrainingJob
from mlstack.workloads.deploy.serving import deployment_name
from mlstack.workloads.deploy.settings import (
    SERVE_REPOSITORY,
    TRAIN_REPOSITORY,
    ServiceSettings,
    service_settings,
)
from mlstack.workloads.train.configs import CONFIGS


def load_platform(raw: Any, source: str | None = None) -> Platform:
    """Validate raw config (the `mlstack:platform` value) into a resolved, frozen Platform.

    Raises ConfigError listing every problem found.
    """
    if raw is None:
        raise ConfigError(
            [Problem("platform", "the stack sets no mlstack:platform", "add a config section")],
            source,
        )
    if not isinstance(raw, Mapping):
        raise ConfigError(
            [Problem("platform", "must be a mapping of fields", "see the README", raw)], source
        )
    try:
        platform = Platform.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([_problem_from_pydantic(e) for e in exc.errors()], source) from None
    problems = check_platform(platform)
    if problems:
        raise ConfigError(problems, source)
    return _resolve(platform)


def check_platform(p: Platform) -> list[Problem]:
    """Cross-field checks on a platform whose fields are individually valid."""
    backend = _backend(p)
    problems: list[Problem] = []
    problems += _check_cloud(p)
    problems += _check_unique(p)
    pools = {pool.name: pool for pool in p.node_pools}
    #: GPUs per node of each sound GPU pool, with its index (for the fix's path).
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
    for i, team in enumerate(p.teams):
        for pool_name, gpus in team.quota.gpus.items():
            path = format_path(("teams", i, "quota", "gpus", pool_name))
            ref_problem = _gpu_count_problem(p, path, pool_name, gpus, "GPU quota")
            if ref_problem is not None:
                problems.append(ref_problem)
            elif pool_name in sound and gpus > sound[pool_name][1] * pools[pool_name].max_nodes:
                pool = pools[pool_name]
                index, per_node = sound[pool_name]
                most = per_node * pool.max_nodes
                problems.append(
                    Problem(
                        path,
                        f"quota exceeds pool {pool_name!r} maximum of {most} GPUs "
                        f"({pool.max_nodes} nodes x {per_node} GPUs)",
                        f"lower it to at most {most} or raise "
                        f"platform.node_pools[{index}].max_nodes",
                        gpus,
                    )
                )
    problems += _check_tenancy(p)
    problems += _check_workload_refs(p, pools)
    problems += _check_training_jobs(p, sound)
    problems += _check_inference_services(p, sound)
    problems += _check_extra_manifests(p)
    problems += _backend_checks(p, backend)
    return problems


def _backend(p: Platform) -> type[CloudBackend] | None:
    """The platform's backend; None for a cloud without one (reported by _check_cloud)."""
    try:
        return get_backend(p.cloud)
    except LookupError:
        return None


#: Namespaces a team may not take: Kubernetes' own and the platform's add-ons.
RESERVED_NAMESPACES = frozenset(
    {
        "default",
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "mlstack-system",
        "kueue-system",
        "jobset-system",
    }
)


def _check_tenancy(p: Platform) -> list[Problem]:
    problems = []
    t = p.tenancy
    cohorts = [c.name for c in t.cohorts]
    for what in ("cpu", "memory_gib"):
        request = getattr(t, f"default_request_{what}")
        limit = getattr(t, f"default_limit_{what}")
        if request > limit:
            problems.append(
                Problem(
                    f"platform.tenancy.default_request_{what}",
                    f"the default request is above the default limit ({limit:g})",
                    f"lower it to at most {limit:g} or raise default_limit_{what}",
                    request,
                )
            )
    for i, pool in enumerate(p.node_pools):
        if pool.name == DEFAULT_FLAVOR:
            problems.append(
                Problem(
                    format_path(("node_pools", i, "name")),
                    "is the name of the Kueue flavor that carries CPU and memory quota",
                    "give the pool another name",
                    pool.name,
                )
            )
    for i, team in enumerate(p.teams):
        if team.name in RESERVED_NAMESPACES or team.name == t.monitoring_namespace:
            problems.append(
                Problem(
                    format_path(("teams", i, "name")),
                    "is a namespace Kubernetes or the platform already uses",
                    "give the team another name",
                    team.name,
                )
            )
        if team.cohort is not None and team.cohort not in cohorts:
            problems.append(
                Problem(
                    format_path(("teams", i, "cohort")),
                    "names no cohort",
                    f"add it to platform.tenancy.cohorts, or use one of: "
                    f"{', '.join(cohorts) or 'none defined'}",
                    team.cohort,
                )
            )
        problems += _check_prefix(p, i, team)
        for pool_name, gpus in team.quota.borrowing_limit_gpus.items():
            path = format_path(("teams", i, "quota", "borrowing_limit_gpus", pool_name))
            ref_problem = _gpu_count_problem(p, path, pool_name, gpus, "borrowing limit")
            if ref_problem is not None:
                problems.append(ref_problem)
            elif team.cohort is None:
                problems.append(
                    Problem(
                        path,
                        "a team borrows only from its cohort, and this team has none",
                        f"set platform.teams[{i}].cohort, or remove the limit",
                        gpus,
                    )
                )
    return problems


def _check_prefix(p: Platform, i: int, team: Team) -> list[Problem]:
    path = format_path(("teams", i, "storage_prefix"))
    prefix = team.object_prefix
    problem = prefix_problem(prefix)
    if problem is not None:
        return [Problem(path, problem, f"use a path such as {team.name!r}", prefix)]
    for other in p.teams[:i]:
        # A duplicate team name is reported as such; a bad prefix on its own line.
        if other.name == team.name or prefix_problem(other.object_prefix) is not None:
            continue
        if prefixes_nest(prefix, other.object_prefix):
            return [
                Problem(
                    path,
                    f"nests with team {other.name}'s prefix {other.object_prefix!r}: one team "
                    "could write the other's checkpoints and models",
                    "give each team its own top-level path, e.g. the team name",
                    prefix,
                )
            ]
    return []


def _gpu_count_problem(
    p: Platform, path: str, pool_name: str, gpus: int, what: str
) -> Problem | None:
    """A per-pool GPU count (quota, borrowing limit) that names no GPU pool or is negative."""
    if pool_name not in {x.name for x in p.gpu_pools}:
        gpu_pools = ", ".join(x.name for x in p.gpu_pools) or "none defined"
        return Problem(path, "names no GPU pool", f"use a GPU pool: {gpu_pools}", pool_name)
    if gpus < 0:
        return Problem(path, f"{what} is negative", "use 0 or more", gpus)
    return None


def _check_extra_manifests(p: Platform) -> list[Problem]:
    problems = []
    seen: dict[str, int] = {}
    for i, manifest in enumerate(p.extra_manifests):
        path = format_path(("extra_manifests", i))
        metadata = manifest.get("metadata")
        fields = {
            "apiVersion": manifest.get("apiVersion"),
            "kind": manifest.get("kind"),
            "metadata.name": metadata.get("name") if isinstance(metadata, Mapping) else None,
        }
        missing = [k for k, v in fields.items() if not isinstance(v, str) or not v]
        if missing:
            problems.append(
                Problem(
                    path,
                    f"a Kubernetes object needs {', '.join(missing)}",
                    "give apiVersion, kind and metadata.name as strings",
                )
            )
            continue
        allowed = top_level_fields(manifest["apiVersion"], manifest["kind"])
        unknown = sorted(set(manifest) - allowed) if allowed is not None else []
        if unknown:
            problems.append(
                Problem(
                    f"{path}.{unknown[0]}",
                    f"{manifest['kind']} ({manifest['apiVersion']}) has no top-level field "
                    f"{unknown[0]}",
                    f"remove it; allowed: {', '.join(sorted(allowed or ()))}",
                )
            )
        key = extra_manifest_key(manifest)
        if key in seen:
            problems.append(
                Problem(
                    f"{path}.metadata.name",
                    f"the same object as platform.extra_manifests[{seen[key]}]",
                    "remove one, or give it another name",
                    fields["metadata.name"],
                )
            )
        seen.setdefault(key, i)
    return problems


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


def _check_workload_refs(p: Platform, pools: Mapping[str, NodePool]) -> list[Problem]:
    problems = []
    teams = {t.name for t in p.teams}
    kinds: tuple[tuple[str, Iterable[Any]], ...] = (
        ("training_jobs", p.workloads.training_jobs),
        ("inference_services", p.workloads.inference_services),
    )
    for kind, items in kinds:
        for i, item in enumerate(items):
            if item.team not in teams:
                problems.append(
                    Problem(
                        format_path(("workloads", kind, i, "team")),
                        "names no team",
                        f"use one of: {', '.join(sorted(teams)) or 'none defined'}",
                        item.team,
                    )
                )
            if item.pool not in pools:
                problems.append(
                    Problem(
                        format_path(("workloads", kind, i, "pool")),
                        "names no node pool",
                        f"use one of: {', '.join(pools)}",
                        item.pool,
                    )
                )
    return problems


def _check_training_jobs(p: Platform, sound: Mapping[str, tuple[int, int]]) -> list[Problem]:
    """A job's own settings, and whether its pool and its team's quota can ever run it.

    `sound`: GPUs per node of each GPU pool whose own checks passed, with its index.
    """
    problems: list[Problem] = []
    jobs = p.workloads.training_jobs
    # An empty list is its own problem (the backends refuse it).
    repositories = p.registry.repositories
    if jobs and repositories and TRAIN_REPOSITORY not in repositories:
        problems.append(
            Problem(
                "platform.registry.repositories",
                f"training jobs run images from the {TRAIN_REPOSITORY!r} repository, which is "
                "not listed",
                f"add {TRAIN_REPOSITORY} to platform.registry.repositories",
                p.registry.repositories,
            )
        )
    for i, job in enumerate(jobs):
        problems += _check_training_job(p, i, job, sound)
    return problems


def _check_training_job(
    p: Platform, i: int, job: TrainingJob, sound: Mapping[str, tuple[int, int]]
) -> list[Problem]:
    problems: list[Problem] = []

    def path(field: str) -> str:
        return format_path(("workloads", "training_jobs", i, field))

    priorities = [x.name for x in PRIORITIES]
    if job.priority not in priorities:
        problems.append(
            Problem(
                path("priority"),
                "names no priority class",
                f"use one of: {', '.join(priorities)}",
                job.priority,
            )
        )
    dataset_problem = prefix_problem(job.dataset)
    if dataset_problem is not None:
        problems.append(
            Problem(path("dataset"), dataset_problem, "use a path such as 'pystdlib'", job.dataset)
        )
    config = CONFIGS.get(job.model)
    if config is None:
        problems.append(
            Problem(
                path("model"),
                "names no model config",
                f"use one of: {', '.join(CONFIGS)}",
                job.model,
            )
        )
    pool_index = next((k for k, x in enumerate(p.node_pools) if x.name == job.pool), None)
    team_index = next((k for k, x in enumerate(p.teams) if x.name == job.team), None)
    if pool_index is None or team_index is None:
        return problems  # reported by _check_workload_refs
    pool, team = p.node_pools[pool_index], p.teams[team_index]
    if pool.kind is PoolKind.CPU:
        if job.gpus_per_host is not None:
            problems.append(
                Problem(
                    path("gpus_per_host"),
                    f"pool {pool.name!r} is a CPU pool and carries no GPUs",
                    "remove gpus_per_host, or run the job on a GPU pool",
                    job.gpus_per_host,
                )
            )
        per_host = 0
    elif pool.name in sound:
        per_node = sound[pool.name][1]
        per_host = job.gpus_per_host or per_node
        if per_host > per_node:
            problems.append(
                Problem(
                    path("gpus_per_host"),
                    f"nodes of pool {pool.name!r} have {per_node} GPUs",
                    f"set gpus_per_host to at most {per_node}",
                    job.gpus_per_host,
                )
            )
            return problems  # the job's devices are unknown until this is fixed
        problems += _gpu_capacity_problems(
            p,
            path,
            job,
            pool_index=pool_index,
            team_index=team_index,
            per_node=per_node,
            per_host=per_host,
        )
    else:
        return problems  # the pool's own problem is reported
    problems += _quota_problems(path, job, team_index, team)
    if config is not None:
        devices = job.num_hosts * max(per_host, 1)
        batch = job.global_batch_size or config.global_batch_size
        if batch % devices:
            where = "global_batch_size" if job.global_batch_size else "num_hosts"
            problems.append(
                Problem(
                    path(where),
                    f"a global batch of {batch} sequences does not split evenly over the job's "
                    f"{devices} devices ({job.num_hosts} hosts x {max(per_host, 1)})",
                    f"set global_batch_size to a multiple of {devices}"
                    + ("" if job.global_batch_size else ", or change num_hosts"),
                    job.global_batch_size or job.num_hosts,
                )
            )
        if job.fsdp is not None and devices % job.fsdp:
            problems.append(
                Problem(
                    path("fsdp"),
                    f"the fsdp axis must divide the job's {devices} devices",
                    f"use a divisor of {devices}, e.g. {max(per_host, 1)}",
                    job.fsdp,
                )
            )
    return problems


def _gpu_capacity_problems(
    p: Platform,
    path: Callable[[str], str],
    job: TrainingJob,
    *,
    pool_index: int,
    team_index: int,
    per_node: int,
    per_host: int,
) -> list[Problem]:
    """Whether the pool's nodes and the team's GPU quota can ever hold all of the job's pods
    at once (a JAX job runs all of its processes or none)."""
    pool, team = p.node_pools[pool_index], p.teams[team_index]
    hosts_per_node = per_node // per_host
    nodes = -(-job.num_hosts // hosts_per_node)
    if nodes > pool.max_nodes:
        return [
            Problem(
                path("num_hosts"),
                f"{job.num_hosts} hosts of {per_host} GPUs need {nodes} nodes of pool "
                f"{pool.name!r}, which has at most {pool.max_nodes}",
                f"lower num_hosts to at most {pool.max_nodes * hosts_per_node} or raise "
                f"platform.node_pools[{pool_index}].max_nodes",
                job.num_hosts,
            )
        ]
    need = job.num_hosts * per_host
    reachable = _reachable_gpus(team, pool, per_node)
    if need > reachable:
        return [
            Problem(
                path("num_hosts"),
                f"the job needs {need} GPUs of pool {pool.name!r} at once ({job.num_hosts} "
                f"hosts x {per_host}) but team {team.name} may hold at most {reachable} there, "
                "so Kueue would never admit it",
                f"lower num_hosts or gpus_per_host, or raise "
                f"platform.teams[{team_index}].quota.gpus.{pool.name} to {need}",
                job.num_hosts,
            )
        ]
    return []


def _reachable_gpus(team: Team, pool: NodePool, per_node: int) -> int:
    """The most GPUs of `pool` the team may hold at once: its quota, or with a cohort what it
    may borrow on top, up to the pool's size."""
    nominal = team.quota.gpus.get(pool.name, 0)
    if team.cohort is None:
        return nominal
    limit = team.quota.borrowing_limit_gpus.get(pool.name)
    most = pool.max_nodes * per_node
    return most if limit is None else min(most, nominal + limit)


def _quota_problems(
    path: Callable[[str], str], job: TrainingJob, team_index: int, team: Team
) -> list[Problem]:
    """CPU, memory and pods of all the job's pods against the team's quota."""
    problems = []
    n = job.num_hosts
    for field, each, quota, unit in (
        ("cpu", job.cpu, team.quota.cpu, " CPUs"),
        ("memory_gib", job.memory_gib, team.quota.memory_gib, " GiB"),
    ):
        if n * each > quota:
            problems.append(
                Problem(
                    path(field),
                    f"{n} pods x {each:g}{unit} = {n * each:g}{unit} exceed team {team.name}'s "
                    f"quota of {quota:g}{unit}, so Kueue would never admit the job",
                    f"lower it to at most {quota / n:g} per pod, or raise "
                    f"platform.teams[{team_index}].quota.{field}",
                    each,
                )
            )
    if n > team.quota.pods:
        problems.append(
            Problem(
                path("num_hosts"),
                f"exceeds team {team.name}'s quota of {team.quota.pods} pods",
                f"lower num_hosts, or raise platform.teams[{team_index}].quota.pods",
                n,
            )
        )
    return problems


def _check_inference_services(p: Platform, sound: Mapping[str, tuple[int, int]]) -> list[Problem]:
    """A service's own settings, names that would clash in its namespace, and whether its pool
    and its team's quota can hold it at its largest (every replica plus the surge pods of a
    rolling update).

    `sound`: GPUs per node of each GPU pool whose own checks passed, with its index.
    """
    problems: list[Problem] = []
    services = p.workloads.inference_services
    repositories = p.registry.repositories
    if services and repositories and SERVE_REPOSITORY not in repositories:
        problems.append(
            Problem(
                "platform.registry.repositories",
                f"inference services run images from the {SERVE_REPOSITORY!r} repository, "
                "which is not listed",
                f"add {SERVE_REPOSITORY} to platform.registry.repositories",
                p.registry.repositories,
            )
        )
    for i, service in enumerate(services):
        problems += _check_inference_service(p, i, service, sound)
    return problems


def _check_inference_service(
    p: Platform, i: int, service: InferenceService, sound: Mapping[str, tuple[int, int]]
) -> list[Problem]:
    problems: list[Problem] = []

    def path(*fields: str) -> str:
        return format_path(("workloads", "inference_services", i, *fields))

    problems += _service_own_problems(path, service)
    problems += _service_name_problems(p, path, i, service)
    pool_index = next((k for k, x in enumerate(p.node_pools) if x.name == service.pool), None)
    team_index = next((k for k, x in enumerate(p.teams) if x.name == service.team), None)
    if pool_index is None or team_index is None:
        return problems  # reported by _check_workload_refs
    pool, team = p.node_pools[pool_index], p.teams[team_index]
    if service.internal_load_balancer and not team.allow_load_balancers:
        problems.append(
            Problem(
                path("internal_load_balancer"),
                f"team {team.name}'s namespace admits no LoadBalancer Services (its quota "
                "allows none)",
                f"set platform.teams[{team_index}].allow_load_balancers: true, or remove "
                "internal_load_balancer (the Service stays ClusterIP)",
                True,
            )
        )
    canary = service.canary
    if (service.max_replicas or service.replicas) < service.replicas or (
        canary is not None and canary.replicas >= service.replicas
    ):
        return problems  # the sizes below need sound replica counts
    settings = service_settings(service, pool)
    gpus = settings.gpus_per_replica
    if pool.kind is PoolKind.CPU:
        if gpus:
            return [
                *problems,
                Problem(
                    path("gpus_per_replica"),
                    f"pool {pool.name!r} is a CPU pool and carries no GPUs",
                    "remove gpus_per_replica, or serve from a GPU pool",
                    service.gpus_per_replica,
                ),
            ]
    elif pool.name not in sound:
        return problems  # the pool's own problem is reported
    elif not gpus:
        return [
            *problems,
            Problem(
                path("gpus_per_replica"),
                f"pool {pool.name!r} is a GPU pool: its nodes take only pods that use GPUs",
                "request at least 1, or serve from a CPU pool",
                service.gpus_per_replica,
            ),
        ]
    else:
        problems += _service_gpu_problems(
            p, path, settings, pool_index=pool_index, team_index=team_index
        )
    return problems + _service_quota_problems(path, settings, team_index, team)


def _service_own_problems(path: Callable[..., str], service: InferenceService) -> list[Problem]:
    """Fields that must agree with each other."""
    problems = []
    most = service.max_replicas or service.replicas
    if service.max_replicas is not None and service.max_replicas < service.replicas:
        problems.append(
            Problem(
                path("max_replicas"),
                f"is below replicas ({service.replicas}), the autoscaler's minimum",
                f"set max_replicas to at least {service.replicas}, or lower replicas",
                service.max_replicas,
            )
        )
    if service.autoscale_on == "requests_per_second" and service.target_requests_per_second is None:
        problems.append(
            Problem(
                path("target_requests_per_second"),
                "autoscale_on is requests_per_second but no target is set",
                "set the requests per second one replica should serve, e.g. 20",
            )
        )
    if service.autoscale_on == "cpu" and service.target_requests_per_second is not None:
        problems.append(
            Problem(
                path("target_requests_per_second"),
                "is only read when autoscale_on is requests_per_second",
                "set autoscale_on: requests_per_second, or remove it",
                service.target_requests_per_second,
            )
        )
    if service.autoscale_on != "cpu" and "target_cpu_percent" in service.model_fields_set:
        problems.append(
            Problem(
                path("target_cpu_percent"),
                "is only read when autoscale_on is cpu",
                "remove it, or set autoscale_on: cpu",
                service.target_cpu_percent,
            )
        )
    if service.model is not None:
        model_problem = prefix_problem(service.model)
        if model_problem is not None:
            problems.append(
                Problem(
                    path("model"),
                    model_problem,
                    "use the training job's name, e.g. 'lm-small'",
                    service.model,
                )
            )
    canary = service.canary
    if canary is None:
        return problems
    if service.version is None:
        problems.append(
            Problem(
                path("version"),
                "a canary needs the stable replicas pinned: unset, they follow `latest` and "
                "load each new export, canary or not",
                f"set version to the bundle the service serves now (not the canary's "
                f"{canary.version!r})",
            )
        )
    elif canary.version == service.version:
        problems.append(
            Problem(
                path("canary", "version"),
                "is the version the stable replicas serve",
                "name the new bundle version, or remove canary once it is promoted",
                canary.version,
            )
        )
    if canary.replicas >= service.replicas:
        problems.append(
            Problem(
                path("canary", "replicas"),
                f"leaves no stable replica: the service's {service.replicas} replicas include "
                "the canary's",
                f"set it below {service.replicas}, or raise replicas (and max_replicas, now "
                f"{most}) to make room",
                canary.replicas,
            )
        )
    return problems


def _service_name_problems(
    p: Platform, path: Callable[..., str], i: int, service: InferenceService
) -> list[Problem]:
    """Names its objects would share with other objects in the team's namespace."""
    problems = []
    if any(j.team == service.team and j.name == service.name for j in p.workloads.training_jobs):
        model = "" if service.model is not None else f", and set model: {service.name}"
        problems.append(
            Problem(
                path("name"),
                f"team {service.team}'s training job of this name owns the Service of this "
                "name (its JobSet's headless Service)",
                f"give the service another name, e.g. '{service.name[:36]}-api'{model}",
                service.name,
            )
        )
    for k, other in enumerate(p.workloads.inference_services):
        if (
            k != i
            and other.team == service.team
            and other.canary is not None
            and deployment_name(other, "canary") == service.name
        ):
            problems.append(
                Problem(
                    path("name"),
                    f"is the name of the canary Deployment of "
                    f"platform.workloads.inference_services[{k}]",
                    "give the service another name",
                    service.name,
                )
            )
    return problems


def _replicas_field(service: InferenceService) -> tuple[str, int]:
    """The field that sets the most replicas, and its value."""
    if service.max_replicas is not None:
        return "max_replicas", service.max_replicas
    return "replicas", service.replicas


def _service_gpu_problems(
    p: Platform,
    path: Callable[..., str],
    settings: ServiceSettings,
    *,
    pool_index: int,
    team_index: int,
) -> list[Problem]:
    """Whether the pool's nodes and the team's GPU quota can hold the service at its largest."""
    service = settings.service
    pool, team = p.node_pools[pool_index], p.teams[team_index]
    per_node = pool.gpus
    gpus = settings.gpus_per_replica
    if gpus > per_node:
        return [
            Problem(
                path("gpus_per_replica"),
                f"nodes of pool {pool.name!r} have {per_node} GPUs",
                f"set gpus_per_replica to at most {per_node}",
                service.gpus_per_replica,
            )
        ]
    field, value = _replicas_field(service)
    peak, surge = settings.peak_replicas, settings.deployments
    surge_pods = "1 surge pod" if surge == 1 else f"{surge} surge pods"
    at_most = f"{settings.max_replicas} replicas and {surge_pods} of a rolling update"
    per_pool = (per_node // gpus) * pool.max_nodes
    if peak > per_pool:
        return [
            Problem(
                path(field),
                f"{peak} pods at once ({at_most}) of {gpus} GPUs need more than the "
                f"{per_pool} that pool {pool.name!r} can place ({pool.max_nodes} nodes)",
                f"lower {field} to at most {per_pool - surge} or raise "
                f"platform.node_pools[{pool_index}].max_nodes",
                value,
            )
        ]
    need = peak * gpus
    reachable = _reachable_gpus(team, pool, per_node)
    if need > reachable:
        fewer = reachable // gpus - surge
        lower = f"lower {field} to at most {fewer}, or " if fewer >= 1 else ""
        return [
            Problem(
                path(field),
                f"the service needs up to {need} GPUs of pool {pool.name!r} at once ({at_most}, "
                f"x {gpus}) but team {team.name} may hold at most {reachable} there, so Kueue "
                "would hold back the last pods and a rollout would stall",
                f"{lower}raise platform.teams[{team_index}].quota.gpus.{pool.name} to {need}",
                value,
            )
        ]
    return []


def _service_quota_problems(
    path: Callable[..., str], settings: ServiceSettings, team_index: int, team: Team
) -> list[Problem]:
    """CPU, memory and pods of the service at its largest against the team's quota."""
    service = settings.service
    problems = []
    n = settings.peak_replicas
    for field, each, quota, unit in (
        ("cpu", service.cpu, team.quota.cpu, " CPUs"),
        ("memory_gib", service.memory_gib, team.quota.memory_gib, " GiB"),
    ):
        if n * each > quota:
            problems.append(
                Problem(
                    path(field),
                    f"{n} pods at most (replicas and rolling-update surge) x {each:g}{unit} = "
                    f"{n * each:g}{unit} exceed team {team.name}'s quota of {quota:g}{unit}",
                    f"lower it to at most {quota / n:g} per replica, lower max_replicas, or "
                    f"raise platform.teams[{team_index}].quota.{field}",
                    each,
                )
            )
    if n > team.quota.pods:
        field, value = _replicas_field(service)
        problems.append(
            Problem(
                path(field),
                f"{n} pods at most (replicas and rolling-update surge) exceed team "
                f"{team.name}'s quota of {team.quota.pods} pods",
                f"lower {field}, or raise platform.teams[{team_index}].quota.pods",
                value,
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


# --- pydantic errors as one-line problems -------------------------------------------------


def _problem_from_pydantic(err: Mapping[str, Any]) -> Problem:
    loc = tuple(err["loc"])
    path = format_path(loc)
    kind = err["type"]
    msg: str = err["msg"]
    value = err.get("input")
    if kind == "missing":
        field = _field_at(loc)
        description = field.description if field is not None else None
        hint = f": {description}" if description else ""
        return Problem(path, "required field is missing", f"add {loc[-1]}{hint}")
    if kind == "extra_forbidden":
        allowed = _allowed_fields(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        fix = f"rename it to {close[0]!r}" if close else "remove it"
        return Problem(path, "unknown field", f"{fix}; allowed here: {', '.join(allowed)}", value)
    if msg.startswith("Value error, "):
        return Problem(path, "invalid value", msg.removeprefix("Value error, "), value)
    if msg.startswith("Input should be"):
        return Problem(path, "invalid value", "use" + msg.removeprefix("Input should be"), value)
    return Problem(path, msg, "see the README's config reference", value)


def _unwrap(annotation: Any) -> Any:
    """Strip Optional/Annotated wrappers down to a model class or container type."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else annotation
    if origin is not None and hasattr(annotation, "__metadata__"):
        return _unwrap(get_args(annotation)[0])
    return annotation


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    current: Any = Platform
    for part in loc:
        current = _unwrap(current)
        origin = get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif origin in (tuple, list) or origin is dict:
            current = get_args(current)[-1] if origin is dict else get_args(current)[0]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _field_at(loc: tuple[Any, ...]) -> Any:
    model = _model_at(loc[:-1])
    return model.model_fields.get(str(loc[-1])) if model is not None else None


def _allowed_fields(loc: tuple[Any, ...]) -> list[str]:
    model = _model_at(loc)
    return list(model.model_fields) if model is not None else []
