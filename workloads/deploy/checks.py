"""Config checks of the workloads the builders beside this module deploy.

A training job or an inference service names a team and a pool that exist, its image repository
is listed, its own fields agree, and its pool and its team's quota can hold it at its largest.
At its largest a workload is a number of pods at once, each asking for CPUs, memory and GPUs: a
training job's hosts (a JAX job runs all of its processes or none), an inference service's
replicas plus the surge pods of a rolling update. One check holds those pods against the pool's
nodes and the team's quota, which Kueue admits within; each kind says what does not fit in its
own words.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mlstack.components.backend import get_backend
from mlstack.policies.gpu_quota import pool_gpu_quota
from mlstack.policies.queues import PRIORITIES
from mlstack.stacks.errors import Problem, format_path
from mlstack.stacks.names import SERVE_REPOSITORY, SERVING_PRIORITY, TRAIN_REPOSITORY
from mlstack.stacks.prefixes import prefix_problem
from mlstack.stacks.schema import (
    Capacity,
    InferenceService,
    NodePool,
    Platform,
    PoolKind,
    Team,
    TrainingJob,
)
from mlstack.workloads.deploy.serving import deployment_name
from mlstack.workloads.deploy.settings import job_settings, service_settings
from mlstack.workloads.train.configs import CONFIGS, TrainConfig

#: Bytes per parameter in a checkpoint: float32 parameters and Adam's two float32 moments
#: (workloads/train/state.py; "parameters and optimizer state stay float32", configs.py).
CHECKPOINT_BYTES_PER_PARAM = 12
#: The rate a SIGTERM save is assumed to reach, in MiB/s: process 0 writes the state with orbax
#: to the node's disk, then uploads it. benchmarks/checkpoint_io.py measured 111 MiB/s for that
#: path (RESULTS.md) and a gp3 root volume's baseline is 125 MiB/s (EBS "General Purpose SSD
#: volumes"), so 100 is what a node can be counted on for.
SAVE_MIB_PER_S = 100


def workload_problems(p: Platform, sound: Mapping[str, tuple[int, int]]) -> list[Problem]:
    """The workloads' references, then each training job's problems, then each service's.

    `sound`: index and GPUs per node of each GPU pool whose own checks passed.
    """
    problems = _reference_problems(p)
    jobs, services = p.workloads.training_jobs, p.workloads.inference_services
    problems += _repository_problems(p, jobs, TRAIN_REPOSITORY, "training jobs")
    for i, job in enumerate(jobs):
        problems += _training_job_problems(p, i, job, sound)
    problems += _repository_problems(p, services, SERVE_REPOSITORY, "inference services")
    for i, service in enumerate(services):
        problems += _inference_service_problems(p, i, service, sound)
    return problems


# --- a workload at its largest, against its pool and its team's quota --------------------------


@dataclass(frozen=True)
class _Words:
    """How one kind of workload says what does not fit: str.format templates over facts.

    Every template may use count, gpus, size_field, detail, pool, pool_index, max_nodes, team and
    team_index; placement also nodes, places and most; reach also need, reachable and lower
    ("lower <size_field> to at most N, or " where fewer pods would fit, else ""); quota also
    field, each, unit, quota, total and share; pods also pods_quota.
    """

    placement: str
    placement_fix: str
    reach: str
    reach_fix: str
    quota: str
    quota_fix: str
    pods: str
    pods_fix: str


_JOB_WORDS = _Words(
    placement="{count} hosts of {gpus} GPUs need {nodes} nodes of pool {pool!r}, which has at "
    "most {max_nodes}",
    placement_fix="lower num_hosts to at most {most} or raise "
    "platform.node_pools[{pool_index}].max_nodes",
    reach="the job needs {need} GPUs of pool {pool!r} at once ({count} hosts x {gpus}) but team "
    "{team} may hold at most {reachable} there, so Kueue would never admit it",
    reach_fix="lower num_hosts or gpus_per_host, or raise "
    "platform.teams[{team_index}].quota.gpus.{pool} to {need}",
    quota="{count} pods x {each:g}{unit} = {total:g}{unit} exceed team {team}'s quota of "
    "{quota:g}{unit}, so Kueue would never admit the job",
    quota_fix="lower it to at most {share:g} per pod, or raise "
    "platform.teams[{team_index}].quota.{field}",
    pods="exceeds team {team}'s quota of {pods_quota} pods",
    pods_fix="lower num_hosts, or raise platform.teams[{team_index}].quota.pods",
)
_SERVICE_WORDS = _Words(
    placement="{count} pods at once ({detail}) of {gpus} GPUs need more than the {places} that "
    "pool {pool!r} can place ({max_nodes} nodes)",
    placement_fix="lower {size_field} to at most {most} or raise "
    "platform.node_pools[{pool_index}].max_nodes",
    reach="the service needs up to {need} GPUs of pool {pool!r} at once ({detail}, x {gpus}) but "
    "team {team} may hold at most {reachable} there, so Kueue would hold back the last pods and "
    "a rollout would stall",
    reach_fix="{lower}raise platform.teams[{team_index}].quota.gpus.{pool} to {need}",
    quota="{count} pods at most (replicas and rolling-update surge) x {each:g}{unit} = "
    "{total:g}{unit} exceed team {team}'s quota of {quota:g}{unit}",
    quota_fix="lower it to at most {share:g} per replica, lower max_replicas, or raise "
    "platform.teams[{team_index}].quota.{field}",
    pods="{count} pods at most (replicas and rolling-update surge) exceed team {team}'s quota "
    "of {pods_quota} pods",
    pods_fix="lower {size_field}, or raise platform.teams[{team_index}].quota.pods",
)


@dataclass(frozen=True)
class _Largest:
    """A workload at its largest: `count` pods at once, each asking for the workload's CPUs and
    memory and for `gpus`. `size` is the field that sets the count and its value (the rest are
    surge pods): the field a fix lowers."""

    words: _Words
    path: Callable[..., str]
    platform: Platform
    #: The indices of the workload's pool and team.
    found: tuple[int, int]
    workload: TrainingJob | InferenceService
    count: int
    gpus: int
    size: tuple[str, int]
    #: Words of the kind's own that its templates use.
    detail: str = ""
    #: The least the size field may be (max_replicas >= replicas, replicas > canary
    #: replicas): a fix never suggests lowering it below this, which would only trade this
    #: problem for another.
    floor: int = 1

    @property
    def pool(self) -> NodePool:
        return self.platform.node_pools[self.found[0]]

    @property
    def team(self) -> Team:
        return self.platform.teams[self.found[1]]

    def problem(self, template: str, fix: str, at: str, value: Any, **facts: Any) -> Problem:
        """A problem at the workload's field `at`, in the words of `template` and `fix`."""
        words = {
            "count": self.count,
            "gpus": self.gpus,
            "size_field": self.size[0],
            "detail": self.detail,
            "pool": self.pool.name,
            "pool_index": self.found[0],
            "max_nodes": self.pool.max_nodes,
            "team": self.team.name,
            "team_index": self.found[1],
            **facts,
        }
        return Problem(self.path(at), template.format(**words), fix.format(**words), value)


