"""What every workload pod of the platform shares: pure helpers that return dicts.

Where a stack keeps images and objects (`Placement`) and how pods reach the store, where pods
land (their pool's selector and exactly its taints), Guaranteed resources, and restricted Pod
Security as the image's non-root user with a read-only root filesystem. The training JobSet
(`jobset`) and the serving Deployments (`serving`) build their pods from these.

Values that only the cloud knows (the registry URL, bucket names) may be Pulumi outputs: the
helpers put them into the manifest as they are, or join them with `pulumi.Output.concat`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi

from mlstack.components.backend import ImageRegistry, ObjectStore
from mlstack.policies.tenancy import quantity
from mlstack.stacks.names import GPU_RESOURCE, OBJECT_STORE_SECRET, POOL_LABEL
from mlstack.stacks.schema import NodePool
from mlstack.workloads.storage import S3_ENDPOINT_VARS

#: The image's non-root user (workloads/Dockerfile); the pods run as it.
RUN_AS_USER = 65532
#: Writable scratch in an otherwise read-only container (HOME, caches, local staging).
SCRATCH_DIR = "/tmp"
#: Where the S3-compatible endpoint goes (read first by workloads.storage).
S3_ENDPOINT_ENV = S3_ENDPOINT_VARS[0]
#: The keys of the object-store Secret that the tenancy layer copies into team namespaces.
ACCESS_KEY_ENV = "AWS_ACCESS_KEY_ID"
SECRET_KEY_ENV = "AWS_SECRET_ACCESS_KEY"


@dataclass(frozen=True)
class Placement:
    """Where a stack keeps images and objects, as the workload pods reach them."""

    #: The registry URL (`host[/path]`); images are `<registry>/<repository>:<tag>`.
    registry: pulumi.Input[str]
    #: Bucket URL (`s3://<bucket>` or `gs://<bucket>`) per purpose: datasets, checkpoints,
    #: models.
    buckets: Mapping[str, pulumi.Input[str]]
    #: An S3-compatible store's endpoint (on-prem); None on clouds.
    s3_endpoint: str | None = None
    region: str | None = None
    #: The Secret in the team namespace holding the store's access keys; None where pods get
    #: access from their cloud identity (the team's `workload` ServiceAccount).
    credentials_secret: str | None = None

    @classmethod
    def of(cls, store: ObjectStore, registry: ImageRegistry) -> Placement:
        return cls(
            registry=registry.url,
            buckets={purpose: store.url(purpose) for purpose in store.buckets},
            s3_endpoint=store.endpoint,
            region=store.region,
            credentials_secret=OBJECT_STORE_SECRET if store.credentials is not None else None,
        )


def join(base: pulumi.Input[str], *parts: str, sep: str = "/") -> pulumi.Input[str]:
    """`base` + sep + each part: a str for a str, an Output for anything else."""
    suffix = "".join(f"{sep}{part}" for part in parts)
    if isinstance(base, str):
        return base.rstrip("/") + suffix
    return pulumi.Output.concat(base, suffix)


def image_ref(registry: pulumi.Input[str], repository: str, image: str) -> pulumi.Input[str]:
    """`<registry>/<repository>:<tag>`, or `<registry>/<repository>@sha256:...` for a
    digest."""
    separator = "@" if image.startswith("sha256:") else ":"
    return join(join(registry, repository), image, sep=separator)


def env_value(name: str, value: pulumi.Input[str]) -> dict[str, Any]:
    return {"name": name, "value": value}


def store_env(placement: Placement) -> list[dict[str, Any]]:
    """How to reach the store: an S3-compatible endpoint and region, and the access keys from
    the team's Secret where the store has no workload identity (on-prem)."""
    env = []
    if placement.s3_endpoint is not None:
        env.append(env_value(S3_ENDPOINT_ENV, placement.s3_endpoint))
    if placement.region is not None:
        env.append(env_value("AWS_REGION", placement.region))
    if placement.credentials_secret is not None:
        env += [
            {
                "name": key,
                "valueFrom": {"secretKeyRef": {"name": placement.credentials_secret, "key": key}},
            }
            for key in (ACCESS_KEY_ENV, SECRET_KEY_ENV)
        ]
    return env


def tolerations(pool: NodePool) -> list[dict[str, str]]:
    """Tolerate exactly the pool's taints, so the pods can land there and nowhere tainted
    otherwise."""
    found = []
    for taint in pool.effective_taints:
        tol = {"key": taint.key, "operator": "Equal", "value": taint.value}
        if not taint.value:
            tol = {"key": taint.key, "operator": "Exists"}
        found.append({**tol, "effect": taint.effect.value})
    return found


def node_placement(pool: NodePool) -> dict[str, Any]:
    """A pod spec's fields that put it on `pool`: its selector, and its taints tolerated."""
    placement: dict[str, Any] = {"nodeSelector": {POOL_LABEL: pool.name}}
    taints = tolerations(pool)
    if taints:
        placement["tolerations"] = taints
    return placement


def guaranteed_resources(cpu: float, memory_gib: float, gpus: int) -> dict[str, dict[str, Any]]:
    """Requests equal to limits (Guaranteed QoS: the last pods evicted under node pressure).
    The CPU limit is set too: the namespace's LimitRange would otherwise give the container
    its default CPU limit, which may be below the request, and the pod would be refused."""
    amounts: dict[str, Any] = {"cpu": quantity(cpu), "memory": quantity(memory_gib, "Gi")}
    if gpus:
        amounts[GPU_RESOURCE] = str(gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def pod_security_context() -> dict[str, Any]:
    """Restricted Pod Security, as the image's non-root user."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def scratch_volumes(gpus: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts): an emptyDir at /tmp, and with GPUs a memory-backed /dev/shm."""
    mounts = [{"name": "scratch", "mountPath": SCRATCH_DIR}]
    volumes: list[dict[str, Any]] = [{"name": "scratch", "emptyDir": {}}]
    if gpus:
        # NCCL and XLA exchange buffers through /dev/shm; the runtime's default is 64 MiB.
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
    return volumes, mounts
