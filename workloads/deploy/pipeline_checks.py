"""Config checks of `workloads.pipelines[]`: every problem at once, one line each.

A pipeline names a team and a CPU pool that exist; its steps form a DAG whose edges carry what
each kind reads (a train step its data from a prepare step, an evaluate step its candidates from
train steps, a select step the evaluations, a promote step the selection); a select metric is one
an upstream evaluate produces; a train step is checked as the training job it runs as; and the
runner, which Kueue admits against the team's quota like any Job and which waits while each step
runs, leaves room in the quota for the largest step beside it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping

from mlstack.stacks.errors import Problem, format_path
from mlstack.stacks.names import TRAIN_REPOSITORY
from mlstack.stacks.pipelines import step_training_job
from mlstack.stacks.prefixes import prefix_problem
from mlstack.stacks.schema import (
    EvaluateStep,
    Pipeline,
    PipelineStep,
    Platform,
    PoolKind,
    PrepareStep,
    PromoteStep,
    SelectStep,
    Team,
    TrainStep,
)
from mlstack.workloads.deploy.checks import training_job_problems
from mlstack.workloads.deploy.pipeline_manifests import step_pods
from mlstack.workloads.pipeline.spec import Step as RuntimeStep
from mlstack.workloads.pipeline.spec import find_cycle

#: What a step of each kind reads from the steps in its `after`: (kinds one of which it must
#: wait for directly, what it reads). A step reads only its direct upstream steps' outputs.
_NEEDS: dict[type, tuple[type, str, str]] = {
    TrainStep: (PrepareStep, "prepare", "its training data (the prepare step's train split)"),
    EvaluateStep: (TrainStep, "train", "the candidates it evaluates"),
    SelectStep: (EvaluateStep, "evaluate", "the evaluations it ranks"),
    PromoteStep: (SelectStep, "select", "the version it promotes"),
}


def pipeline_problems(p: Platform, sound: Mapping[str, tuple[int, int]]) -> list[Problem]:
    """Every pipeline's problems. `sound`: index and GPUs per node of each sound GPU pool."""
    pipelines = p.workloads.pipelines
    problems = _duplicate_problems(pipelines)
    if pipelines and p.registry.repositories and TRAIN_REPOSITORY not in p.registry.repositories:
        problems.append(
            Problem(
                "platform.registry.repositories",
                f"pipelines run images from the {TRAIN_REPOSITORY!r} repository, which is not "
                "listed",
                f"add {TRAIN_REPOSITORY} to platform.registry.repositories",
                p.registry.repositories,
            )
        )
    for i, pipeline in enumerate(pipelines):
        problems += _pipeline_problems(p, i, pipeline, sound)
    return problems


def _duplicate_problems(pipelines: tuple[Pipeline, ...]) -> list[Problem]:
    """A pipeline's CronJob and ConfigMap are named after it in the team's namespace."""
    keys = [(x.team, x.name) for x in pipelines]
    problems = []
    for (team, name), count in Counter(keys).items():
        if count > 1:
            i = [j for j, key in enumerate(keys) if key == (team, name)][1]
            problems.append(
                Problem(
                    format_path(("workloads", "pipelines", i, "name")),
                    f"team {team} has {count} pipelines of this name",
                    "give each of the team's pipelines its own name",
                    name,
                )
            )
    return problems


def _pipeline_problems(
    p: Platform, i: int, pipeline: Pipeline, sound: Mapping[str, tuple[int, int]]
) -> list[Problem]:
    def path(*fields: str | int) -> str:
        return format_path(("workloads", "pipelines", i, *fields))

    problems = _graph_problems(path, pipeline)
    team = next((t for t in p.teams if t.name == pipeline.team), None)
    if team is None:
        teams = ", ".join(sorted(t.name for t in p.teams)) or "none defined"
        problems.append(
            Problem(path("team"), "names no team", f"use one of: {teams}", pipeline.team)
        )
    problems += _pool_problems(p, path, pipeline)
    for j, step in enumerate(pipeline.steps):
        problems += _step_problems(p, path, j, pipeline, step, sound=sound)
    if team is not None and not problems:
        problems += _runner_room_problems(path, pipeline, team)
    return problems