def _fit_problems(w: _Largest, per_node: int) -> list[Problem]:
    """Whether the pool's nodes and the team's GPU quota can hold all the pods at once."""
    pool, words = w.pool, w.words
    size_field, size = w.size
    per_pod_node = per_node // w.gpus
    places = per_pod_node * pool.max_nodes
    spare = w.count - size
    if w.count > places:
        nodes = -(-w.count // per_pod_node)
        facts = {"nodes": nodes, "places": places, "most": places - spare}
        fix = words.placement_fix
        if places - spare < w.floor:
            fix = "raise platform.node_pools[{pool_index}].max_nodes to at least {nodes}"
        return [w.problem(words.placement, fix, size_field, size, **facts)]
    need = w.count * w.gpus
    reachable = pool_gpu_quota(w.team, pool.name).reachable(per_node * pool.max_nodes)
    if need > reachable:
        fewer = reachable // w.gpus - spare
        lower = f"lower {size_field} to at most {fewer}, or " if fewer >= w.floor else ""
        facts = {"need": need, "reachable": reachable, "lower": lower}
        return [w.problem(words.reach, words.reach_fix, size_field, size, **facts)]
    return []


def _quota_problems(w: _Largest) -> list[Problem]:
    """CPU, memory and pods of all the pods against the team's quota."""
    quota, words = w.team.quota, w.words
    problems = []
    n = w.count
    for field, each, most, unit in (
        ("cpu", w.workload.cpu, quota.cpu, " CPUs"),
        ("memory_gib", w.workload.memory_gib, quota.memory_gib, " GiB"),
    ):
        if n * each > most:
            facts = {"field": field, "each": each, "unit": unit}
            facts |= {"quota": most, "total": n * each, "share": most / n}
            problems.append(w.problem(words.quota, words.quota_fix, field, each, **facts))
    if n > quota.pods:
        size_field, size = w.size
        facts = {"pods_quota": quota.pods}
        problems.append(w.problem(words.pods, words.pods_fix, size_field, size, **facts))
    return problems


def _node_gpus_problem(
    path: Callable[..., str], field: str, value: int | None, pool: NodePool, per_node: int
) -> Problem:
    message = f"nodes of pool {pool.name!r} have {per_node} GPUs"
    return Problem(path(field), message, f"set {field} to at most {per_node}", value)


def _cpu_pool_problem(
    path: Callable[..., str], field: str, value: int | None, pool: NodePool, fix: str
) -> Problem:
    return Problem(path(field), f"pool {pool.name!r} is a CPU pool and carries no GPUs", fix, value)


# --- names a workload refers to ---------------------------------------------------------------


def _reference_problems(p: Platform) -> list[Problem]:
    """Each workload's team and pool exist."""
    problems = []
    teams = sorted({t.name for t in p.teams})
    pools = list(dict.fromkeys(x.name for x in p.node_pools))
    references = (
        ("team", "team", teams, ", ".join(teams) or "none defined"),
        ("pool", "node pool", pools, ", ".join(pools)),
    )
    kinds: tuple[tuple[str, Iterable[TrainingJob | InferenceService]], ...] = (
        ("training_jobs", p.workloads.training_jobs),
        ("inference_services", p.workloads.inference_services),
    )
    for kind, items in kinds:
        for i, item in enumerate(items):
            for field, what, names, choices in references:
                name = getattr(item, field)
                if name not in names:
                    path = format_path(("workloads", kind, i, field))
                    problems.append(
                        Problem(path, f"names no {what}", f"use one of: {choices}", name)
                    )
    return problems


def _pool_and_team(p: Platform, item: TrainingJob | InferenceService) -> tuple[int, int] | None:
    """The indices of the workload's pool and team; None when either is missing (reported by
    `_reference_problems`)."""
    pool_index = next((k for k, x in enumerate(p.node_pools) if x.name == item.pool), None)
    team_index = next((k for k, x in enumerate(p.teams) if x.name == item.team), None)
    if pool_index is None or team_index is None:
        return None
    return pool_index, team_index


def _repository_problems(
    p: Platform, items: tuple[Any, ...], repository: str, what: str
) -> list[Problem]:
    """Workloads of a kind run images from `repository`, which must be listed (an empty list is
    its own problem: the backends refuse it)."""
    repositories = p.registry.repositories
    if not items or not repositories or repository in repositories:
        return []
    return [
        Problem(
            "platform.registry.repositories",
            f"{what} run images from the {repository!r} repository, which is not listed",
            f"add {repository} to platform.registry.repositories",
            p.registry.repositories,
        )
    ]


# --- training jobs ----------------------------------------------------------------------------


def _training_job_problems(
    p: Platform, i: int, job: TrainingJob, sound: Mapping[str, tuple[int, int]]
) -> list[Problem]:
    def path(field: str) -> str:
        return format_path(("workloads", "training_jobs", i, field))

    return training_job_problems(p, path, job, sound)


def training_job_problems(
    p: Platform,
    path: Callable[[str], str],
    job: TrainingJob,
    sound: Mapping[str, tuple[int, int]],
) -> list[Problem]:
    """A job's own settings, and whether its pool and its team's quota can ever run it; each
    problem at `path(field)` (a pipeline's train step is checked as the job it runs as)."""
    problems: list[Problem] = []

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
    elif job.priority == SERVING_PRIORITY:
        problems.append(
            Problem(
                path("priority"),
                "is the model servers' priority: when the quota is short, Kueue would let the "
                "job preempt the team's serving pods",
                f"use {', or '.join(p for p in priorities if p != SERVING_PRIORITY)}",
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
    found = _pool_and_team(p, job)
    if found is None:
        return problems
    pool = p.node_pools[found[0]]
    if pool.kind is PoolKind.CPU:
        if job.gpus_per_host is not None:
            fix = "remove gpus_per_host, or run the job on a GPU pool"
            problems.append(_cpu_pool_problem(path, "gpus_per_host", job.gpus_per_host, pool, fix))
        per_host = 0
    elif pool.name in sound:
        per_node = sound[pool.name][1]
        per_host = job.gpus_per_host or per_node
        if per_host > per_node:
            # The job's devices are unknown until this is fixed.
            return [
                *problems,
                _node_gpus_problem(path, "gpus_per_host", job.gpus_per_host, pool, per_node),
            ]
    else:
        return problems  # the pool's own problem is reported
    size = ("num_hosts", job.num_hosts)
    largest = _Largest(_JOB_WORDS, path, p, found, job, job.num_hosts, per_host, size)
    if per_host:
        problems += _fit_problems(largest, sound[pool.name][1])
    problems += _quota_problems(largest)
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
        problems += _job_preemption_problems(p, path, job, pool, config)
    return problems


def _spot_notice_s(p: Platform) -> int | None:
    """The cloud's spot reclaim notice for pods; None for a cloud without a backend (reported
    by the cloud check)."""
    try:
        return get_backend(p.cloud).spot_notice_s(p)
    except LookupError:
        return None


def checkpoint_save_s(config: TrainConfig) -> float:
    """Seconds a checkpoint of `config`'s state takes to save at SAVE_MIB_PER_S."""
    size = config.model.num_params * CHECKPOINT_BYTES_PER_PARAM
    return size / (SAVE_MIB_PER_S * 2**20)


def _job_preemption_problems(
    p: Platform, path: Callable[[str], str], job: TrainingJob, pool: NodePool, config: TrainConfig
) -> list[Problem]:
    """What a preemption or a drain costs the job: on SIGTERM it saves a checkpoint within its
    grace period, which on spot the cloud's reclaim notice bounds, and on spot it also saves
    periodically (a reclaim may come with no notice the save can use)."""
    notice = _spot_notice_s(p)
    spot = pool.capacity is Capacity.SPOT and notice is not None
    grace = job_settings(job, pool, notice).termination_grace_period_s
    where = f"spot pool {pool.name!r}"
    problems = []
    save_s = checkpoint_save_s(config)
    needed = int(save_s) + 30
    if spot and grace > (notice or 0):
        problems.append(
            Problem(
                path("termination_grace_period_s"),
                f"is longer than the {notice} s {p.cloud.upper()} gives a pod on {where} "
                "before it reclaims the node, so the checkpoint save on SIGTERM would be cut off",
                f"use at most {notice}, or leave it unset (the notice is the default on spot)",
                grace,
            )
        )
    elif save_s > grace:
        gib = config.model.num_params * CHECKPOINT_BYTES_PER_PARAM / 2**30
        fits = not spot or needed <= (notice or 0)
        problems.append(
            Problem(
                path("termination_grace_period_s" if job.termination_grace_period_s else "pool"),
                f"model {config.name!r} saves {gib:.1f} GiB of checkpoint on SIGTERM, about "
                f"{save_s:.0f} s at {SAVE_MIB_PER_S} MiB/s, but its pods get {grace} s"
                + (f" on {where}" if spot else ""),
                f"set termination_grace_period_s to at least {needed}"
                + (f" (at most {notice} on spot)" if spot else "")
                if fits
                else "run it on an on-demand pool",
                job.termination_grace_period_s or job.pool,
            )
        )
    steps = job.steps or config.total_steps
    if spot and job.checkpoint_every_steps >= steps:
        problems.append(
            Problem(
                path("checkpoint_every_steps"),
                f"saves no checkpoint before step {steps}, the last, so a reclaim of {where} "
                "that the SIGTERM save cannot catch loses the whole run",
                f"save every at most {max(steps // 10, 1)} steps, or use an on-demand pool",
                job.checkpoint_every_steps,
            )
        )
    return problems


# --- inference services -----------------------------------------------------------------------


def _inference_service_problems(
    p: Platform, i: int, service: InferenceService, sound: Mapping[str, tuple[int, int]]
) -> list[Problem]:
    """A service's own settings, names that would clash in its namespace, and whether its pool
    and its team's quota can hold it at its largest (every replica plus the surge pods of a
    rolling update)."""
    problems: list[Problem] = []

    def path(*fields: str) -> str:
        return format_path(("workloads", "inference_services", i, *fields))

    problems += _service_own_problems(path, service)
    if service.autoscale_on == "requests_per_second" and not p.cluster.custom_metrics_adapter:
        # The HPA reads the metric from custom.metrics.k8s.io; with no adapter serving it the
        # HPA reports FailedGetPodsMetric and never scales (issue 16, item 14).
        problems.append(
            Problem(
                path("autoscale_on"),
                "nothing serves the custom metric mlstack_serve_requests_per_second: mlstack "
                "installs no Prometheus or metrics adapter, so the autoscaler would never scale",
                "use autoscale_on: cpu, or run prometheus-adapter (README, Inference services) "
                "and set cluster.custom_metrics_adapter: true",
                service.autoscale_on,
            )
        )
    problems += _service_name_problems(p, path, i, service)
    found = _pool_and_team(p, service)
    if found is None:
        return problems
    pool_index, team_index = found
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
    notice = _spot_notice_s(p)
    settings = service_settings(service, pool, notice)
    if (
        pool.capacity is Capacity.SPOT
        and notice is not None
        and settings.termination_grace_period_s > notice
    ):
        problems.append(
            Problem(
                path("termination_grace_period_s"),
                f"is longer than the {notice} s {p.cloud.upper()} gives a pod on spot pool "
                f"{pool.name!r} before it reclaims the node, so the drain would be cut off",
                f"use at most {notice}, or leave it unset (the notice is the default on spot)",
                settings.termination_grace_period_s,
            )
        )
    gpus = settings.gpus_per_replica
    surge = settings.deployments
    surge_pods = "1 surge pod" if surge == 1 else f"{surge} surge pods"
    detail = f"{settings.max_replicas} replicas and {surge_pods} of a rolling update"
    size = _replicas_field(service)
    floor = service.replicas if size[0] == "max_replicas" else 1
    if size[0] == "replicas" and canary is not None:
        floor = canary.replicas + 1
    largest = _Largest(
        _SERVICE_WORDS, path, p, found, service, settings.peak_replicas, gpus, size, detail, floor
    )
    if pool.kind is PoolKind.CPU:
        if gpus:
            fix = "remove gpus_per_replica, or serve from a GPU pool"
            value = service.gpus_per_replica
            return [*problems, _cpu_pool_problem(path, "gpus_per_replica", value, pool, fix)]
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
    # GPUs per node as the catalog resolves them: a cloud pool may leave gpus_per_node unset.
    elif gpus > (per_node := sound[pool.name][1]):
        problems.append(
            _node_gpus_problem(path, "gpus_per_replica", service.gpus_per_replica, pool, per_node)
        )
    else:
        problems += _fit_problems(largest, per_node)
    return problems + _quota_problems(largest)


def _replicas_field(service: InferenceService) -> tuple[str, int]:
    """The field that sets the most replicas, and its value."""
    if service.max_replicas is not None:
        return "max_replicas", service.max_replicas
    return "replicas", service.replicas


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


def workload_notes(p: Platform) -> list[str]:
    """What a valid config should still tell its user: a service whose model no training job
    of the stack exports serves only a bundle someone put in the models bucket by hand."""
    notes = []
    for service in p.workloads.inference_services:
        exported = sorted(j.name for j in p.workloads.training_jobs if j.team == service.team)
        if service.model_name not in exported:
            known = ", ".join(exported) or "none"
            notes.append(
                f"inference service {service.team}/{service.name} serves model "
                f"{service.model_name!r}, which no training job of team {service.team} exports "
                f"(its jobs: {known}); it becomes ready only once a bundle of that name is in "
                "the models bucket"
            )
    return notes
