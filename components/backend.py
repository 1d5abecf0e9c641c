"""The CloudBackend interface and its registry.

A backend turns the cloud-neutral Platform into one cloud's resources (network, cluster, node
pools, buckets, registry, identity) and hands the Kubernetes layer what it needs: a provider for
the cluster, where objects and images live, and how pods reach them. Each backend declares what
its cloud cannot do, with the reason, and checks its own part of a config before anything is
declared. What the shared code must know of a cloud (its machine types, how a GPU pool resolves
to one, what keeps a load balancer internal) it asks the backend, so that adding a cloud adds a
package rather than branches in shared files.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import pulumi

from mlstack.components.features import Feature
from mlstack.stacks.catalog import Machine, MachineType, gpu_machines, resolve_gpu_machine
from mlstack.stacks.names import PIPELINE_RUNNER_SA, SERVE_REPOSITORY, TRAIN_REPOSITORY

if TYPE_CHECKING:
    import pulumi_kubernetes as k8s

    from mlstack.stacks.errors import Problem
    from mlstack.stacks.schema import NodePool, Platform


class SecretSource(Protocol):
    """Reads the stack's secret config (`pulumi config set --secret mlstack:<key>`)."""

    def get(self, key: str) -> pulumi.Output[str] | None: ...


@dataclass(frozen=True)
class StaticCredentials:
    """An access key pair, for stores that have no workload identity (on-prem S3)."""

    access_key_id: pulumi.Input[str]
    secret_access_key: pulumi.Input[str]


@dataclass(frozen=True)
class ObjectStore:
    """Where the platform's buckets are and how workloads authenticate to them."""

    scheme: Literal["s3", "gs"]
    buckets: Mapping[str, pulumi.Input[str]]
    endpoint: str | None = None
    region: str | None = None
    #: None where pods get access from their cloud identity; set for static-key stores.
    credentials: StaticCredentials | None = None

    def url(self, purpose: str) -> pulumi.Output[str]:
        return pulumi.Output.concat(self.scheme, "://", self.buckets[purpose])


@dataclass(frozen=True)
class ImageRegistry:
    url: pulumi.Input[str]
    #: Username and password for an image pull secret; None where nodes pull by identity.
    pull_credentials: tuple[pulumi.Input[str], pulumi.Input[str]] | None = None


def runner_accounts(platform: Platform, team: str) -> tuple[str, ...]:
    """The team's ServiceAccounts besides `workload` that get its storage identity: the
    pipeline runner's, where the team has pipelines (it writes each run's state)."""
    if any(p.team == team for p in platform.workloads.pipelines):
        return (PIPELINE_RUNNER_SA,)
    return ()


def deployed_images(platform: Platform) -> dict[str, tuple[str, ...]]:
    """Per registry repository, the image tags and digests ('sha256:...') the stack's workloads
    pin, for cleanup policies that must not remove an image a workload still pulls."""
    pinned = {
        TRAIN_REPOSITORY: [job.image for job in platform.workloads.training_jobs]
        + [pipeline.image for pipeline in platform.workloads.pipelines],
        SERVE_REPOSITORY: [svc.image for svc in platform.workloads.inference_services],
    }
    return {repo: tuple(sorted(set(images))) for repo, images in pinned.items()}


def is_digest(image: str) -> bool:
    """Whether a pinned image (`TrainingJob.image`, `InferenceService.image`) is a digest."""
    return image.startswith("sha256:")


@dataclass(frozen=True)
class Provisioned:
    """What a backend yields to the Kubernetes layer."""

    provider: k8s.Provider
    object_store: ObjectStore
    registry: ImageRegistry
    #: Resources the Kubernetes layer waits for (node pools that must exist first).
    cluster_ready: Sequence[pulumi.Resource] = ()
    #: Per team: annotations binding its workload ServiceAccount to a cloud identity.
    service_account_annotations: Mapping[str, Mapping[str, pulumi.Input[str]]] = field(
        default_factory=dict
    )
    outputs: Mapping[str, pulumi.Input[object]] = field(default_factory=dict)


