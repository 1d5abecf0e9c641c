"""Config checks of the tenancy layer: what the builders beside this module need to be true.

A team's GPU quota and borrowing limits name GPU pools and fit them, its name is a namespace no
one else uses, its cohort exists, its storage prefix is its own; the container defaults are
sound, and no pool takes the name of the Kueue flavor that carries CPU and memory.
"""

from __future__ import annotations

from collections.abc import Mapping

from mlstack.policies.queues import DEFAULT_FLAVOR
from mlstack.stacks.errors import Problem, format_path
from mlstack.stacks.prefixes import prefix_problem, prefixes_nest
from mlstack.stacks.schema import Platform, Team

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


def gpu_quota_problems(p: Platform, sound: Mapping[str, tuple[int, int]]) -> list[Problem]:
    """Each team's GPU quota names a GPU pool and fits in it.

    `sound`: index and GPUs per node of each GPU pool whose own checks passed.
    """
    problems: list[Problem] = []
    pools = {pool.name: pool for pool in p.node_pools}
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
    return problems


def tenancy_problems(p: Platform) -> list[Problem]:
    """Container defaults, the default flavor's name, and each team's namespace, cohort,
    storage prefix and borrowing limits."""
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
        if team.name == t.monitoring_namespace:
            # Name both fields: the user may have meant either one.
            problems.append(
                Problem(
                    format_path(("teams", i, "name")),
                    "is also platform.tenancy.monitoring_namespace, the namespace whose "
                    "scrapers every team admits",
                    "give the team another name, or set platform.tenancy.monitoring_namespace "
                    "to the namespace your monitoring runs in",
                    team.name,
                )
            )
        elif team.name in RESERVED_NAMESPACES:
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
        problems += _prefix_problems(p, i, team)
        problems += _extra_rule_problems(i, team)
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


#: What the platform owns in a team's namespace, by API group: the team's own RBAC, quota,
#: limits, network isolation and queue. A team that may write them can undo its tenancy (bind
#: itself more, lift its quota, open its namespace, point its queue at another team's
#: ClusterQueue), so extra_rules may read them but never write them, like the roles mlstack
#: generates.
_GUARDRAILS = {
    "rbac.authorization.k8s.io": ("roles", "rolebindings", "clusterroles", "clusterrolebindings"),
    "": ("resourcequotas", "limitranges", "namespaces", "serviceaccounts/token"),
    "networking.k8s.io": ("networkpolicies",),
    "kueue.x-k8s.io": ("localqueues", "clusterqueues"),
}
_READ_VERBS = frozenset({"get", "list", "watch"})
_ESCALATION_VERBS = ("bind", "escalate", "impersonate")


def _extra_rule_problems(i: int, team: Team) -> list[Problem]:
    """extra_rules as strict as the roles mlstack generates: no wildcards, no verbs that grant
    more than they hold, no writes to the guardrails the platform owns."""
    problems = []
    for j, rule in enumerate(team.extra_rules):
        at = format_path(("teams", i, "extra_rules", j))
        wild = [f for f in ("api_groups", "resources", "verbs") if "*" in getattr(rule, f)]
        escalation = [v for v in _ESCALATION_VERBS if v in rule.verbs]
        writes = sorted(set(rule.verbs) - _READ_VERBS - set(_ESCALATION_VERBS))
        owned = [
            (group, resource)
            for group in rule.api_groups
            for resource in rule.resources
            if resource in _GUARDRAILS.get(group, ())
        ]
        if wild:
            problems.append(
                Problem(
                    f"{at}.{wild[0]}",
                    "'*' also grants whatever the API adds later",
                    f"list the {wild[0]} the team needs",
                    list(getattr(rule, wild[0])),
                )
            )
        elif escalation:
            problems.append(
                Problem(
                    f"{at}.verbs",
                    f"{', '.join(escalation)} {'lets' if len(escalation) == 1 else 'let'} the "
                    "team grant itself more than it has",
                    f"remove {', '.join(escalation)}",
                    list(rule.verbs),
                )
            )
        elif writes and owned:
            group, resource = owned[0]
            problems.append(
                Problem(
                    f"{at}.resources",
                    f"writing {resource} ({group or 'core'} group) lets team {team.name} undo "
                    "the isolation the platform gives it",
                    "grant only get, list and watch on it, or change it through the stack "
                    "config (quota, groups, allow_load_balancers)",
                    list(rule.resources),
                )
            )
    return problems


def _prefix_problems(p: Platform, i: int, team: Team) -> list[Problem]:
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
