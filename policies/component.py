"""The tenancy layer as Pulumi components: cluster-wide scheduling objects, then one per team."""

from __future__ import annotations

from collections.abc import Mapping

import pulumi

from mlstack.components.backend import ImageRegistry, ObjectStore
from mlstack.components.kubernetes.resources import declare
from mlstack.components.kubernetes.system import declare_credentials
from mlstack.policies.queues import (
    PRIORITIES,
    cluster_queue_manifest,
    default_flavor_manifest,
    flavor_manifest,
    local_queue_manifest,
    priority_class_manifest,
    workload_priority_class_manifest,
)
from mlstack.policies.tenancy import team_manifests
from mlstack.stacks.names import DEFAULT_FLAVOR, REGISTRY_PULL_SECRET
from mlstack.stacks.schema import Platform, Team


class TeamTenancy(pulumi.ComponentResource):
    """One team's namespace and everything in it, plus its ClusterQueue."""

    def __init__(
        self,
        name: str,
        *,
        platform: Platform,
        team: Team,
        store: ObjectStore,
        registry: ImageRegistry,
        sa_annotations: Mapping[str, pulumi.Input[str]],
        kueue_ready: list[pulumi.Resource],
        flavors: Mapping[str, pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("mlstack:policies:TeamTenancy", name, None, opts)
        manifests = team_manifests(
            platform,
            team,
            sa_annotations,
            pull_secret=REGISTRY_PULL_SECRET if registry.pull_credentials is not None else None,
        )
        child = pulumi.ResourceOptions(parent=self)
        self.namespace = declare(f"{name}-namespace", manifests.pop("namespace"), child)
        in_ns = pulumi.ResourceOptions(parent=self, depends_on=[self.namespace])
        declare_credentials(name, team.name, store, registry, in_ns)
        for role, manifest in manifests.items():
            declare(f"{name}-{role}", manifest, in_ns)
        queue = cluster_queue_manifest(platform, team)
        # Only the flavors this queue names: every dependency edge costs the engine a walk of
        # all it depends on, and each flavor reaches every node pool of the cluster.
        named = [
            flavors[f["name"]]
            for group in queue["spec"]["resourceGroups"]
            for f in group["flavors"]
        ]
        self.cluster_queue = declare(
            f"{name}-cluster-queue",
            queue,
            pulumi.ResourceOptions(parent=self, depends_on=[self.namespace, *kueue_ready, *named]),
        )
        declare(
            f"{name}-local-queue",
            local_queue_manifest(team),
            pulumi.ResourceOptions(parent=self, depends_on=[self.namespace, self.cluster_queue]),
        )
        self.register_outputs({"namespace": team.name})


class Tenancy(pulumi.ComponentResource):
    """Priorities, a ResourceFlavor per GPU pool and the default one, then a TeamTenancy per
    team."""

    def __init__(
        self,
        name: str,
        *,
        platform: Platform,
        store: ObjectStore,
        registry: ImageRegistry,
        sa_annotations: Mapping[str, Mapping[str, pulumi.Input[str]]],
        kueue_ready: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("mlstack:policies:Tenancy", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        after_kueue = pulumi.ResourceOptions(parent=self, depends_on=kueue_ready)
        for p in PRIORITIES:
            declare(f"{name}-priority-{p.name}", priority_class_manifest(p), child)
            declare(
                f"{name}-workload-priority-{p.name}",
                workload_priority_class_manifest(p),
                after_kueue,
            )
        flavors = {
            pool.name: declare(f"{name}-flavor-{pool.name}", flavor_manifest(pool), after_kueue)
            for pool in platform.gpu_pools
        }
        flavors[DEFAULT_FLAVOR] = declare(
            f"{name}-default-flavor", default_flavor_manifest(), after_kueue
        )
        self.teams = [
            TeamTenancy(
                f"team-{team.name}",
                platform=platform,
                team=team,
                store=store,
                registry=registry,
                sa_annotations=sa_annotations.get(team.name, {}),
                kueue_ready=kueue_ready,
                flavors=flavors,
                opts=child,
            )
            for team in platform.teams
        ]
        self.register_outputs({"teams": [t.name for t in platform.teams]})
