"""The GCP backend: VPC, GKE Standard with Workload Identity, GPU node pools that scale to zero,
GCS, Artifact Registry, a Google service account per team.

Credentials come from whoever runs pulumi (`gcloud auth application-default login`, a CI
workload identity federation); the platform creates no service account key. Everything is
declared through one explicit provider for the configured project and region, with default
labels naming the cluster and environment.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
import pulumi_gcp as gcp

from mlstack.components.backend import (
    CloudBackend,
    ImageRegistry,
    ObjectStore,
    Provisioned,
    SecretSource,
    deployed_images,
    runner_accounts,
)
from mlstack.components.checks import (
    PoolWords,
    cpu_machine_problems,
    pool_problems,
    registry_problems,
    system_pool_problems,
)
from mlstack.components.cidr import cidr_fix, parsed_cidrs, within
from mlstack.components.features import Feature
from mlstack.components.gcp import machine_types
from mlstack.components.gcp.catalog import (
    GPU_SERIES,
    MACHINES,
    REGIONS,
    default_zones,
    series,
    spot_shutdown_s,
)
from mlstack.components.gcp.cluster import GkeCluster, GkeClusterArgs
from mlstack.components.gcp.iam import (
    BUCKET_READ_PERMISSIONS,
    NODES_ACCOUNT,
    custom_role_id,
    team_bucket_grants,
)
from mlstack.components.gcp.identity import TeamIdentity, TeamIdentityArgs
from mlstack.components.gcp.kms import Keys, KeysArgs
from mlstack.components.gcp.network import Network, NetworkArgs, node_tag
from mlstack.components.gcp.nodepools import NodePools, NodePoolsArgs, pool_shape, system_shape
from mlstack.components.gcp.offline import call_outputs, computed_outputs
from mlstack.components.gcp.registry import Registry, RegistryArgs
from mlstack.components.gcp.storage import Buckets, BucketsArgs
from mlstack.stacks.errors import Problem, format_path
from mlstack.stacks.names import SERVICE_ACCOUNT_NAME
from mlstack.stacks.schema import GcpConfig, NodePool, Platform, PoolKind

_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
_SECURITY_GROUP = re.compile(r"^gke-security-groups@[a-z0-9.-]+\.[a-z]{2,}$")
#: The Workload Identity annotation GKE reads on a Kubernetes ServiceAccount.
GSA_ANNOTATION = "iam.gke.io/gcp-service-account"
#: APIs the platform calls; enabled (and left enabled at destroy) when gcp.enable_apis is on.
#: Enabling them goes through serviceusage.googleapis.com, which must already be on. Cloud
#: Resource Manager serves the project lookup (the project number for the GKE service agent)
#: and the project-level IAM grants and custom role; a new project has it off.
APIS = (
    "cloudresourcemanager.googleapis.com",
    "compute.googleapis.com",
    "container.googleapis.com",
    "storage.googleapis.com",
    "artifactregistry.googleapis.com",
    "iam.googleapis.com",
    "cloudkms.googleapis.com",
)
#: Sizes (prefix lengths) each range may have: (smallest prefix, largest prefix).
WORDS = PoolWords(
    section="gcp", pool="node pool", machine="a GCE machine type", cpu_example="n2-standard-8"
)
RANGE_SIZES = {
    "subnet_cidr": (16, 24),
    "pods_cidr": (11, 21),
    "services_cidr": (16, 27),
    "master_cidr": (28, 28),
}


class GcpBackend(CloudBackend):
    cloud = "gcp"
    unsupported = {
        Feature.RESERVED_CAPACITY: "GKE consumes a Compute Engine reservation by name "
        "(SPECIFIC_RESERVATION), which mlstack has no config for yet",
    }
    machines = MACHINES
    internal_lb_annotations = {"networking.gke.io/load-balancer-type": "Internal"}
    #: GKE installs the driver and runs its own NVIDIA device plugin on GPU nodes.
    needs_gpu_device_plugin = False
    #: Managed Prometheus (enabled on the cluster, cluster.py) runs its collector DaemonSet in
    #: `gmp-system` and scrapes only the targets of PodMonitoring / ClusterPodMonitoring objects
    #: (GoogleCloudPlatform/prometheus-engine: manifests/operator.yaml deploys the collector in
    #: gmp-system; its PodMonitoring examples select pods by label and name the port). GKE
    #: installs those CRDs with the cluster.
    metrics_collector_namespaces = ("gmp-system",)
    scrapes_pod_monitorings = True

    @classmethod
    def spot_notice_s(cls, platform: Platform) -> int | None:
        """Ordinary pods' share of a spot node's graceful shutdown (catalog.spot_shutdown_s)."""
        whole, critical = spot_shutdown_s(platform.cluster.kubernetes_version)
        return whole - critical

    @classmethod
    def needs_metrics_server(cls, platform: Platform) -> bool:
        """GKE runs metrics-server as a managed add-on (metrics_server.py)."""
        return False

    @classmethod
    def check(cls, platform: Platform) -> list[Problem]:
        cfg = platform.gcp
        if cfg is None:
            return []  # the shared checks report the missing section
        problems = _check_location(cfg)
        problems += _check_ranges(cfg)
        problems += _check_pools(cfg, platform)
        problems += _check_names(cfg, platform)
        if cfg.kms_key_ring is not None and not cfg.cmek:
            problems.append(
                Problem(
                    "platform.gcp.kms_key_ring",
                    "names a key ring, but gcp.cmek is false and no keys are created",
                    "set gcp.cmek: true, or remove kms_key_ring",
                    cfg.kms_key_ring,
                )
            )
        return problems

    @classmethod
    def notes(cls, platform: Platform) -> list[str]:
        assert platform.gcp is not None
        region = platform.gcp.region
        if region in REGIONS:
            return []
        return [
            f"gcp region {region} is not in components/gcp/catalog.py: which of its zones "
            "offer each GPU was not checked"
        ]

    @classmethod
    def resolve_pool(cls, platform: Platform, pool: NodePool) -> NodePool:
        assert platform.gcp is not None
        if pool.kind is PoolKind.CPU and pool.instance_type is None:
            return pool.model_copy(update={"instance_type": platform.gcp.default_cpu_machine_type})
        return pool

    @classmethod
    def offline_outputs(
        cls, platform: Platform, resource_type: str, name: str, inputs: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        assert platform.gcp is not None
        return computed_outputs(
            platform.gcp.project, platform.gcp.region, resource_type, name, inputs
        )

    @classmethod
    def offline_call(
        cls, platform: Platform, token: str, args: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        assert platform.gcp is not None
        return call_outputs(platform.gcp.project, token)

    def provision(self, platform: Platform, secrets: SecretSource) -> Provisioned:
        cfg = platform.gcp
        assert cfg is not None
        cluster_name = platform.cluster.name
        prod = platform.environment == "prod"
        provider = gcp.Provider(
            "gcp",
            gcp.ProviderArgs(
                project=cfg.project,
                region=cfg.region,
                default_labels={
                    "mlstack-cluster": cluster_name,
                    "mlstack-environment": platform.environment,
                    "managed-by": "mlstack",
                },
            ),
        )
        apis: list[pulumi.Resource] = []
        if cfg.enable_apis:
            apis = [
                gcp.projects.Service(
                    f"gcp-api-{api.split('.', 1)[0]}",
                    gcp.projects.ServiceArgs(
                        project=cfg.project, service=api, disable_on_destroy=False
                    ),
                    opts=pulumi.ResourceOptions(provider=provider),
                )
                for api in APIS
            ]
        on_gcp = pulumi.ResourceOptions(provider=provider, depends_on=apis)
        zones = zones_of(cfg, platform.environment)
        network = Network(
            "gcp-network",
            NetworkArgs(
                cluster=cluster_name,
                region=cfg.region,
                subnet_cidr=cfg.subnet_cidr,
                pods_cidr=cfg.pods_cidr,
                services_cidr=cfg.services_cidr,
                master_cidr=cfg.master_cidr,
            ),
            on_gcp,
        )
        keys = (
            Keys(
                "gcp-keys",
                KeysArgs(
                    key_ring=cfg.kms_key_ring or cluster_name,
                    project=cfg.project,
                    region=cfg.region,
                    retain=prod,
                ),
                on_gcp,
            )
            if cfg.cmek
            else None
        )
        gke = GkeCluster(
            "gcp-cluster",
            GkeClusterArgs(
                cluster=cluster_name,
                project=cfg.project,
                region=cfg.region,
                zones=zones,
                version=platform.cluster.kubernetes_version,
                release_channel=cfg.release_channel,
                network=network.vpc.id,
                subnetwork=network.subnet.id,
                master_cidr=cfg.master_cidr,
                node_tags=[node_tag(cluster_name)],
                retain=prod,
                authorized_networks=cfg.master_authorized_networks,
                secrets_key=keys.secrets.id if keys else None,
                security_group=cfg.rbac_security_group,
            ),
            pulumi.ResourceOptions(
                provider=provider,
                depends_on=[*apis, *([keys.secrets_grant] if keys else [])],
            ),
        )
        nodes = NodePools(
            "gcp-nodes",
            NodePoolsArgs(
                cluster=gke.cluster.name,
                project=cfg.project,
                region=cfg.region,
                service_account=gke.node_account.email,
                network_tags=[node_tag(cluster_name)],
                gpu_driver_version=cfg.gpu_driver_version,
                system=system_shape(
                    cfg.system_pool.machine_type,
                    zones,
                    (cfg.system_pool.min_nodes, cfg.system_pool.max_nodes),
                ),
                pools=[
                    pool_shape(p, pool_zones(cfg, p, zones), platform.cluster.kubernetes_version)
                    for p in platform.node_pools
                ],
            ),
            pulumi.ResourceOptions(provider=provider, depends_on=[gke.cluster]),
        )
        k8s_provider = gke.provider("gcp-kubernetes")
        names = platform.storage.bucket_names()
        storage = Buckets(
            "gcp-storage",
            BucketsArgs(
                project=cfg.project,
                region=cfg.region,
                buckets={p: (names[p], getattr(platform.storage, p)) for p in names},
                retain=prod,
                kms_key=keys.storage.id if keys else None,
                kms_grants=[keys.storage_grant] if keys else (),
            ),
            on_gcp,
        )
        registry = Registry(
            "gcp-registry",
            RegistryArgs(
                project=cfg.project,
                region=cfg.region,
                repository=platform.registry.name,
                images=platform.registry.repositories,
                keep_last=platform.registry.keep_last_images,
                deployed=[i for images in deployed_images(platform).values() for i in images],
                retain=prod,
                reader_emails=[gke.node_account.email],
            ),
            on_gcp,
        )
        bucket_reader = gcp.projects.IAMCustomRole(
            "gcp-bucket-reader",
            gcp.projects.IAMCustomRoleArgs(
                project=cfg.project,
                role_id=custom_role_id(cluster_name, "bucket_reader"),
                title=f"mlstack {cluster_name} bucket reader",
                description="Read bucket metadata and list objects (what storage clients and "
                "orbax need besides object access)",
                permissions=list(BUCKET_READ_PERMISSIONS),
                stage="GA",
            ),
            opts=on_gcp,
        )
        bucket_refs = {p: b.name for p, b in storage.buckets.items()}
        teams = {
            team.name: TeamIdentity(
                f"gcp-team-{team.name}",
                TeamIdentityArgs(
                    cluster=cluster_name,
                    project=cfg.project,
                    team=team.name,
                    service_account=SERVICE_ACCOUNT_NAME,
                    more_service_accounts=runner_accounts(platform, team.name),
                    buckets=bucket_refs,
                    grants=team_bucket_grants(
                        prefix=team.object_prefix,
                        buckets=names,
                        bucket_reader_role=f"projects/{cfg.project}/roles/"
                        + custom_role_id(cluster_name, "bucket_reader"),
                    ),
                ),
                # Workload Identity members name the pool, which exists with the cluster.
                pulumi.ResourceOptions(provider=provider, depends_on=[gke.cluster, bucket_reader]),
            )
            for team in platform.teams
        }
        # No region: GCS clients find a bucket by name alone.
        store = ObjectStore(scheme="gs", buckets=bucket_refs)
        return Provisioned(
            provider=k8s_provider,
            object_store=store,
            registry=ImageRegistry(url=registry.url),
            cluster_ready=[nodes.system, *nodes.pools.values()],
            service_account_annotations={
                name: {GSA_ANNOTATION: t.account.email} for name, t in teams.items()
            },
            outputs={
                "kubeconfig": gke.kubeconfig,
                "project": cfg.project,
                "region": cfg.region,
                "zones": list(zones),
                "cluster_endpoint": gke.cluster.endpoint,
                "network": network.vpc.id,
                "bucket_names": bucket_refs,
                "registry_repository": registry.repository.id,
                "team_service_accounts": {n: t.account.email for n, t in teams.items()},
                "node_service_account": gke.node_account.email,
            },
        )


def zones_of(cfg: GcpConfig, environment: str) -> tuple[str, ...]:
    zones = cfg.zones or default_zones(cfg.region, environment)
    assert zones is not None, "checked: an unknown region must list its zones"
    return zones


def pool_zones(cfg: GcpConfig, pool: NodePool, zones: Sequence[str]) -> tuple[str, ...]:
    """The zones a pool's nodes go in: its own list, else the cluster's zones that offer its
    accelerator (all of them for CPU pools and regions the catalog does not know)."""
    if pool.name in cfg.pool_zones:
        return cfg.pool_zones[pool.name]
    region = REGIONS.get(cfg.region)
    if pool.kind is PoolKind.GPU and pool.accelerator and region is not None:
        offering = region.offering(pool.accelerator)
        return tuple(z for z in zones if z in offering)
    return tuple(zones)


def _zone_problem(cfg: GcpConfig, path: str, zone: str) -> Problem | None:
    known = REGIONS.get(cfg.region)
    if not re.fullmatch(re.escape(cfg.region) + r"-[a-z]", zone):
        return Problem(path, f"not a zone of {cfg.region}", f"use e.g. {cfg.region}-a", zone)
    if known is not None and zone not in known.zones:
        return Problem(
            path, f"{cfg.region} has no zone {zone}", f"use one of: {', '.join(known.zones)}", zone
        )
    return None


def _check_zone_list(
    cfg: GcpConfig, where: tuple[str | int, ...], zones: Sequence[str]
) -> list[Problem]:
    problems = []
    if not zones:
        problems.append(
            Problem(format_path(where), "lists no zone", f"list zones of {cfg.region}", [])
        )
    for i, zone in enumerate(zones):
        path = format_path((*where, i))
        problem = _zone_problem(cfg, path, zone)
        if problem is None and zone in zones[:i]:
            problem = Problem(path, "zone is listed twice", "list each zone once", zone)
        if problem is not None:
            problems.append(problem)
    return problems


def _check_location(cfg: GcpConfig) -> list[Problem]:
    problems = []
    if not _PROJECT.match(cfg.project):
        problems.append(
            Problem(
                "platform.gcp.project",
                "not a GCP project id (6-30 lowercase letters, digits or '-', starting with a "
                "letter)",
                "use the project id, not its name or number, e.g. acme-ml-prod",
                cfg.project,
            )
        )
    if not _REGION.match(cfg.region):
        return [
            *problems,
            Problem(
                "platform.gcp.region", "not a GCP region name", "use e.g. us-central1", cfg.region
            ),
        ]
    if cfg.zones is None:
        if cfg.region not in REGIONS:
            problems.append(
                Problem(
                    "platform.gcp.zones",
                    f"the catalog does not know the zones of {cfg.region}",
                    f"list them, e.g. [{cfg.region}-a, {cfg.region}-b]",
                )
            )
    else:
        problems += _check_zone_list(cfg, ("gcp", "zones"), cfg.zones)
    return problems


def _check_ranges(cfg: GcpConfig) -> list[Problem]:
    problems = []
    nets: dict[str, ipaddress.IPv4Network] = {}
    for field, (small, large) in RANGE_SIZES.items():
        value = getattr(cfg, field)
        path = f"platform.gcp.{field}"
        try:
            net = ipaddress.ip_network(value)
        except ValueError as exc:
            problems.append(
                Problem(path, f"invalid CIDR: {exc}", cidr_fix(value, "10.0.0.0/20"), value)
            )
            continue
        size = f"a /{small}" if small == large else f"a /{small} to a /{large}"
        if not isinstance(net, ipaddress.IPv4Network) or not within(net):
            problems.append(
                Problem(
                    path,
                    "must be a private IPv4 range (10/8, 172.16/12, 192.168/16 or 100.64/10)",
                    f"use {size} in 10.0.0.0/8",
                    value,
                )
            )
        elif not small <= net.prefixlen <= large:
            problems.append(Problem(path, f"must be {size}", f"use {size}", value))
        else:
            nets[field] = net
    fields = list(nets)
    for i, a in enumerate(fields):
        for b in fields[:i]:
            if nets[a].overlaps(nets[b]):
                problems.append(
                    Problem(
                        f"platform.gcp.{a}",
                        f"overlaps gcp.{b} ({nets[b]})",
                        "give each range its own addresses",
                        str(nets[a]),
                    )
                )
    for _, path, cidr, net in parsed_cidrs(
        "gcp",
        "master_authorized_networks",
        cfg.master_authorized_networks,
        "203.0.113.0/24",
        problems,
    ):
        if not isinstance(net, ipaddress.IPv4Network):
            problems.append(Problem(path, "authorized networks are IPv4", "use an IPv4 CIDR", cidr))
        elif net.prefixlen == 0:
            problems.append(
                Problem(
                    path,
                    "would open the Kubernetes API to the whole internet",
                    "list your office or VPN egress range, or none for a private endpoint",
                    cidr,
                )
            )
    return problems


def _check_pools(cfg: GcpConfig, platform: Platform) -> list[Problem]:
    problems = []
    # Zones are judged against the region: with a malformed region, or cluster zones already
    # reported, checking pools against them would only repeat those problems.
    region_ok = bool(_REGION.match(cfg.region))
    known = REGIONS.get(cfg.region) if region_ok else None
    zones = cfg.zones or default_zones(cfg.region, platform.environment) or ()
    zones_ok = region_ok and (
        cfg.zones is None or not _check_zone_list(cfg, ("gcp", "zones"), cfg.zones)
    )
    problems += system_pool_problems(WORDS, cfg.system_pool.min_nodes, cfg.system_pool.max_nodes)
    problems += pool_problems(WORDS, platform, cfg.allow_spot)
    problems += cpu_machine_problems(
        WORDS,
        platform,
        [
            ("default_cpu_machine_type", cfg.default_cpu_machine_type),
            ("system_pool.machine_type", cfg.system_pool.machine_type),
        ],
        machine_types.unsold,
        lambda mtype: series(mtype) in GPU_SERIES,
    )
    pools = {p.name: p for p in platform.node_pools}
    for name, listed in cfg.pool_zones.items():
        where = ("gcp", "pool_zones", name)
        if not region_ok:
            continue
        if name not in pools:
            problems.append(
                Problem(
                    format_path(where),
                    "names no node pool",
                    f"use one of: {', '.join(pools)}",
                    name,
                )
            )
            continue
        zone_problems = _check_zone_list(cfg, where, listed)
        problems += zone_problems
        pool = pools[name]
        acc = _gcp_accelerator(pool)
        if zone_problems or known is None or acc is None:
            continue
        offering = known.offering(acc)
        for i, zone in enumerate(listed):
            if zone not in offering:
                problems.append(
                    Problem(
                        format_path((*where, i)),
                        f"{zone} does not offer {acc}",
                        f"use zones that do: {', '.join(offering)}"
                        if offering
                        else f"{cfg.region} offers {acc} in no zone; use another region",
                        zone,
                    )
                )
    for i, pool in enumerate(platform.node_pools):
        path = format_path(("node_pools", i, "accelerator"))
        acc = _gcp_accelerator(pool)
        if acc is None or known is None or not zones_ok or pool.name in cfg.pool_zones:
            continue
        offering = known.offering(acc)
        if offering and not set(offering) & set(zones):
            problems.append(
                Problem(
                    path,
                    f"none of the cluster's zones ({', '.join(zones)}) offers {acc}",
                    f"add a zone that does to gcp.zones, or set gcp.pool_zones.{pool.name}: "
                    f"{', '.join(offering)}",
                    pool.accelerator,
                )
            )
        elif not offering:
            problems.append(
                Problem(
                    path,
                    f"{cfg.region} offers {acc} in no zone",
                    "use another region or accelerator",
                    pool.accelerator,
                )
            )
    return problems


def _gcp_accelerator(pool: NodePool) -> str | None:
    """A GPU pool's accelerator when GCP offers it (one it lacks is reported by the shared
    catalog check, once)."""
    if pool.kind is PoolKind.CPU or not GcpBackend.gpu_machines(pool.accelerator or ""):
        return None
    return pool.accelerator


def _check_names(cfg: GcpConfig, platform: Platform) -> list[Problem]:
    problems = []
    reported: set[str] = set()
    for purpose, name in platform.storage.bucket_names().items():
        written = getattr(platform.storage, purpose).name is not None
        path = f"platform.storage.{purpose}.name" if written else "platform.storage.bucket_prefix"
        if path in reported:
            continue  # one line for a prefix, however many default names it makes
        reported.add(path)
        # "got" is what the user wrote: the prefix when the name is derived from it.
        given = name if written else platform.storage.bucket_prefix
        if "." in name:
            problems.append(
                Problem(
                    path,
                    f"GCS bucket {name} has dots, which needs a verified domain",
                    "use '-' instead of '.'",
                    given,
                )
            )
        elif name.startswith("goog") or "google" in name:
            problems.append(
                Problem(
                    path,
                    f"GCS refuses bucket names that start with 'goog' or contain 'google' ({name})",
                    "choose another name",
                    given,
                )
            )
    if cfg.rbac_security_group is not None and not _SECURITY_GROUP.match(cfg.rbac_security_group):
        problems.append(
            Problem(
                "platform.gcp.rbac_security_group",
                "GKE reads Google Groups for RBAC only from the group named gke-security-groups",
                "use gke-security-groups@<your domain>",
                cfg.rbac_security_group,
            )
        )
    for i, team in enumerate(platform.teams):
        if team.name == NODES_ACCOUNT:
            problems.append(
                Problem(
                    format_path(("teams", i, "name")),
                    f"the service account <cluster>-{NODES_ACCOUNT} is the GKE nodes' own",
                    "give the team another name",
                    team.name,
                )
            )
    return problems + registry_problems(platform)
