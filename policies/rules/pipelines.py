"""Rules for scheduled and pipelined work: CronJobs that keep starting, pipeline runners that
can do no more than run their steps, and batch work that Kueue queues.

A pipeline's step Jobs and JobSets exist only while a run runs (the runner creates them from the
pipeline's ConfigMap), so the queue rule reads them where they are declared: the step manifests
inside the ConfigMap's `pipeline.json`.
"""

from __future__ import annotations

from typing import Any

from pulumi_policy import (
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    StackValidationArgs,
)

from mlstack.policies.rules.objects import (
    describe,
    get,
    kind_of,
    mapping,
    number,
    queue_name,
    resource_rule,
    sequence,
    stack_rule,
)
from mlstack.policies.rules.tenancy import Objects
from mlstack.stacks.names import PIPELINE_RUNNER_SA, QUEUE_LABEL
from mlstack.workloads.pipeline.spec import Pipeline, SpecError

#: The ServiceAccount a team's pipeline runner (a CronJob) runs as.
RUNNER_ACCOUNT = PIPELINE_RUNNER_SA
#: The key of a pipeline ConfigMap that holds the runtime spec (`spec.Pipeline` as JSON).
PIPELINE_KEY = "pipeline.json"
#: What a runner may do: run its steps as Jobs and JobSets and follow them (the cluster
#: executor creates, reads, lists and deletes them; watch is the same read).
RUNNER_RESOURCES: dict[str, frozenset[str]] = {
    "batch": frozenset({"jobs", "jobs/status"}),
    "jobset.x-k8s.io": frozenset({"jobsets", "jobsets/status"}),
}
RUNNER_VERBS = frozenset({"create", "get", "list", "watch", "delete"})
SAFE_CONCURRENCY = ("Forbid", "Replace")


# --- CronJobs ------------------------------------------------------------------------------


