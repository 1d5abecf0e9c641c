"""The tenancy layer as Pulumi components: cluster-wide scheduling objects, then one per team."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi

from mlstack.components import Options
from mlstack.components.backend import ImageRegistry, ObjectStore, get_backend
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


@dataclass(frozen=True)
class TenancyArgs:
    platform: Platform
    store: ObjectStore
    registry: ImageRegistry
    #: Per team: annotations binding its workload ServiceAccount to a cloud identity.
    sa_annotations: Mapping[str, Mapping[str, pulumi.Input[str]]] = field(default_factory=dict)
    #: What Kueue's objects wait for: the Kueue add-on, whose CRDs and webhooks they need.
    kueue_ready: Sequence[pulumi.Resource] = ()


@dataclass(frozen=True)
class TeamTenancyArgs:
    #: The cluster-wide tenancy the team is part of.
    tenancy: TenancyArgs
    team: Team
    #: Kueue ResourceFlavors by name, as the Tenancy declares them.
    flavors: Mapping[str, pulumi.Resource]


class TeamTenancy(pulumi.ComponentResource):
    """One team's namespace and everything in it, plus its ClusterQueue."""

    def __init__(self, name: str, args: TeamTenancyArgs, opts: Options = None) -> None:
        super().__init__("mlstack:policies:TeamTenancy", name, None, opts)
        tenancy, team = args.tenancy, args.team
        manifests = team_manifests(
            tenancy.platform,
            team,
            tenancy.sa_annotations.get(team.name, {}),
            pull_secret=REGISTRY_PULL_SECRET
            if tenancy.registry.pull_credentials is not None
            else None,
            collectors=get_backend(tenancy.platform.cloud).metrics_collector_namespaces,
        )
        child = pulumi.ResourceOptions(parent=self)
        self.namespace = declare(f"{name}-namespace", manifests.pop("namespace"), child)
        in_ns = pulumi.ResourceOptions(parent=self, depends_on=[self.namespace])
        declare_credentials(name, team.name, tenancy.store, tenancy.registry, in_ns)
        for role, manifest in manifests.items():
            declare(f"{name}-{role}", manifest, in_ns)
        queue = cluster_queue_manifest(tenancy.platform, team)
        # Only the flavors this queue names: every dependency edge costs the engine a walk of
        # all it depends on, and each flavor reaches every node pool of the cluster.
        named = [
            args.flavors[f["name"]]
            for group in queue["spec"]["resourceGroups"]
            for f in group["flavors"]
        ]
        self.cluster_queue = declare(
            f"{name}-cluster-queue",
            queue,
            pulumi.ResourceOptions(
                parent=self, depends_on=[self.namespace, *tenancy.kueue_ready, *named]
            ),
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

    def __init__(self, name: str, args: TenancyArgs, opts: Options = None) -> None:
        super().__init__("mlstack:policies:Tenancy", name, None, opts)
        platform = args.platform
        child = pulumi.ResourceOptions(parent=self)
        after_kueue = pulumi.ResourceOptions(parent=self, depends_on=list(args.kueue_ready))
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
                TeamTenancyArgs(tenancy=args, team=team, flavors=flavors),
                child,
            )
            for team in platform.teams
        ]
        self.register_outputs({"teams": [t.name for t in platform.teams]})
