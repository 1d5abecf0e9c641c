"""The platform assembly: a cloud backend, then the Kubernetes layer on the cluster it yields."""

from __future__ import annotations

import pulumi

from components.backend import SecretSource, get_backend
from components.kubernetes.device_plugin import NvidiaDevicePlugin
from components.kubernetes.extra import ExtraManifests
from components.kubernetes.kueue import Kueue
from components.kubernetes.system import PlatformSystem
from policies.component import Tenancy
from stacks.schema import Platform


def build_platform(platform: Platform, secrets: SecretSource) -> dict[str, pulumi.Input[object]]:
    """Declare every resource of a validated platform; returns the stack outputs."""
    backend = get_backend(platform.cloud)()
    cloud = backend.provision(platform, secrets)
    on_cluster = pulumi.ResourceOptions(
        provider=cloud.provider, depends_on=list(cloud.cluster_ready)
    )
    system = PlatformSystem(
        "system", cloud.object_store, cloud.registry, platform.cluster.name, on_cluster
    )
    if platform.gpu_pools and backend.needs_gpu_device_plugin:
        NvidiaDevicePlugin("nvidia-device-plugin", platform.gpu_pools, on_cluster)
    kueue = Kueue("kueue", on_cluster)
    tenancy = Tenancy(
        "tenancy",
        platform=platform,
        store=cloud.object_store,
        registry=cloud.registry,
        sa_annotations=cloud.service_account_annotations,
        kueue_ready=[kueue],
        opts=on_cluster,
    )
    if platform.extra_manifests:
        ExtraManifests(
            "extra",
            platform.extra_manifests,
            pulumi.ResourceOptions(
                provider=cloud.provider, depends_on=[*cloud.cluster_ready, kueue, tenancy]
            ),
        )
    workloads = platform.workloads
    if workloads.training_jobs or workloads.inference_services:
        pulumi.log.warn(
            "workloads are validated but not deployed yet: training jobs arrive with issue #6, "
            "inference services with issue #7"
        )
    return {
        "cloud": platform.cloud,
        "environment": platform.environment,
        "cluster_name": platform.cluster.name,
        "kubernetes_version": platform.cluster.kubernetes_version,
        "bucket_urls": {p: cloud.object_store.url(p) for p in cloud.object_store.buckets},
        "registry_url": cloud.registry.url,
        "platform_env": system.env,
        "team_namespaces": [t.name for t in platform.teams],
        **cloud.outputs,
    }