def _pool_problems(p: Platform, path: Callable[..., str], pipeline: Pipeline) -> list[Problem]:
    pool = next((x for x in p.node_pools if x.name == pipeline.pool), None)
    cpu_pools = [x.name for x in p.node_pools if x.kind is PoolKind.CPU]
    fix = f"use a CPU pool: {', '.join(cpu_pools) or 'none defined (add one)'}"
    if pool is None:
        return [Problem(path("pool"), "names no node pool", fix, pipeline.pool)]
    if pool.kind is not PoolKind.CPU:
        return [
            Problem(
                path("pool"),
                f"pool {pool.name!r} is a GPU pool: the runner and the prepare, evaluate, "
                "select and promote steps use no GPUs, and its nodes take only pods that do",
                fix,
                pipeline.pool,
            )
        ]
    return []


def _graph_problems(path: Callable[..., str], pipeline: Pipeline) -> list[Problem]:
    """Names and `after` edges: unique step names, known upstream steps, no cycle, and each
    kind waiting directly for what it reads."""
    problems = []
    names = [step.name for step in pipeline.steps]
    by_name = {step.name: step for step in pipeline.steps}
    for name, count in Counter(names).items():
        if count > 1:
            j = [k for k, n in enumerate(names) if n == name][1]
            problems.append(
                Problem(
                    path("steps", j, "name"),
                    f"the pipeline has {count} steps of this name",
                    "give each step its own name",
                    name,
                )
            )
    for j, step in enumerate(pipeline.steps):
        for upstream in step.after:
            if upstream == step.name:
                problems.append(
                    Problem(
                        path("steps", j, "after"),
                        "the step waits for itself",
                        f"remove {upstream} from after",
                        list(step.after),
                    )
                )
            elif upstream not in by_name:
                problems.append(
                    Problem(
                        path("steps", j, "after"),
                        f"names no step of the pipeline: {upstream!r}",
                        f"use step names: {', '.join(dict.fromkeys(names))}",
                        list(step.after),
                    )
                )
    cycle = find_cycle(
        [RuntimeStep(name=s.name, kind=s.kind, after=s.after) for s in pipeline.steps]
    )
    if cycle and len(cycle) > 2:  # a step waiting for itself is reported above
        problems.append(
            Problem(
                path("steps"),
                "steps wait for each other in a cycle: " + " -> ".join(cycle),
                f"remove {cycle[-2]} from the after of {cycle[-1]}, or another edge of the cycle",
            )
        )
    for j, step in enumerate(pipeline.steps):
        problems += _upstream_problems(path, j, step, by_name)
    return problems


def _upstream_problems(
    path: Callable[..., str], j: int, step: PipelineStep, by_name: Mapping[str, PipelineStep]
) -> list[Problem]:
    need = _NEEDS.get(type(step))
    if need is None:
        return []
    needed, kind, reads = need
    upstream = [by_name[name] for name in step.after if name in by_name]
    if any(isinstance(u, needed) for u in upstream):
        return _metric_problems(path, j, step, upstream)
    declared = [s.name for s in by_name.values() if isinstance(s, needed)]
    if len(declared) == 1:
        fix = f"add {declared[0]} to after"
    elif declared:
        fix = f"add one of {', '.join(declared)} to after"
    else:
        fix = f"add {_a(kind)} step and name it in after"
    return [
        Problem(
            path("steps", j, "after"),
            f"{_a(step.kind).capitalize()} step reads {reads} from {_a(kind)} step it waits "
            "for, and waits for none",
            fix,
            list(step.after),
        )
    ]