def cronjobs_keep_starting(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """The CronJob controller counts the starts it missed since the last one; past 100 it
    starts the job no more and only logs an error, unless `startingDeadlineSeconds` is set, in
    which case it counts only the misses within that deadline (Kubernetes docs, "CronJob
    limitations"). Allow (the default) lets a slow run overlap the next one."""
    if kind_of(args.resource_type) != "CronJob":
        return
    spec = mapping(args.props.get("spec"))
    where = describe("CronJob", args.props)
    if number(spec.get("startingDeadlineSeconds")) <= 0:
        report(
            f"{where} has no startingDeadlineSeconds, so after 100 missed starts (a cluster "
            "down for a while) the CronJob controller never starts it again; set "
            "spec.startingDeadlineSeconds (e.g. 3600)",
            None,
        )
    policy = spec.get("concurrencyPolicy") or "Allow"
    if policy not in SAFE_CONCURRENCY:
        report(
            f"{where} has concurrencyPolicy {policy}, so a run that outlasts its period "
            "overlaps the next one; set spec.concurrencyPolicy to Forbid (or Replace)",
            None,
        )


# --- the pipeline runner's RBAC ------------------------------------------------------------


def _binds_runner(binding: PolicyResource) -> bool:
    return any(
        get(s, "kind") == "ServiceAccount" and get(s, "name") == RUNNER_ACCOUNT
        for s in sequence(binding.props.get("subjects"))
    )


def _rule_problems(rule: Any) -> list[str]:
    """What a rule of the runner's role grants beyond running its steps."""
    problems: list[str] = []
    groups = [str(g) for g in sequence(get(rule, "apiGroups"))]
    resources = [str(r) for r in sequence(get(rule, "resources"))]
    verbs = [str(v) for v in sequence(get(rule, "verbs"))]
    for field, values in (("apiGroups", groups), ("resources", resources), ("verbs", verbs)):
        if "*" in values:
            problems.append(f"{field} '*'")
    if sequence(get(rule, "nonResourceURLs")):
        problems.append("nonResourceURLs")
    allowed = set().union(*(RUNNER_RESOURCES.get(g, frozenset()) for g in groups))
    extra_groups = sorted(set(groups) - set(RUNNER_RESOURCES) - {"*"})
    if extra_groups:
        problems.append(f"apiGroups {', '.join(repr(g) for g in extra_groups)}")
    extra = sorted(set(resources) - allowed - {"*"})
    if extra:
        problems.append(f"resources {', '.join(extra)}")
    extra_verbs = sorted(set(verbs) - RUNNER_VERBS - {"*"})
    if extra_verbs:
        problems.append(f"verbs {', '.join(extra_verbs)}")
    return problems


def pipeline_runner_rbac_scoped(args: StackValidationArgs, report: ReportViolation) -> None:
    objects = Objects.of(args.resources)
    for b in objects.by_kind.get("ClusterRoleBinding", ()):
        if _binds_runner(b):
            report(
                f"{describe('ClusterRoleBinding', b.props)} binds the {RUNNER_ACCOUNT} "
                "ServiceAccount cluster-wide, so a team's pipeline could run Jobs in every "
                "namespace; bind it with a RoleBinding in its own namespace",
                b.urn,
            )
    for b in objects.by_kind.get("RoleBinding", ()):
        if not _binds_runner(b):
            continue
        ns = get(b.props, "metadata", "namespace")
        ref = mapping(b.props.get("roleRef"))
        kind, name = str(ref.get("kind") or "Role"), str(ref.get("name") or "")
        role = objects.named(kind, name, ns if kind == "Role" else None)
        if role is None:
            continue
        for i, rule in enumerate(sequence(role.props.get("rules"))):
            problems = _rule_problems(rule)
            if problems:
                report(
                    f"{describe(kind, role.props)} (bound to {ns}/{RUNNER_ACCOUNT}): rules[{i}] "
                    f"grants {'; '.join(problems)}, more than a pipeline runner needs; grant "
                    "only create, get, list, watch and delete on jobs (batch) and jobsets "
                    "(jobset.x-k8s.io)",
                    role.urn,
                )


# --- queue labels --------------------------------------------------------------------------


def _pipeline_of(cm: PolicyResource) -> tuple[str | None, Pipeline | None]:
    """(the raw pipeline.json or None when the ConfigMap holds none, the parsed pipeline or
    None when unreadable)."""
    raw = get(cm.props, "data", PIPELINE_KEY)
    if not isinstance(raw, str):
        return None, None
    try:
        return raw, Pipeline.loads(raw, describe("ConfigMap", cm.props))
    except SpecError:
        return raw, None


def team_jobs_name_their_queue(args: StackValidationArgs, report: ReportViolation) -> None:
    objects = Objects.of(args.resources)
    for ns, _ in objects.team_namespaces():
        queues = sorted(
            str(get(q.props, "metadata", "name")) for q in objects.in_namespace("LocalQueue", ns)
        )
        label = f"{QUEUE_LABEL}: {queues[0] if queues else 'default'}"
        for kind in ("Job", "JobSet", "CronJob"):
            for r in objects.in_namespace(kind, ns):
                if queue_name(kind, r.props) is None:
                    where = (
                        "spec.jobTemplate.metadata.labels" if kind == "CronJob" else "its labels"
                    )
                    report(
                        f"{describe(kind, r.props)} in team namespace {ns!r} names no Kueue "
                        f"queue, so it runs outside the team's quota; add {label} to {where}",
                        r.urn,
                    )
        for cm in objects.in_namespace("ConfigMap", ns):
            _pipeline_queues(cm, ns, queues, label, report)


def _pipeline_queues(
    cm: PolicyResource, ns: str, queues: list[str], label: str, report: ReportViolation
) -> None:
    raw, pipeline = _pipeline_of(cm)
    if raw is None:
        return
    where = describe("ConfigMap", cm.props)
    if pipeline is None:
        report(
            f"{where}: {PIPELINE_KEY} is not a readable pipeline, so its steps' queues cannot "
            "be checked; redeploy it with `mlstack up`",
            cm.urn,
        )
        return
    for step in pipeline.steps:
        if step.manifest is None:
            continue
        kind = str(step.manifest.get("kind") or "Job")
        queue = queue_name(kind, step.manifest)
        if queue is None:
            report(
                f"{where}: step {step.name!r}'s {kind} names no Kueue queue, so each run's "
                f"{kind} would run outside the team's quota; add {label} to the step "
                "manifest's labels",
                cm.urn,
            )
        elif queue not in queues:
            report(
                f"{where}: step {step.name!r}'s {kind} names queue {queue!r}, but namespace "
                f"{ns!r} has no such LocalQueue, so each run would wait forever; use one of: "
                f"{', '.join(queues) or 'none (declare the team)'}",
                cm.urn,
            )


POLICIES = [
    resource_rule(
        "cronjobs-keep-starting",
        "Every CronJob sets startingDeadlineSeconds and a Forbid or Replace concurrencyPolicy.",
        cronjobs_keep_starting,
    ),
    stack_rule(
        "pipeline-runner-rbac-scoped",
        "A pipeline runner's RBAC is namespaced, wildcard-free and only for its Jobs and JobSets.",
        pipeline_runner_rbac_scoped,
    ),
    stack_rule(
        "team-jobs-name-their-queue",
        "Every Job, JobSet, CronJob and pipeline step in a team namespace names a LocalQueue.",
        team_jobs_name_their_queue,
    ),
]
