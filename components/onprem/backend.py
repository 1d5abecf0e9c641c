"""The on-prem backend: an existing cluster, an S3-compatible store and a registry you run.

Nothing is created outside Kubernetes: the cluster, its nodes, the buckets and the registry
exist already. mlstack reaches the cluster with a kubeconfig, labels the pools'
nodes (their taints are the operator's, see pools.py), and hands workloads the store's
endpoint and credentials.
"""

from __future__ import annotations

import re

import pulumi

from mlstack.components.backend import (
    CloudBackend,
    ImageRegistry,
    ObjectStore,
    Provisioned,
    SecretSource,
    StaticCredentials,
)
from mlstack.components.features import Feature
from mlstack.components.onprem.catalog import NO_INSTANCE_TYPE, resolve_gpu_machine
from mlstack.components.onprem.cluster import ExistingCluster, ExistingClusterArgs
from mlstack.components.onprem.pools import LabeledNodePool, LabeledNodePoolArgs
from mlstack.stacks.catalog import Machine
from mlstack.stacks.errors import Problem, format_path
from mlstack.stacks.schema import Platform

_NODE_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")


def _kubeconfig_path_problems(platform: Platform) -> list[Problem]:
    """The provider expands only `~` and a leading `~/` (provider.go), so `~user/...` would be
    read as kubeconfig contents; mlstack passes the path unexpanded (see ExistingCluster)."""
    path = platform.onprem.kubeconfig_path if platform.onprem else None
    if path is None or not path.startswith("~") or path == "~" or path.startswith("~/"):
        return []
    return [
        Problem(
            format_path(("onprem", "kubeconfig_path")),
            "the Kubernetes provider expands only a leading '~/', not '~user/'",
            "write the path as '~/...' or as an absolute path",
            path,
        )
    ]


class OnPremBackend(CloudBackend):
    cloud = "onprem"
    unsupported = {
        Feature.SPOT_CAPACITY: "nodes are owned machines, never reclaimed by a provider",
        Feature.RESERVED_CAPACITY: "nodes are owned machines; there is nothing to reserve",
        Feature.AUTOSCALING: "nodes are existing machines; mlstack labels them but cannot add "
        "or remove them",
    }
    #: MetalLB's address pool named `internal` (the current and the legacy key).
    internal_lb_annotations = {
        "metallb.io/address-pool": "internal",
        "metallb.universe.tf/address-pool": "internal",
    }
    needs_gpu_device_plugin = True
    required_secrets = ("s3AccessKeyId", "s3SecretAccessKey")
    optional_secrets = ("kubeconfig", "registryUsername", "registryPassword")

    @classmethod
    def check(cls, platform: Platform) -> list[Problem]:
        problems: list[Problem] = []
        owner: dict[str, str] = {}
        for i, pool in enumerate(platform.node_pools):
            if pool.min_nodes is not None:
                problems.append(
                    Problem(
                        format_path(("node_pools", i, "min_nodes")),
                        f"onprem does not scale pools: {cls.unsupported[Feature.AUTOSCALING]}",
                        "remove min_nodes",
                        pool.min_nodes,
                    )
                )
            if pool.instance_type is not None and pool.kind.value == "cpu":
                problems.append(
                    Problem(
                        format_path(("node_pools", i, "instance_type")),
                        NO_INSTANCE_TYPE,
                        "remove instance_type",
                        pool.instance_type,
                    )
                )
            if not pool.nodes:
                problems.append(
                    Problem(
                        format_path(("node_pools", i, "nodes")),
                        "onprem pools must name their existing nodes",
                        "list the pool's node names (kubectl get nodes)",
                    )
                )
                continue
            if len(pool.nodes) != pool.max_nodes:
                problems.append(
                    Problem(
                        format_path(("node_pools", i, "max_nodes")),
                        f"pool lists {len(pool.nodes)} nodes",
                        f"set max_nodes to {len(pool.nodes)}, the number of nodes listed",
                        pool.max_nodes,
                    )
                )
            for j, node in enumerate(pool.nodes):
                path = format_path(("node_pools", i, "nodes", j))
                if not _NODE_NAME.match(node):
                    problems.append(
                        Problem(
                            path, "not a Kubernetes node name", "use the name kubectl shows", node
                        )
                    )
                elif node in owner:
                    problems.append(
                        Problem(
                            path,
                            f"node is already in pool {owner[node]!r}",
                            "put each node in one pool",
                            node,
                        )
                    )
                owner.setdefault(node, pool.name)
        problems.extend(_kubeconfig_path_problems(platform))
        return problems

    @classmethod
    def resolve_gpu_machine(
        cls, accelerator: str, instance_type: str | None, gpus_per_node: int | None
    ) -> Machine:
        return resolve_gpu_machine(accelerator, instance_type, gpus_per_node)

    @classmethod
    def needs_metrics_server(cls, platform: Platform) -> bool:
        """Unless the operator says the cluster has one (a second copy would fight it)."""
        return not (platform.onprem is not None and platform.onprem.metrics_server_installed)

    @classmethod
    def required_secret_keys(cls, platform: Platform) -> tuple[str, ...]:
        onprem = platform.onprem
        assert onprem is not None
        kubeconfig = () if onprem.kubeconfig_path else ("kubeconfig",)
        return cls.required_secrets + kubeconfig

    def provision(self, platform: Platform, secrets: SecretSource) -> Provisioned:
        onprem = platform.onprem
        assert onprem is not None, "validated: cloud onprem has an onprem section"
        kubeconfig = secrets.get("kubeconfig")
        if kubeconfig is None:
            assert onprem.kubeconfig_path is not None
            kubeconfig = pulumi.Output.from_input(onprem.kubeconfig_path)
        cluster = ExistingCluster(
            "onprem-cluster", ExistingClusterArgs(kubeconfig=kubeconfig, context=onprem.context)
        )
        on_cluster = pulumi.ResourceOptions(provider=cluster.provider)
        pools = [
            LabeledNodePool(f"onprem-pool-{pool.name}", LabeledNodePoolArgs(pool=pool), on_cluster)
            for pool in platform.node_pools
        ]
        access_key, secret_key = secrets.get("s3AccessKeyId"), secrets.get("s3SecretAccessKey")
        assert access_key is not None and secret_key is not None, "checked by the program"
        store = ObjectStore(
            scheme="s3",
            buckets=platform.storage.bucket_names(),
            endpoint=onprem.storage_endpoint,
            region=onprem.storage_region,
            credentials=StaticCredentials(access_key, secret_key),
        )
        user, password = secrets.get("registryUsername"), secrets.get("registryPassword")
        registry = ImageRegistry(
            url=f"{onprem.registry_host}/{platform.registry.name}",
            pull_credentials=(user, password)
            if user is not None and password is not None
            else None,
        )
        return Provisioned(
            provider=cluster.provider,
            object_store=store,
            registry=registry,
            cluster_ready=pools,
            outputs={"storage_endpoint": onprem.storage_endpoint},
        )
