"""A pipeline's cluster objects as plain dicts: each step's Job or JobSet, the runner's
CronJob, and the runner's RBAC. Pure builders, no resources (`pipelines` declares them)."""

from __future__ import annotations

from mlstack.stacks.schema import PipelineStep, PromoteStep, SelectStep, TrainStep

#: Select and promote read a few small JSON objects from the store and write one: their pod
#: is small and fixed.
SMALL_STEP_CPU = 0.5
SMALL_STEP_MEMORY_GIB = 1.0


def step_pods(step: PipelineStep) -> tuple[int, float, float]:
    """(pods, CPUs each, GiB each) a step runs as."""
    if isinstance(step, TrainStep):
        return step.num_hosts, step.cpu, step.memory_gib
    if isinstance(step, SelectStep | PromoteStep):
        return 1, SMALL_STEP_CPU, SMALL_STEP_MEMORY_GIB
    return 1, step.cpu, step.memory_gib
