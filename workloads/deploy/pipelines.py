"""The pipeline components: a declared pipeline's runner (its ConfigMap and CronJob), and per
team with pipelines the `pipeline-runner` ServiceAccount and the Role it runs steps with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pulumi

from mlstack.components import Options
from mlstack.components.kubernetes.resources import declare
from mlstack.stacks import schema
from mlstack.stacks.pipelines import team_prefix
from mlstack.workloads.deploy.pipeline_manifests import (
    config_map,
    pipeline_document,
    runner_cronjob,
    runner_rbac,
)
from mlstack.workloads.deploy.pods import Placement, join


@dataclass(frozen=True)
class PipelineRunnerArgs:
    platform: schema.Platform
    pipeline: schema.Pipeline
    placement: Placement
    #: The cloud's spot reclaim notice (a train step's JobSet's grace period depends on it).
    spot_notice_s: int | None
    #: The JobSet and Kueue add-ons, the team's tenancy and its pipeline-runner access.
    depends_on: Sequence[pulumi.Resource] = ()


class PipelineRunner(pulumi.ComponentResource):
    """The runner's ConfigMap (the pipeline with its step manifests) and CronJob."""

    def __init__(self, name: str, args: PipelineRunnerArgs, opts: Options = None) -> None:
        super().__init__("mlstack:workloads:PipelineRunner", name, None, opts)
        platform, pipeline, placement = args.platform, args.pipeline, args.placement
        self.pipeline = pipeline
        team = next(t for t in platform.teams if t.name == pipeline.team)
        child = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))
        document = pulumi.Output.all(placement.registry, *placement.buckets.values()).apply(
            lambda resolved: pipeline_document(
                platform,
                pipeline,
                replace(
                    placement,
                    registry=resolved[0],
                    buckets=dict(zip(placement.buckets, resolved[1:], strict=True)),
                ),
                args.spot_notice_s,
            )
        )
        spec = declare(f"{name}-spec", config_map(pipeline, team, document), child)
        declare(
            f"{name}-runner",
            runner_cronjob(pipeline, team, platform.pool(pipeline.pool), placement),
            pulumi.ResourceOptions(parent=self, depends_on=[*args.depends_on, spec]),
        )
        prefix = team_prefix(platform, pipeline.team)
        self.work_url = join(placement.buckets["checkpoints"], prefix, "pipelines", pipeline.name)
        self.model_url = join(placement.buckets["models"], prefix, pipeline.model_name)
        self.register_outputs({"work_url": self.work_url, "model_url": self.model_url})


@dataclass(frozen=True)
class PipelineAccessArgs:
    team: schema.Team
    #: The cloud identity annotations of the team's `workload` ServiceAccount.
    annotations: Mapping[str, Any]
    pull_secret: str | None
    depends_on: Sequence[pulumi.Resource] = ()


class PipelineAccess(pulumi.ComponentResource):
    """The team's `pipeline-runner` ServiceAccount, Role and RoleBinding."""

    def __init__(self, name: str, args: PipelineAccessArgs, opts: Options = None) -> None:
        super().__init__("mlstack:workloads:PipelineAccess", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))
        for manifest in runner_rbac(args.team, dict(args.annotations), args.pull_secret):
            declare(f"{name}-{manifest['kind'].lower()}", manifest, child)
        self.register_outputs({})
