"""A pipeline of the stack config (`workloads.pipelines[]`) in its runtime form.

The runtime form (`workloads.pipeline.spec.Pipeline`) is what the runner, the engine and every
step read: the stack deploys it as a ConfigMap for the CronJob runner, and `mlstack local
pipeline` builds it with the local store's URLs. Both come through `runtime_pipeline`, so a
pipeline runs with the same step settings on the cluster and on one machine.

Imports no Pulumi, no provider SDK and no JAX: the command line uses it before any of them load.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlstack.stacks import schema
from mlstack.workloads.pipeline import spec


class PipelineNotFound(ValueError):  # noqa: N818 - reads as `pipelines.PipelineNotFound`
    """A pipeline name the stack does not declare; the message is one line with the choices."""


def find_pipeline(platform: schema.Platform, name: str) -> schema.Pipeline:
    """The declared pipeline `name`, or `team/name` where teams share a pipeline name."""
    declared = platform.workloads.pipelines
    team, _, short = name.rpartition("/")
    found = [p for p in declared if p.name == short and (not team or p.team == team)]
    if len(found) == 1:
        return found[0]
    names = ", ".join(f"{p.team}/{p.name}" for p in declared) or "none"
    if found:
        raise PipelineNotFound(
            f"pipeline {name!r} is declared by teams {', '.join(p.team for p in found)}; "
            f"fix: name it as team/name, one of: {names}"
        )
    raise PipelineNotFound(
        f"the stack declares no pipeline {name!r}; fix: use one of: {names} "
        "(platform.workloads.pipelines)"
    )


def step_config(step: schema.PipelineStep) -> dict[str, Any]:
    """The settings a step's kind reads at run time (spec.Step.config), in the JSON shape the
    step entry points take; None leaves a value to the model config. Where and how big the
    step runs (pool, CPUs, GPUs) is its manifest's business, not its config's, so that moving a
    step to another pool does not invalidate its cache key."""
    if isinstance(step, schema.PrepareStep):
        return {"dataset": step.dataset, "test_fraction": step.test_fraction, "seed": step.seed}
    if isinstance(step, schema.TrainStep):
        return {
            "model": step.model,
            "steps": step.steps,
            "global_batch_size": step.global_batch_size,
            "learning_rate": step.learning_rate,
            "num_hosts": step.num_hosts,
            "checkpoint_every_steps": step.checkpoint_every_steps,
            "eval_every_steps": step.eval_every_steps,
            "fsdp": step.fsdp,
            "dtype": step.dtype,
            "seed": step.seed,
        }
    if isinstance(step, schema.EvaluateStep):
        return {"split": step.split, "max_batches": step.max_batches}
    if isinstance(step, schema.SelectStep):
        return {"metric": step.metric, "min_improvement": step.min_improvement}
    return {"alias": step.alias, "then_alias": step.then_alias, "soak_s": step.soak_s}


def team_prefix(platform: schema.Platform, team: str) -> str:
    """The team's object prefix in the shared buckets (the team name for an undeclared team,
    which validation refuses)."""
    declared = next((t for t in platform.teams if t.name == team), None)
    return declared.object_prefix if declared is not None else team


def runtime_pipeline(
    platform: schema.Platform,
    name: str,
    *,
    datasets_url: str,
    checkpoints_url: str,
    models_url: str,
    image: str,
    manifests: Mapping[str, dict[str, Any]] | None = None,
) -> spec.Pipeline:
    """The pipeline `name` (see `find_pipeline`) as the runner reads it: its run area under the
    team's prefix in `checkpoints_url`, its model's registry under the team's prefix in
    `models_url`, its step configs, and on the cluster each step's manifest by step name."""
    declared = find_pipeline(platform, name)
    prefix = team_prefix(platform, declared.team)
    manifests = manifests or {}
    steps = tuple(
        spec.Step(
            name=step.name,
            kind=step.kind,
            after=step.after,
            config=step_config(step),
            retries=step.retries,
            manifest=manifests.get(step.name),
        )
        for step in declared.steps
    )
    return spec.Pipeline(
        name=declared.name,
        team=declared.team,
        model=declared.model_name,
        work_url=f"{checkpoints_url.rstrip('/')}/{prefix}/pipelines/{declared.name}",
        model_url=f"{models_url.rstrip('/')}/{prefix}/{declared.model_name}",
        datasets_url=datasets_url.rstrip("/"),
        image=image,
        steps=steps,
        schedule=declared.schedule,
    )


def step_training_job(pipeline: schema.Pipeline, step: schema.TrainStep) -> schema.TrainingJob:
    """The training job a train step runs as: the same checks (pool, quota, batch split,
    grace period) and the same JobSet builder as `workloads.training_jobs[]`."""
    knobs = (
        "pool",
        "num_hosts",
        "model",
        "steps",
        "global_batch_size",
        "checkpoint_every_steps",
        "gpus_per_host",
        "cpu",
        "memory_gib",
        "max_restarts",
        "termination_grace_period_s",
        "priority",
        "fsdp",
        "dtype",
    )
    return schema.TrainingJob.model_validate(
        {
            "name": step.name,
            "team": pipeline.team,
            "image": pipeline.image,
            **{knob: getattr(step, knob) for knob in knobs},
        }
    )
