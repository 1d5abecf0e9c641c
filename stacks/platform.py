"""The platform assembly: a cloud backend, then the Kubernetes layer on the cluster it yields."""

from __future__ import annotations

from collections.abc import Mapping

import pulumi

from mlstack.components.backend import Provisioned, SecretSource, get_backend
from mlstack.components.kubernetes.device_plugin import NvidiaDevicePlugin, NvidiaDevicePluginArgs
from mlstack.components.kubernetes.extra import ExtraManifests, ExtraManifestsArgs
from mlstack.components.kubernetes.jobset import JobSetController, JobSetControllerArgs
from mlstack.components.kubernetes.kueue import Kueue, KueueArgs
from mlstack.components.kubernetes.metrics_server import MetricsServer, MetricsServerArgs
from mlstack.components.kubernetes.system import PlatformSystem, PlatformSystemArgs
from mlstack.policies.component import Tenancy, TenancyArgs
from mlstack.stacks.errors import ConfigError, Problem
from mlstack.stacks.names import REGISTRY_PULL_SECRET
from mlstack.stacks.schema import Platform
from mlstack.workloads.deploy.inference import InferenceService, InferenceServiceArgs
from mlstack.workloads.deploy.pipelines import (
    PipelineAccess,
    PipelineAccessArgs,
    PipelineRunner,
    PipelineRunnerArgs,
)
from mlstack.workloads.deploy.pods import Placement
from mlstack.workloads.deploy.training import TrainingJob, TrainingJobArgs


def missing_secrets(platform: Platform, secrets: SecretSource) -> list[Problem]:
    """The secret config keys this platform needs that are not set."""
    return [
        Problem(
            f"mlstack:{key}",
            "required secret is not set",
            f"pulumi config set --secret mlstack:{key} <value>",
        )
        for key in get_backend(platform.cloud).required_secret_keys(platform)
        if secrets.get(key) is None
    ]


def build_platform(platform: Platform, secrets: SecretSource) -> dict[str, pulumi.Input[object]]:
    """Declare every resource of a validated platform; returns the stack outputs.

    Raises ConfigError, with nothing declared, when a secret the platform needs is not set.
    """
    problems = missing_secrets(platform, secrets)
    if problems:
        raise ConfigError(problems)
    backend = get_backend(platform.cloud)()
    cloud = backend.provision(platform, secrets)
    on_cluster = pulumi.ResourceOptions(
        provider=cloud.provider, depends_on=list(cloud.cluster_ready)
    )
    system = PlatformSystem(
        "system",
        PlatformSystemArgs(
            store=cloud.object_store, registry=cloud.registry, cluster=platform.cluster.name
        ),
        on_cluster,
    )
    if platform.gpu_pools and backend.needs_gpu_device_plugin:
        NvidiaDevicePlugin(
            "nvidia-device-plugin", NvidiaDevicePluginArgs(gpu_pools=platform.gpu_pools), on_cluster
        )
    if backend.needs_metrics_server(platform):
        MetricsServer("metrics-server", MetricsServerArgs(), on_cluster)
    jobset = JobSetController("jobset", JobSetControllerArgs(), on_cluster)
    # After JobSet, so that Kueue's JobSet integration finds the JobSet CRD when it starts.
    kueue = Kueue(
        "kueue",
        KueueArgs(),
        pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(depends_on=[jobset])),
    )
    tenancy = Tenancy(
        "tenancy",
        TenancyArgs(
            platform=platform,
            store=cloud.object_store,
            registry=cloud.registry,
            sa_annotations=cloud.service_account_annotations,
            kueue_ready=[kueue],
        ),
        on_cluster,
    )
    if platform.extra_manifests:
        ExtraManifests(
            "extra",
            ExtraManifestsArgs(manifests=platform.extra_manifests),
            pulumi.ResourceOptions(
                provider=cloud.provider,
                depends_on=[*cloud.cluster_ready, jobset, kueue, tenancy],
            ),
        )
    teams = dict(zip((t.name for t in platform.teams), tenancy.teams, strict=True))
    placement = Placement.of(cloud.object_store, cloud.registry)
    training = {
        f"{job.team}/{job.name}": TrainingJob(
            f"training-{job.team}-{job.name}",
            TrainingJobArgs(
                platform=platform,
                job=job,
                placement=placement,
                depends_on=[jobset, kueue, teams[job.team]],
            ),
            on_cluster,
        )
        for job in platform.workloads.training_jobs
    }
    serving = {
        f"{service.team}/{service.name}": InferenceService(
            f"serving-{service.team}-{service.name}",
            InferenceServiceArgs(
                platform=platform,
                service=service,
                placement=placement,
                depends_on=[kueue, teams[service.team]],
            ),
            on_cluster,
        )
        for service in platform.workloads.inference_services
    }
    pipelines = _pipelines(platform, cloud, placement, [jobset, kueue], teams)
    return {
        "cloud": platform.cloud,
        "environment": platform.environment,
        "cluster_name": platform.cluster.name,
        "kubernetes_version": platform.cluster.kubernetes_version,
        "bucket_urls": {p: cloud.object_store.url(p) for p in cloud.object_store.buckets},
        "registry_url": cloud.registry.url,
        "platform_env": system.env,
        "team_namespaces": [t.name for t in platform.teams],
        "training_jobs": {
            key: {"checkpoints": job.checkpoint_url, "models": job.model_url}
            for key, job in training.items()
        },
        "inference_services": {
            key: {"url": service.url, "models": service.model_url}
            for key, service in serving.items()
        },
        "pipelines": {
            key: {
                "name": runner.pipeline.name,
                "team": runner.pipeline.team,
                "schedule": runner.pipeline.schedule,
                "models": runner.model_url,
                "work": runner.work_url,
            }
            for key, runner in pipelines.items()
        },
        **cloud.outputs,
    }


def _pipelines(
    platform: Platform,
    cloud: Provisioned,
    placement: Placement,
    addons: list[pulumi.Resource],
    teams: Mapping[str, pulumi.Resource],
) -> dict[str, PipelineRunner]:
    """Each team's pipeline-runner access, then each pipeline's runner."""
    on_cluster = pulumi.ResourceOptions(
        provider=cloud.provider, depends_on=list(cloud.cluster_ready)
    )
    access = {
        team: PipelineAccess(
            f"pipelines-{team}",
            PipelineAccessArgs(
                team=next(t for t in platform.teams if t.name == team),
                annotations=cloud.service_account_annotations.get(team, {}),
                pull_secret=REGISTRY_PULL_SECRET
                if cloud.registry.pull_credentials is not None
                else None,
                depends_on=[teams[team]],
            ),
            on_cluster,
        )
        for team in dict.fromkeys(p.team for p in platform.workloads.pipelines)
    }
    notice = get_backend(platform.cloud).spot_notice_s(platform)
    return {
        f"{p.team}/{p.name}": PipelineRunner(
            f"pipeline-{p.team}-{p.name}",
            PipelineRunnerArgs(
                platform=platform,
                pipeline=p,
                placement=placement,
                spot_notice_s=notice,
                depends_on=[*addons, teams[p.team], access[p.team]],
            ),
            on_cluster,
        )
        for p in platform.workloads.pipelines
    }
