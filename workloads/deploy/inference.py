"""The InferenceService component: an inference service of the stack config on the cluster."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi

from mlstack.components import Options
from mlstack.components.backend import get_backend
from mlstack.components.kubernetes.resources import declare
from mlstack.stacks import schema
from mlstack.workloads.deploy.pods import Placement
from mlstack.workloads.deploy.serving import (
    model_url,
    service_manifests,
    service_url,
)
from mlstack.workloads.deploy.settings import service_settings

#: Roles whose readiness pulumi-kubernetes would await and that are ready only once serving pods
#: are: a Deployment's rollout (its pods Available) and the Service (no not-ready endpoints, and
#: for a LoadBalancer an address). The other objects (autoscaler, disruption budget,
#: NetworkPolicy) have no await logic in the provider.
_READY_WITH_PODS = ("deployment", "canary", "service")


@dataclass(frozen=True)
class InferenceServiceArgs:
    platform: schema.Platform
    service: schema.InferenceService
    placement: Placement
    #: What the Deployments wait for: Kueue (its webhook must gate the pods, or they would run
    #: outside the team's quota) and the team's tenancy (namespace, ServiceAccount, queue,
    #: credentials).
    depends_on: Sequence[pulumi.Resource] = ()


class InferenceService(pulumi.ComponentResource):
    """Deployments (stable and canary) behind one Service, with an autoscaler, a disruption
    budget and, where clients need it, a NetworkPolicy, in the team's namespace."""

    def __init__(self, name: str, args: InferenceServiceArgs, opts: Options = None) -> None:
        super().__init__("mlstack:workloads:InferenceService", name, None, opts)
        service, platform = args.service, args.platform
        team = next(t for t in platform.teams if t.name == service.team)
        backend = get_backend(platform.cloud)
        settings = service_settings(
            service, platform.pool(service.pool), backend.spot_notice_s(platform)
        )
        manifests = service_manifests(
            settings,
            team,
            args.placement,
            backend.internal_lb_annotations,
            pod_monitoring=backend.scrapes_pod_monitorings,
        )
        # Serving pods need the serving image, pushed to the stack's registry once `pulumi up`
        # has created it, and a model that a training job of the same `up` exports hours later:
        # awaiting their readiness would hold the first `up` until it times out. `pulumi up`
        # declares them and returns; the rollout is watched with `kubectl rollout status` and
        # bounded by the Deployment's progressDeadlineSeconds (README, "Deploying for real").
        self.resources = {
            role: declare(
                f"{name}-{role}",
                manifest,
                pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
                skip_await=role in _READY_WITH_PODS,
            )
            for role, manifest in manifests.items()
        }
        self.url = service_url(service)
        self.model_url = model_url(args.placement, team, service)
        self.register_outputs(
            {"namespace": team.name, "url": self.url, "model_url": self.model_url}
        )
