"""The platform's own namespace and the environment contract every workload reads.

`mlstack-system` holds a ConfigMap with where the buckets and the registry are (the same keys
the training and serving code read, in the cluster and under `mlstack local`), and, on stores
without workload identity, the object-store and image-pull Secrets.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi

from mlstack.components import Options
from mlstack.components.backend import ImageRegistry, ObjectStore
from mlstack.components.kubernetes.resources import declare
from mlstack.stacks.names import (
    MANAGED_BY,
    OBJECT_STORE_SECRET,
    PLATFORM_CONFIGMAP,
    POD_SECURITY_ENFORCE_LABEL,
    POD_SECURITY_WARN_LABEL,
    REGISTRY_PULL_SECRET,
)
from mlstack.stacks.names import SYSTEM_NAMESPACE as NAMESPACE

#: The environment-contract key holding the registry workload images come from.
REGISTRY_ENV = "MLSTACK_REGISTRY"
#: The environment-contract key holding the models bucket's URL.
MODELS_ENV = "MLSTACK_MODELS_URL"


def namespace_manifest(name: str = NAMESPACE, level: str = "restricted") -> dict[str, Any]:
    """A namespace of mlstack's own (the platform's, an add-on's) enforcing Pod Security `level`."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                **MANAGED_BY,
                POD_SECURITY_ENFORCE_LABEL: level,
                POD_SECURITY_WARN_LABEL: level,
            },
        },
    }


def platform_env(
    store: ObjectStore, registry: ImageRegistry, cluster: str
) -> dict[str, pulumi.Input[str]]:
    """The environment contract: variable name -> value, as workloads read it."""
    env: dict[str, pulumi.Input[str]] = {
        "MLSTACK_CLUSTER": cluster,
        "MLSTACK_DATASETS_URL": store.url("datasets"),
        "MLSTACK_CHECKPOINTS_URL": store.url("checkpoints"),
        MODELS_ENV: store.url("models"),
        REGISTRY_ENV: registry.url,
    }
    if store.endpoint:
        env["AWS_ENDPOINT_URL_S3"] = store.endpoint
    if store.region:
        env["AWS_REGION"] = store.region
    return env


def configmap_manifest(env: Mapping[str, pulumi.Input[str]]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": PLATFORM_CONFIGMAP, "namespace": NAMESPACE, "labels": MANAGED_BY},
        "data": dict(env),
    }


def secret_manifest(
    name: str, secret_type: str, data: Mapping[str, Any], namespace: str = NAMESPACE
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": MANAGED_BY},
        "type": secret_type,
        "stringData": dict(data),
    }


def dockerconfigjson(host: str, username: str, password: str) -> str:
    """The `.dockerconfigjson` document for one registry."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return json.dumps(
        {"auths": {host: {"username": username, "password": password, "auth": token}}}
    )


def declare_credentials(
    name: str,
    namespace: str,
    store: ObjectStore,
    registry: ImageRegistry,
    opts: pulumi.ResourceOptions,
) -> str | None:
    """The object-store and image-pull Secrets in `namespace`, for stores and registries that
    have no workload identity. Returns the pull Secret's name, or None when there is none."""
    if store.credentials is not None:
        declare(
            f"{name}-object-store-credentials",
            secret_manifest(
                OBJECT_STORE_SECRET,
                "Opaque",
                {
                    "AWS_ACCESS_KEY_ID": store.credentials.access_key_id,
                    "AWS_SECRET_ACCESS_KEY": store.credentials.secret_access_key,
                },
                namespace,
            ),
            opts,
        )
    if registry.pull_credentials is not None:
        username, password = registry.pull_credentials
        host = pulumi.Output.from_input(registry.url).apply(lambda u: u.split("/")[0])
        config = pulumi.Output.secret(
            pulumi.Output.all(host, username, password).apply(
                lambda args: dockerconfigjson(args[0], args[1], args[2])
            )
        )
        declare(
            f"{name}-registry-pull",
            secret_manifest(
                REGISTRY_PULL_SECRET,
                "kubernetes.io/dockerconfigjson",
                {".dockerconfigjson": config},
                namespace,
            ),
            opts,
        )
        return REGISTRY_PULL_SECRET
    return None


@dataclass(frozen=True)
class PlatformSystemArgs:
    store: ObjectStore
    registry: ImageRegistry
    #: The cluster's name, as workloads read it (MLSTACK_CLUSTER).
    cluster: str


class PlatformSystem(pulumi.ComponentResource):
    """mlstack-system: the platform ConfigMap and, where needed, credentials Secrets."""

    def __init__(self, name: str, args: PlatformSystemArgs, opts: Options = None) -> None:
        # 'System', not 'PlatformSystem': the token is part of every child's URN, and renaming
        # it would replace the namespace and its objects on every deployed cluster.
        super().__init__("mlstack:kubernetes:System", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.namespace = declare(f"{name}-namespace", namespace_manifest(), child)
        in_ns = pulumi.ResourceOptions(parent=self, depends_on=[self.namespace])
        self.env = platform_env(args.store, args.registry, args.cluster)
        declare(f"{name}-platform-config", configmap_manifest(self.env), in_ns)
        declare_credentials(name, NAMESPACE, args.store, args.registry, in_ns)
        self.register_outputs({"namespace": NAMESPACE})
