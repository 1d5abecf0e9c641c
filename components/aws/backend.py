"""The AWS backend: VPC, EKS, managed node groups that scale to zero, S3, ECR, Pod Identity.

Credentials come from the environment of whoever runs pulumi (an SSO profile, a CI role); the
platform itself creates no access key. Everything is declared through one explicit provider
for the configured region, with default tags naming the cluster and environment.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any, Literal

import pulumi
import pulumi_aws as aws

from mlstack.components.aws import instance_types
from mlstack.components.aws.autoscaler import ClusterAutoscaler, ClusterAutoscalerArgs
from mlstack.components.aws.catalog import (
    MACHINES,
    REGIONS,
    SPOT_INTERRUPTION_NOTICE_S,
    default_zones,
    family,
    is_gpu_family,
    region_machine,
)
from mlstack.components.aws.cluster import EksCluster, EksClusterArgs
from mlstack.components.aws.iam import team_workload_policy
from mlstack.components.aws.identity import PodIdentity, PodIdentityArgs, policy_output
from mlstack.components.aws.network import Network, NetworkArgs, subnet_plan
from mlstack.components.aws.nodegroups import NodeGroups, NodeGroupsArgs, live_scaling
from mlstack.components.aws.offline import computed_outputs
from mlstack.components.aws.registry import Registry, RegistryArgs
from mlstack.components.aws.storage import ARCHIVE_MIN_DAYS, Buckets, BucketsArgs
from mlstack.components.backend import (
    CloudBackend,
    ImageRegistry,
    ObjectStore,
    Provisioned,
    SecretSource,
    deployed_images,
    is_digest,
    runner_accounts,
)
from mlstack.components.checks import (
    PoolWords,
    cpu_machine_problems,
    pool_problems,
    registry_problems,
    system_pool_problems,
)
from mlstack.components.cidr import PRIVATE_RANGES, VPC_RANGES, cidr_fix, parsed_cidrs, within
from mlstack.components.features import Feature
from mlstack.stacks.catalog import CatalogError
from mlstack.stacks.errors import Problem, format_path
from mlstack.stacks.names import MANAGED_BY, SERVICE_ACCOUNT_NAME
from mlstack.stacks.schema import AwsConfig, NodePool, Platform, PoolKind

_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-[0-9]$")
#: Regions of the aws-cn and aws-us-gov partitions: every ARN mlstack builds is in 'aws'.
_OTHER_PARTITIONS = ("cn-", "us-gov-")
_PRINCIPAL = re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:(role|user)/[A-Za-z0-9+=,.@_/-]+$")
MAX_ZONES = 6
WORDS = PoolWords(
    section="aws", pool="node group", machine="an EC2 instance type", cpu_example="m6i.2xlarge"
)


class AwsBackend(CloudBackend):
    cloud = "aws"
    unsupported = {
        Feature.RESERVED_CAPACITY: "EC2 Capacity Blocks need a launch template naming the "
        "reservation, which mlstack does not create yet",
    }
    machines = MACHINES
    #: The AWS Load Balancer Controller reads the scheme, the in-tree controller the second key.
    internal_lb_annotations = {
        "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal",
        "service.beta.kubernetes.io/aws-load-balancer-internal": "true",
    }
    needs_gpu_device_plugin = True

    @classmethod
    def spot_notice_s(cls, platform: Platform) -> int | None:
        return SPOT_INTERRUPTION_NOTICE_S

    @classmethod
    def check(cls, platform: Platform) -> list[Problem]:
        cfg = platform.aws
        if cfg is None:
            return []  # the shared checks report the missing section
        problems = _check_region(cfg, platform.environment)
        problems += _check_network(cfg)
        problems += _check_access(cfg, platform)
        problems += _check_pools(cfg, platform)
        for purpose in ("datasets", "checkpoints", "models"):
            days = getattr(platform.storage, purpose).archive_after_days
            if days is not None and days < ARCHIVE_MIN_DAYS:
                problems.append(
                    Problem(
                        f"platform.storage.{purpose}.archive_after_days",
                        f"S3 moves objects to STANDARD_IA only after {ARCHIVE_MIN_DAYS} days",
                        f"use {ARCHIVE_MIN_DAYS} or more",
                        days,
                    )
                )
        return problems + registry_problems(platform)

    @classmethod
    def notes(cls, platform: Platform) -> list[str]:
        assert platform.aws is not None
        region = platform.aws.region
        notes = []
        if region not in REGIONS:
            notes.append(
                f"aws region {region} is not in components/aws/catalog.py: its zones and the "
                "GPU instance families it offers were not checked"
            )
        workloads = platform.workloads
        for kind, items in (
            ("training_jobs", workloads.training_jobs),
            ("inference_services", workloads.inference_services),
        ):
            notes += [
                f"platform.workloads.{kind}[{i}].image is a digest: ECR lifecycle rules keep "
                "deployed images by tag only, so this one expires once "
                f"{platform.registry.keep_last_images} newer images are pushed; pin a tag"
                for i, item in enumerate(items)
                if is_digest(item.image)
            ]
        return notes

    @classmethod
    def resolve_pool(cls, platform: Platform, pool: NodePool) -> NodePool:
        assert platform.aws is not None
        if pool.kind is PoolKind.CPU and pool.instance_type is None:
            return pool.model_copy(update={"instance_type": platform.aws.default_cpu_instance_type})
        region = REGIONS.get(platform.aws.region)
        itype = pool.instance_type
        if pool.kind is PoolKind.GPU and region and itype and pool.accelerator:
            # The catalog's default machine may be missing here while another of the same GPU
            # and count is offered (h200: p5e in us-east-1, p5en in us-east-2). A machine the
            # user named and the region lacks was refused by the checks.
            other = region_machine(region, cls.gpu_machines(pool.accelerator), pool.gpus)
            if family(itype) not in region.gpu_families and other:
                return pool.model_copy(update={"instance_type": other})
        return pool

    @classmethod
    def offline_outputs(
        cls, platform: Platform, resource_type: str, name: str, inputs: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        assert platform.aws is not None
        return computed_outputs(platform.aws.region, resource_type, name, inputs)

    def provision(self, platform: Platform, secrets: SecretSource) -> Provisioned:
        cfg = platform.aws
        assert cfg is not None
        cluster_name = platform.cluster.name
        prod = platform.environment == "prod"
        provider = aws.Provider(
            "aws",
            aws.ProviderArgs(
                region=cfg.region,
                default_tags=aws.ProviderDefaultTagsArgs(
                    tags={
                        "mlstack.dev/cluster": cluster_name,
                        "mlstack.dev/environment": platform.environment,
                        **MANAGED_BY,
                    }
                ),
            ),
        )
        on_aws = pulumi.ResourceOptions(provider=provider)
        zones = zones_of(cfg, platform.environment)
        network = Network(
            "aws-network",
            NetworkArgs(
                cluster=cluster_name,
                cidr=cfg.vpc_cidr,
                zones=zones,
                nat=nat_mode(cfg, platform.environment),
            ),
            on_aws,
        )
        private_subnets = [s.id for s in network.private_subnets]
        eks = EksCluster(
            "aws-cluster",
            EksClusterArgs(
                cluster=cluster_name,
                version=platform.cluster.kubernetes_version,
                region=cfg.region,
                subnet_ids=private_subnets,
                public_access_cidrs=cfg.public_access_cidrs,
                api_access_cidrs=cfg.api_access_cidrs,
                admin_arns=cfg.cluster_admin_arns,
                access_entries=cfg.access_entries,
                log_retention_days=cfg.log_retention_days,
                retain=prod,
            ),
            on_aws,
        )
        nodes = NodeGroups(
            "aws-nodes",
            NodeGroupsArgs(
                cluster_name=eks.cluster.name,
                subnet_ids=private_subnets,
                pools=platform.node_pools,
                system_instance_type=cfg.system_pool.instance_type,
                system_sizes=(cfg.system_pool.min_nodes, cfg.system_pool.max_nodes),
                live=live_scaling(cluster_name, pulumi.InvokeOptions(provider=provider)),
            ),
            pulumi.ResourceOptions(provider=provider, depends_on=[eks.cluster]),
        )
        pod_identity = eks.pod_identity_agent([nodes.system])
        k8s_provider = eks.provider("aws-kubernetes")
        names = platform.storage.bucket_names()
        storage = Buckets(
            "aws-storage",
            BucketsArgs(
                buckets={p: (names[p], getattr(platform.storage, p)) for p in names}, retain=prod
            ),
            on_aws,
        )
        registry = Registry(
            "aws-registry",
            RegistryArgs(
                prefix=platform.registry.name,
                repositories=platform.registry.repositories,
                keep_last=platform.registry.keep_last_images,
                deployed=deployed_images(platform),
                retain=prod,
            ),
            on_aws,
        )
        repository_arns = [r.arn for r in registry.repositories.values()]
        teams = {
            team.name: PodIdentity(
                f"aws-team-{team.name}",
                PodIdentityArgs(
                    cluster_name=eks.cluster.name,
                    cluster_arn=eks.cluster.arn,
                    namespace=team.name,
                    service_account=SERVICE_ACCOUNT_NAME,
                    policy=policy_output(
                        team_workload_policy,
                        prefix=team.object_prefix,
                        buckets=names,
                        storage_key_arn=storage.key.arn,
                        region=cfg.region,
                        repository_arns=repository_arns,
                    ),
                    description=f"Workloads of team {team.name} on {cluster_name}",
                    more_service_accounts=runner_accounts(platform, team.name),
                ),
                pulumi.ResourceOptions(provider=provider, depends_on=[pod_identity]),
            )
            for team in platform.teams
        }
        cluster_ready = [nodes.system, *nodes.pools.values(), pod_identity]
        autoscaler = ClusterAutoscaler(
            "aws-autoscaler",
            ClusterAutoscalerArgs(
                cluster=cluster_name,
                cluster_arn=eks.cluster.arn,
                region=cfg.region,
                kubernetes_version=platform.cluster.kubernetes_version,
                k8s_opts=pulumi.ResourceOptions(provider=k8s_provider, depends_on=cluster_ready),
            ),
            on_aws,
        )
        store = ObjectStore(
            scheme="s3",
            buckets={p: b.bucket for p, b in storage.buckets.items()},
            region=cfg.region,
        )
        return Provisioned(
            provider=k8s_provider,
            object_store=store,
            registry=ImageRegistry(url=registry.url),
            cluster_ready=cluster_ready,
            outputs={
                "kubeconfig": eks.kubeconfig,
                "region": cfg.region,
                "cluster_endpoint": eks.cluster.endpoint,
                "vpc_id": network.vpc.id,
                "availability_zones": list(zones),
                "bucket_names": {p: b.bucket for p, b in storage.buckets.items()},
                "registry_urls": {
                    name: r.repository_url for name, r in registry.repositories.items()
                },
                "team_role_arns": {name: t.role.arn for name, t in teams.items()},
                "node_role_arn": nodes.role.arn,
                "autoscaler_role_arn": autoscaler.identity.role.arn,
            },
        )


def zones_of(cfg: AwsConfig, environment: str) -> tuple[str, ...]:
    zones = cfg.availability_zones or default_zones(cfg.region, environment)
    assert zones is not None, "checked: an unknown region must list its zones"
    return zones


def nat_mode(cfg: AwsConfig, environment: str) -> Literal["single", "per-az"]:
    return cfg.nat_gateways or ("single" if environment == "dev" else "per-az")


def _check_region(cfg: AwsConfig, environment: str) -> list[Problem]:
    if not _REGION.match(cfg.region):
        return [
            Problem(
                "platform.aws.region", "not an AWS region name", "use e.g. us-east-1", cfg.region
            )
        ]
    if cfg.region.startswith(_OTHER_PARTITIONS):
        return [
            Problem(
                "platform.aws.region",
                "is in the aws-cn or aws-us-gov partition; mlstack builds ARNs in the aws "
                "partition only",
                "use a region of the aws partition, e.g. us-east-1",
                cfg.region,
            )
        ]
    problems = []
    known = REGIONS.get(cfg.region)
    zones = cfg.availability_zones
    if zones is None:
        if known is None:
            problems.append(
                Problem(
                    "platform.aws.availability_zones",
                    f"the catalog does not know the zones of {cfg.region}",
                    f"list 2 or more, e.g. [{cfg.region}a, {cfg.region}b]",
                )
            )
        return problems
    if not 2 <= len(zones) <= MAX_ZONES:
        problems.append(
            Problem(
                "platform.aws.availability_zones",
                f"EKS needs 2 to {MAX_ZONES} zones",
                "list 2 (dev) or 3 (prod) zones",
                list(zones),
            )
        )
    seen: set[str] = set()
    for i, zone in enumerate(zones):
        path = format_path(("aws", "availability_zones", i))
        if not re.fullmatch(re.escape(cfg.region) + r"[a-z]", zone):
            problems.append(
                Problem(path, f"not a zone of {cfg.region}", f"use e.g. {cfg.region}a", zone)
            )
        elif known is not None and zone not in known.zones:
            problems.append(
                Problem(
                    path,
                    f"{cfg.region} has no zone {zone}",
                    f"use one of: {', '.join(known.zones)}",
                    zone,
                )
            )
        elif zone in seen:
            problems.append(Problem(path, "zone is listed twice", "list each zone once", zone))
        seen.add(zone)
    return problems


def _check_network(cfg: AwsConfig) -> list[Problem]:
    problems = []
    try:
        vpc = ipaddress.ip_network(cfg.vpc_cidr)
    except ValueError as exc:
        problems.append(
            Problem(
                "platform.aws.vpc_cidr",
                f"invalid CIDR: {exc}",
                cidr_fix(cfg.vpc_cidr, "10.0.0.0/16"),
                cfg.vpc_cidr,
            )
        )
    else:
        if not within(vpc, PRIVATE_RANGES) or not 16 <= vpc.prefixlen <= 19:
            problems.append(
                Problem(
                    "platform.aws.vpc_cidr",
                    "a VPC needs a private IPv4 range from /16 to /19 (nodes and pods take "
                    "addresses from it)",
                    "use e.g. 10.0.0.0/16",
                    cfg.vpc_cidr,
                )
            )
        elif cfg.availability_zones is not None and len(cfg.availability_zones) <= MAX_ZONES:
            try:
                subnet_plan(cfg.vpc_cidr, cfg.availability_zones)
            except ValueError as exc:
                problems.append(Problem("platform.aws.vpc_cidr", str(exc), "list fewer zones"))
    for _, path, cidr, net in parsed_cidrs(
        "aws", "public_access_cidrs", cfg.public_access_cidrs, "203.0.113.0/24", problems
    ):
        if not isinstance(net, ipaddress.IPv4Network):
            problems.append(
                Problem(path, "EKS public access lists are IPv4", "use an IPv4 CIDR", cidr)
            )
        elif within(net, PRIVATE_RANGES):
            problems.append(
                Problem(
                    path,
                    "a private range cannot reach the public endpoint (the private endpoint "
                    "already serves the VPC and the networks routed to it)",
                    "remove it, or list that network's public egress range",
                    cidr,
                )
            )
    return problems + _check_api_access(cfg)


def _check_api_access(cfg: AwsConfig) -> list[Problem]:
    """The private endpoint is reached through the cluster security group, which admits only
    the cluster's nodes: "You must ensure that your Amazon EKS control plane security group
    contains rules to allow ingress traffic on port 443 from your connected network" (EKS user
    guide, cluster-endpoint.html, "Accessing a private only API server")."""
    if not cfg.api_access_cidrs and not cfg.public_access_cidrs:
        return [
            Problem(
                "platform.aws.api_access_cidrs",
                "the EKS API is private-only (no aws.public_access_cidrs) and its security group "
                "admits only the cluster's nodes, so pulumi, kubectl and CI on your VPN, "
                "bastion or runner cannot reach it on port 443",
                "list the private ranges they come from, e.g. [10.100.0.0/16] for a VPN's "
                "client range",
            )
        ]
    problems = []
    for i, path, cidr, net in parsed_cidrs(
        "aws", "api_access_cidrs", cfg.api_access_cidrs, "10.100.0.0/16", problems
    ):
        if not within(net, VPC_RANGES):
            problems.append(
                Problem(
                    path,
                    "the private endpoint is reached from private ranges routed to the VPC "
                    "(RFC 1918 or 100.64.0.0/10); a public range belongs in "
                    "aws.public_access_cidrs",
                    "list the VPN, bastion or runner's private range, e.g. 10.100.0.0/16",
                    cidr,
                )
            )
        elif cidr in cfg.api_access_cidrs[:i]:
            problems.append(Problem(path, "is listed twice", "list each range once", cidr))
    return problems


def _check_access(cfg: AwsConfig, platform: Platform) -> list[Problem]:
    problems = []
    team_groups = {g for t in platform.teams for g in (*t.groups, *t.viewer_groups)}
    for i, arn in enumerate(cfg.cluster_admin_arns):
        if arn in cfg.cluster_admin_arns[:i]:
            problems.append(
                Problem(
                    format_path(("aws", "cluster_admin_arns", i)),
                    "is listed twice (EKS allows one access entry per principal)",
                    "list each admin once",
                    arn,
                )
            )
        elif not _PRINCIPAL.match(arn):
            problems.append(
                Problem(
                    format_path(("aws", "cluster_admin_arns", i)),
                    "not an IAM role or user ARN",
                    "use arn:aws:iam::<account>:role/<name>",
                    arn,
                )
            )
    principals: dict[str, int] = {}
    for i, entry in enumerate(cfg.access_entries):
        path = ("aws", "access_entries", i)
        if not _PRINCIPAL.match(entry.principal_arn):
            problems.append(
                Problem(
                    format_path((*path, "principal_arn")),
                    "not an IAM role or user ARN",
                    "use arn:aws:iam::<account>:role/<name>",
                    entry.principal_arn,
                )
            )
        elif entry.principal_arn in principals or entry.principal_arn in cfg.cluster_admin_arns:
            problems.append(
                Problem(
                    format_path((*path, "principal_arn")),
                    "EKS allows one access entry per principal",
                    "merge its groups into one entry (admins need no other entry)",
                    entry.principal_arn,
                )
            )
        principals.setdefault(entry.principal_arn, i)
        for j, group in enumerate(entry.kubernetes_groups):
            gpath = format_path((*path, "kubernetes_groups", j))
            if group.startswith("system:"):
                problems.append(
                    Problem(
                        gpath,
                        "EKS rejects groups under system:",
                        "use a team group; admins go in aws.cluster_admin_arns",
                        group,
                    )
                )
            elif group not in team_groups:
                problems.append(
                    Problem(
                        gpath,
                        "no team binds this group, so it would grant nothing",
                        f"use one of the teams' groups: {', '.join(sorted(team_groups)) or 'none'}",
                        group,
                    )
                )
    return problems


def _check_pools(cfg: AwsConfig, platform: Platform) -> list[Problem]:
    problems = system_pool_problems(WORDS, cfg.system_pool.min_nodes, cfg.system_pool.max_nodes)
    problems += pool_problems(WORDS, platform, cfg.allow_spot)
    problems += cpu_machine_problems(
        WORDS,
        platform,
        [
            ("default_cpu_instance_type", cfg.default_cpu_instance_type),
            ("system_pool.instance_type", cfg.system_pool.instance_type),
        ],
        instance_types.unsold,
        lambda itype: is_gpu_family(family(itype)),
    )
    known = REGIONS.get(cfg.region)
    for i, pool in enumerate(platform.node_pools):

        def path(field: str, i: int = i) -> str:
            return format_path(("node_pools", i, field))

        if pool.kind is PoolKind.CPU or pool.accelerator is None or known is None:
            continue
        try:
            machine = AwsBackend.resolve_gpu_machine(
                pool.accelerator, pool.instance_type, pool.gpus_per_node
            )
        except CatalogError:
            continue  # reported by the shared catalog check
        itype = machine.instance_type or ""
        if family(itype) in known.gpu_families:
            continue
        other = region_machine(
            known, AwsBackend.gpu_machines(pool.accelerator), machine.gpus_per_node
        )
        offered = ", ".join(sorted(known.gpu_families))
        if pool.instance_type is not None:
            problems.append(
                Problem(
                    path("instance_type"),
                    f"{cfg.region} does not offer {itype}",
                    f"use instance_type: {other}"
                    if other
                    else f"use another region, or an accelerator on {offered} machines there",
                    itype,
                )
            )
        elif other is None:
            problems.append(
                Problem(
                    path("accelerator"),
                    f"{cfg.region} offers no machine with {machine.gpus_per_node} x "
                    f"{pool.accelerator}",
                    f"use an accelerator on {offered} machines there, or another region",
                    pool.accelerator,
                )
            )
    return problems