class CloudBackend(ABC):
    """One cloud's implementation. Subclasses live in components/<cloud>/backend.py."""

    cloud: ClassVar[str]
    #: Features of the shared schema this cloud cannot provide: feature -> reason.
    unsupported: ClassVar[Mapping[Feature, str]] = {}
    #: The machine types mlstack knows on this cloud (components/<cloud>/catalog.py).
    machines: ClassVar[Mapping[str, MachineType]] = {}
    #: What makes a LoadBalancer Service internal on this cloud (the serving builder sets them).
    internal_lb_annotations: ClassVar[Mapping[str, str]] = {}
    #: Namespaces where the cloud runs a metrics collector that scrapes pods (GKE's managed
    #: Prometheus collectors): team NetworkPolicies admit them beside tenancy.monitoring_namespace.
    metrics_collector_namespaces: ClassVar[tuple[str, ...]] = ()
    #: Whether that collector scrapes only pods a PodMonitoring (monitoring.googleapis.com/v1)
    #: selects, so that each inference service declares one.
    scrapes_pod_monitorings: ClassVar[bool] = False
    #: Whether the Kubernetes layer installs the NVIDIA device plugin (False where the cloud
    #: manages GPU drivers and the plugin itself).
    needs_gpu_device_plugin: ClassVar[bool] = True
    #: Secret config keys that must be set before `pulumi up`.
    required_secrets: ClassVar[tuple[str, ...]] = ()
    #: Secret config keys read when set.
    optional_secrets: ClassVar[tuple[str, ...]] = ()

    @classmethod
    @abstractmethod
    def check(cls, platform: Platform) -> list[Problem]:
        """This cloud's own config checks; the shared ones have already passed."""

    @classmethod
    def required_secret_keys(cls, platform: Platform) -> tuple[str, ...]:
        """Secret keys this platform needs set; some depend on the config."""
        return cls.required_secrets

    @abstractmethod
    def provision(self, platform: Platform, secrets: SecretSource) -> Provisioned:
        """Declare the cloud side of the platform."""

    @classmethod
    def notes(cls, platform: Platform) -> list[str]:
        """What the user should know about a valid config (checks that could not be made)."""
        return []

    @classmethod
    def needs_metrics_server(cls, platform: Platform) -> bool:
        """Whether the Kubernetes layer installs metrics-server, which CPU autoscaling needs
        (components/kubernetes/metrics_server.py): True unless the cluster already has one."""
        return True

    @classmethod
    def spot_notice_s(cls, platform: Platform) -> int | None:
        """Seconds a pod on this cloud's spot capacity has from SIGTERM to the end of its node
        when the cloud reclaims it: the most a spot pod's terminationGracePeriodSeconds can
        use. None where the cloud has no spot capacity."""
        return None

    @classmethod
    def supports(cls, feature: Feature) -> bool:
        return feature not in cls.unsupported

    @classmethod
    def gpu_machines(cls, accelerator: str) -> Mapping[str, int]:
        """This cloud's machine types that carry `accelerator`: type -> GPUs per node."""
        return gpu_machines(cls.machines, accelerator)

    @classmethod
    def resolve_gpu_machine(
        cls, accelerator: str, instance_type: str | None, gpus_per_node: int | None
    ) -> Machine:
        """A GPU pool's machine type and GPU count on this cloud, or CatalogError saying why
        not."""
        return resolve_gpu_machine(
            cls.cloud, cls.machines, accelerator, instance_type, gpus_per_node
        )

    @classmethod
    def resolve_pool(cls, platform: Platform, pool: NodePool) -> NodePool:
        """Fill in this cloud's defaults for a checked pool (a CPU pool's machine type)."""
        return pool

    @classmethod
    def offline_outputs(
        cls, platform: Platform, resource_type: str, name: str, inputs: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        """Placeholders for outputs the cloud computes (ARNs, endpoints), for the offline
        plan: merged over the resource's inputs as its mock state (an 'id' becomes the
        resource's id). Default: none."""
        return {}

    @classmethod
    def offline_call(
        cls, platform: Platform, token: str, args: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        """Placeholder results of the invokes (data sources) the backend makes, for the
        offline plan. Default: none."""
        return {}


class BackendUnavailableError(LookupError):
    """A known cloud whose backend is not part of this release."""


#: cloud -> "module:Class", imported on first use so one cloud's SDK never loads for another.
_BACKENDS: dict[str, str] = {
    "aws": "mlstack.components.aws.backend:AwsBackend",
    "gcp": "mlstack.components.gcp.backend:GcpBackend",
    "onprem": "mlstack.components.onprem.backend:OnPremBackend",
}
#: Known clouds without a backend yet, with the reason shown to users.
_UNAVAILABLE: dict[str, str] = {}


def available_clouds() -> tuple[str, ...]:
    return tuple(_BACKENDS)


def get_backend(cloud: str) -> type[CloudBackend]:
    """The backend class for `cloud`; an unknown or unavailable cloud says why and what exists."""
    if cloud in _UNAVAILABLE:
        raise BackendUnavailableError(_UNAVAILABLE[cloud])
    if cloud not in _BACKENDS:
        raise LookupError(f"unknown cloud {cloud!r}; known: {', '.join(available_clouds())}")
    module_name, _, class_name = _BACKENDS[cloud].partition(":")
    backend = getattr(importlib.import_module(module_name), class_name)
    assert issubclass(backend, CloudBackend)
    return backend