def _a(kind: str) -> str:
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def _metric_problems(
    path: Callable[..., str], j: int, step: PipelineStep, upstream: list[PipelineStep]
) -> list[Problem]:
    """A select step ranks by a metric an evaluate step it waits for produces."""
    if not isinstance(step, SelectStep):
        return []
    splits = sorted({u.split for u in upstream if isinstance(u, EvaluateStep)})
    split = step.metric.split(".")[0]
    if split in splits:
        return []
    metric = step.metric.split(".")[1]
    choices = ", ".join(f"{s}.{metric}" for s in splits)
    return [
        Problem(
            path("steps", j, "metric"),
            f"no evaluate step it waits for produces it: they evaluate the {', '.join(splits)} "
            "split",
            f"use {choices}, or set split: {split} on the evaluate step",
            step.metric,
        )
    ]


def _step_problems(
    p: Platform,
    path: Callable[..., str],
    j: int,
    pipeline: Pipeline,
    step: PipelineStep,
    *,
    sound: Mapping[str, tuple[int, int]],
) -> list[Problem]:
    if isinstance(step, PrepareStep):
        problem = prefix_problem(step.dataset)
        if problem is None:
            return []
        return [
            Problem(
                path("steps", j, "dataset"), problem, "use a path such as 'pystdlib'", step.dataset
            )
        ]
    if isinstance(step, PromoteStep):
        if step.then_alias is not None and step.then_alias == step.alias:
            return [
                Problem(
                    path("steps", j, "then_alias"),
                    "is the alias the step moves first",
                    "name another alias (e.g. champion after canary), or remove then_alias",
                    step.then_alias,
                )
            ]
        if step.then_alias is None and "soak_s" in step.model_fields_set:
            return [
                Problem(
                    path("steps", j, "soak_s"),
                    "is only read with then_alias (the wait before it moves)",
                    "set then_alias, or remove soak_s",
                    step.soak_s,
                )
            ]
        return []
    if not isinstance(step, TrainStep):
        return []
    pools = [x.name for x in p.node_pools]
    if step.pool not in pools:
        return [
            Problem(
                path("steps", j, "pool"),
                "names no node pool",
                f"use one of: {', '.join(pools)}",
                step.pool,
            )
        ]

    def step_path(field: str) -> str:
        # The training job's image is the pipeline's.
        return path("image") if field == "image" else path("steps", j, field)

    return training_job_problems(p, step_path, step_training_job(pipeline, step), sound)


def _runner_room_problems(
    path: Callable[..., str], pipeline: Pipeline, team: Team
) -> list[Problem]:
    """The runner holds its share of the team's quota for the whole run, and Kueue admits a
    step only when the quota holds it beside the runner: a step that fits alone but not beside
    the runner would wait forever."""
    quota = team.quota
    problems = []
    for j, step in enumerate(pipeline.steps):
        pods, cpu, memory = step_pods(step)
        for field, need, most, unit in (
            ("cpu", pods * cpu + pipeline.runner_cpu, quota.cpu, " CPUs"),
            ("memory_gib", pods * memory + pipeline.runner_memory_gib, quota.memory_gib, " GiB"),
        ):
            if need <= most:
                continue
            # Select and promote steps have a fixed small size: the runner's is the knob.
            sized = field in type(step).model_fields
            problems.append(
                Problem(
                    path("steps", j, field) if sized else path(f"runner_{field}"),
                    f"the step ({pods} pods) and the runner need {need:g}{unit} at once, "
                    f"above team {team.name}'s quota of {most:g}{unit}, so Kueue would never "
                    "admit the step while the runner waits for it",
                    f"lower the step's or the runner's {field}, or raise the team's quota.{field}",
                    getattr(step, field) if sized else getattr(pipeline, f"runner_{field}"),
                )
            )
        if pods + 1 > quota.pods:
            problems.append(
                Problem(
                    path("steps", j),
                    f"the step's {pods} pods and the runner exceed team {team.name}'s quota of "
                    f"{quota.pods} pods",
                    "lower num_hosts, or raise the team's quota.pods",
                )
            )
    return problems
