"""The TrainingJob component: a training job of the stack config as a JobSet on the cluster."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi

from mlstack.components import Options
from mlstack.components.backend import get_backend
from mlstack.components.kubernetes.resources import declare
from mlstack.stacks import schema
from mlstack.workloads import contract
from mlstack.workloads.deploy.jobset import (
    Placement,
    coordinator_address,
    jobset_manifest,
    run_urls,
)
from mlstack.workloads.deploy.settings import job_settings


@dataclass(frozen=True)
class TrainingJobArgs:
    platform: schema.Platform
    job: schema.TrainingJob
    placement: Placement
    #: What the JobSet waits for: the JobSet and Kueue add-ons (Kueue must see the JobSet
    #: created, or it would run outside the team's quota) and the team's tenancy (namespace,
    #: ServiceAccount, queues, credentials).
    depends_on: Sequence[pulumi.Resource] = ()


class TrainingJob(pulumi.ComponentResource):
    """A JobSet of `num_hosts` pods in the team's namespace, queued by Kueue."""

    def __init__(self, name: str, args: TrainingJobArgs, opts: Options = None) -> None:
        super().__init__("mlstack:workloads:TrainingJob", name, None, opts)
        job, platform = args.job, args.platform
        team = next(t for t in platform.teams if t.name == job.team)
        settings = job_settings(
            job, platform.pool(job.pool), get_backend(platform.cloud).spot_notice_s(platform)
        )
        self.jobset = declare(
            f"{name}-jobset",
            jobset_manifest(settings, team, args.placement),
            pulumi.ResourceOptions(
                parent=self,
                depends_on=list(args.depends_on),
                # The JobSet webhook refuses changes to a created JobSet's jobs; a changed job
                # is a new JobSet of the same name, which resumes from the same checkpoints.
                replace_on_changes=["spec"],
                delete_before_replace=True,
            ),
            # pulumi-kubernetes has no await logic for a JobSet unless `pulumi.com/waitFor` is set
            # or PULUMI_K8S_AWAIT_ALL=true makes it wait for a Ready condition (metadata/
            # overrides.go, `ReadyCondition`); a training run lasts hours and waits for Kueue
            # admission and nodes, so `pulumi up` must never wait for it, whatever the env says.
            skip_await=True,
        )
        urls = run_urls(args.placement, team, job)
        self.checkpoint_url = urls[contract.CHECKPOINT_URL]
        self.model_url = urls[contract.MODEL_URL]
        self.register_outputs(
            {
                "namespace": team.name,
                "coordinator": coordinator_address(job.name),
                "checkpoint_url": self.checkpoint_url,
                "model_url": self.model_url,
            }
        )
