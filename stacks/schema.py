"""The stack config schema: one typed, frozen description of a platform for every cloud.

A stack file carries it under the Pulumi config key `mlstack:platform`. Field checks live here
(types, ranges, name shapes); checks that need several fields or the catalog live in
`stacks.validate`, which is the only way a `Platform` should be loaded.
"""

from __future__ import annotations

import re
from copy import copy
from enum import StrEnum
from importlib.metadata import version
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from mlstack.stacks.catalog import Cloud
from mlstack.stacks.cron import cron_problem
from mlstack.stacks.names import (
    ACCELERATOR_LABEL,
    BEST_EFFORT_PRIORITY,
    CAPACITY_LABEL,
    GPU_TAINT_KEY,
    MLSTACK_LABEL_PREFIX,
    POOL_KIND_LABEL,
    POOL_LABEL,
    SERVING_PRIORITY,
    TRAINING_PRIORITY,
)
from mlstack.stacks.versions import SUPPORTED_KUBERNETES

_DNS_LABEL = re.compile(r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$")
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_HOST_PORT = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._/-]+)?$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_BUNDLE_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

#: This release of mlstack: the default tag of the workload images built from it.
RELEASE = version("mlstack")


def _dns_label(value: str) -> str:
    if not _DNS_LABEL.match(value):
        raise ValueError(
            "use a DNS label: lowercase letters, digits and '-', starting with a letter, "
            "at most 40 characters"
        )
    return value


def _label_key(value: str) -> str:
    if not _LABEL_KEY.match(value):
        raise ValueError("use a Kubernetes label key such as 'example.com/tier'")
    return value


def _label_value(value: str) -> str:
    if not _LABEL_VALUE.match(value):
        raise ValueError(
            "use a Kubernetes label value: at most 63 letters, digits, '-', '_' or '.'"
        )
    return value


def _bucket(value: str) -> str:
    if not _BUCKET.match(value) or ".." in value:
        raise ValueError("use a bucket name: 3-63 lowercase letters, digits, '-' or '.'")
    return value


def _version_text(value: object) -> object:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(
            f'quote the version, e.g. "1.35": YAML reads an unquoted {value} as a number'
        )
    return value


def _pool_labels(value: dict[str, str]) -> dict[str, str]:
    reserved = sorted(k for k in value if k.startswith(MLSTACK_LABEL_PREFIX))
    if reserved:
        raise ValueError(
            f"use your own prefix: {', '.join(reserved)} under {MLSTACK_LABEL_PREFIX} are set "
            "by mlstack from the pool"
        )
    return value


def _kubernetes_version(value: str) -> str:
    if value not in SUPPORTED_KUBERNETES:
        raise ValueError(
            f"use one of {', '.join(SUPPORTED_KUBERNETES)}: a version needs a tested set of "
            "add-ons (stacks/versions.py)"
        )
    return value


def _http_url(value: str) -> str:
    if re.match(r"^[a-z][a-z0-9+.-]*://[^/]*@", value, re.IGNORECASE):
        raise ValueError(
            "remove the credentials from the URL: they would be stored in clear text in the "
            "stack file and the state; set them as secrets (pulumi config set --secret)"
        )
    if not re.match(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?$", value):
        raise ValueError("use an http(s) URL with a host and optional port, no path")
    return value.rstrip("/")


def _image_ref(value: str) -> str:
    if _DIGEST.match(value):
        return value
    if not _TAG.match(value):
        raise ValueError(
            "use an image tag (letters, digits, '_', '.', '-'; at most 128) or a digest "
            "'sha256:<64 hex digits>'"
        )
    if value == "latest":
        raise ValueError("pin a version tag or a digest: 'latest' changes under a running job")
    return value


def _host_port(value: str) -> str:
    if not _HOST_PORT.match(value) or "://" in value:
        raise ValueError("use a registry host[:port][/path] without a scheme")
    return value


Name = Annotated[str, AfterValidator(_dns_label)]
LabelKey = Annotated[str, AfterValidator(_label_key)]
LabelValue = Annotated[str, AfterValidator(_label_value)]
BucketName = Annotated[str, AfterValidator(_bucket)]


class Model(BaseModel):
    """Base for every config group: unknown fields are errors and loaded configs are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class PoolKind(StrEnum):
    CPU = "cpu"
    GPU = "gpu"


class Capacity(StrEnum):
    ON_DEMAND = "on-demand"
    SPOT = "spot"
    RESERVED = "reserved"


class TaintEffect(StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Taint(Model):
    key: LabelKey = Field(description="Taint key, for example 'nvidia.com/gpu'.")
    value: LabelValue = Field(default="", description="Taint value; may be empty.")
    effect: TaintEffect = Field(
        default=TaintEffect.NO_SCHEDULE, description="NoSchedule, PreferNoSchedule or NoExecute."
    )


#: The taint GPU pools carry by default so that only pods that ask for GPUs land there.
GPU_TAINT = Taint(key=GPU_TAINT_KEY, value="present", effect=TaintEffect.NO_SCHEDULE)


class ClusterConfig(Model):
    name: Name = Field(description="Cluster name; on clouds the cluster is created with it.")
    kubernetes_version: Annotated[
        str, BeforeValidator(_version_text), AfterValidator(_kubernetes_version)
    ] = Field(
        description="Kubernetes minor version, for example '1.35'; one with a tested set of "
        "add-on versions in stacks/versions.py; manifests are validated against it."
    )
    custom_metrics_adapter: bool = Field(
        default=False,
        description="The cluster already serves the custom metrics API with the per-pod metric "
        "`mlstack_serve_requests_per_second` (a Prometheus that scrapes the serving pods and "
        "prometheus-adapter with the rule under 'Inference services'). mlstack installs "
        "neither, and refuses `autoscale_on: requests_per_second` without this.",
    )


class NodePool(Model):
    name: Name = Field(description="Pool name; quotas, flavors and workloads refer to it.")
    kind: PoolKind = Field(description="'cpu' or 'gpu'.")
    accelerator: str | None = Field(
        default=None, description="GPU pools: an accelerator from the catalog, e.g. 'h100-80gb'."
    )
    instance_type: str | None = Field(
        default=None,
        description="Cloud machine type; defaults from the catalog. Not used on onprem.",
    )
    gpus_per_node: int | None = Field(
        default=None,
        ge=1,
        description="GPUs per node; derived from the machine type on clouds, required on onprem.",
    )
    min_nodes: int | None = Field(
        default=None,
        ge=0,
        description="Smallest size the pool scales to (default 0: scale to zero). Clouds only.",
    )
    max_nodes: int = Field(ge=1, le=1000, description="Largest size the pool scales to.")
    capacity: Capacity = Field(
        default=Capacity.ON_DEMAND, description="'on-demand', 'spot' or 'reserved'."
    )
    labels: Annotated[dict[LabelKey, LabelValue], AfterValidator(_pool_labels)] = Field(
        default_factory=dict, description="Extra node labels, on top of the mlstack.dev/* ones."
    )
    taints: tuple[Taint, ...] | None = Field(
        default=None,
        description="Node taints. Default: GPU pools carry nvidia.com/gpu=present:NoSchedule, "
        "CPU pools none. Setting this replaces the default.",
    )
    disk_gib: int = Field(default=200, ge=20, le=16384, description="Node boot disk size in GiB.")
    nodes: tuple[str, ...] | None = Field(
        default=None,
        description="onprem only: the names of the existing Kubernetes nodes in this pool.",
    )

    @property
    def gpus(self) -> int:
        """GPUs per node (0 for CPU pools)."""
        return (self.gpus_per_node or 0) if self.kind is PoolKind.GPU else 0

    @property
    def max_gpus(self) -> int:
        return self.gpus * self.max_nodes

    @property
    def effective_taints(self) -> tuple[Taint, ...]:
        if self.taints is not None:
            return self.taints
        return (GPU_TAINT,) if self.kind is PoolKind.GPU else ()

    @property
    def node_labels(self) -> dict[str, str]:
        """Labels every node of the pool carries: the mlstack.dev/* ones, then the config's."""
        labels = {
            POOL_LABEL: self.name,
            POOL_KIND_LABEL: self.kind.value,
            CAPACITY_LABEL: self.capacity.value,
        }
        if self.accelerator:
            labels[ACCELERATOR_LABEL] = self.accelerator
        labels.update(self.labels)
        return labels


class BucketConfig(Model):
    name: BucketName | None = Field(
        default=None, description="Bucket name; default '<bucket_prefix>-<purpose>'."
    )
    noncurrent_version_days: int = Field(
        default=30, ge=1, description="Days a replaced object version is kept before expiry."
    )
    archive_after_days: int | None = Field(
        default=None, ge=1, description="Move objects to a colder storage class after N days."
    )


class StorageConfig(Model):
    bucket_prefix: Annotated[str, AfterValidator(_dns_label)] = Field(
        description="Prefix for the default bucket names, e.g. 'acme-ml-prod'."
    )
    datasets: BucketConfig = Field(default_factory=BucketConfig, description="Training data.")
    checkpoints: BucketConfig = Field(
        default_factory=BucketConfig, description="Training checkpoints."
    )
    models: BucketConfig = Field(default_factory=BucketConfig, description="Serving bundles.")

    def bucket_names(self) -> dict[str, str]:
        """Bucket name per purpose, defaults filled in."""
        return {
            purpose: cfg.name or f"{self.bucket_prefix}-{purpose}"
            for purpose, cfg in (
                ("datasets", self.datasets),
                ("checkpoints", self.checkpoints),
                ("models", self.models),
            )
        }


class RegistryConfig(Model):
    name: Name = Field(default="ml", description="Registry (or repository prefix) name.")
    repositories: tuple[Name, ...] = Field(
        default=("train", "serve"), description="Image repositories for the workloads."
    )
    keep_last_images: int = Field(
        default=50, ge=1, description="Images kept per repository by cleanup policies."
    )


class Quota(Model):
    gpus: dict[str, int] = Field(
        default_factory=dict, description="GPUs the team may use, per GPU pool name."
    )
    borrowing_limit_gpus: dict[str, int] = Field(
        default_factory=dict,
        description="GPUs the team may borrow above its quota from its cohort, per GPU pool; "
        "pools not listed: no limit. Needs a cohort.",
    )
    cpu: float = Field(default=16, gt=0, le=100000, description="CPU cores (requests).")
    memory_gib: float = Field(default=64, gt=0, le=1000000, description="Memory in GiB.")
    pods: int = Field(default=200, ge=1, le=100000, description="Pods in the namespace.")


class PodSecurityLevel(StrEnum):
    RESTRICTED = "restricted"
    BASELINE = "baseline"
    PRIVILEGED = "privileged"


class RbacRule(Model):
    api_groups: tuple[str, ...] = Field(
        default=("",), description="API groups, e.g. ['apps']; '' is the core group."
    )
    resources: tuple[str, ...] = Field(min_length=1, description="Resources, e.g. ['secrets'].")
    verbs: tuple[str, ...] = Field(min_length=1, description="Verbs, e.g. ['get', 'list'].")


class Team(Model):
    name: Name = Field(description="Team name; its namespace is named after it.")
    groups: tuple[str, ...] = Field(
        default=(),
        description="Identity-provider groups bound to the team's ml-engineer role.",
    )
    viewer_groups: tuple[str, ...] = Field(
        default=(), description="Groups bound to the team's read-only viewer role."
    )
    quota: Quota = Field(default_factory=Quota, description="The team's share of the platform.")
    cohort: Name | None = Field(
        default=None,
        description="A cohort from tenancy.cohorts: teams in one cohort lend each other "
        "unused GPU quota.",
    )
    pod_security: PodSecurityLevel | None = Field(
        default=None,
        description="Pod Security level enforced in the namespace; default tenancy.pod_security.",
    )
    allow_load_balancers: bool = Field(
        default=False,
        description="Allow Services of type LoadBalancer (internal only) in the namespace.",
    )
    extra_rules: tuple[RbacRule, ...] = Field(
        default=(), description="Extra permissions for the team's ml-engineer role."
    )
    storage_prefix: str | None = Field(
        default=None,
        description="Object prefix (a path such as 'vision' or 'research/vision') that the "
        "team's workloads may read and write in the checkpoints and models buckets; default "
        "the team name. Teams' prefixes may not nest.",
    )

    @property
    def object_prefix(self) -> str:
        """Where the team's objects live in the shared buckets, without a trailing '/'."""
        return self.storage_prefix if self.storage_prefix is not None else self.name


class Cohort(Model):
    name: Name = Field(description="Cohort name; teams join it with teams[].cohort.")
    allow_overcommit: bool = Field(
        default=False,
        description="Let its teams' GPU quotas add up to more than a pool holds (they share "
        "and preempt by priority).",
    )


class TenancyConfig(Model):
    pod_security: PodSecurityLevel = Field(
        default=PodSecurityLevel.RESTRICTED,
        description="Default Pod Security level of team namespaces.",
    )
    monitoring_namespace: Name = Field(
        default="monitoring",
        description="Namespace whose pods may reach team pods (metrics scraping).",
    )
    default_request_cpu: float = Field(
        default=0.25, gt=0, description="CPU request of containers that set none."
    )
    default_request_memory_gib: float = Field(
        default=0.5, gt=0, description="Memory request (GiB) of containers that set none."
    )
    default_limit_cpu: float = Field(
        default=2, gt=0, description="CPU limit of containers that set none."
    )
    default_limit_memory_gib: float = Field(
        default=4, gt=0, description="Memory limit (GiB) of containers that set none."
    )
    cohorts: tuple[Cohort, ...] = Field(
        default=(), description="Kueue cohorts: groups of teams that borrow from each other."
    )


class TrainingJob(Model):
    name: Name = Field(description="Job name, unique within its team; names the JobSet.")
    team: Name = Field(description="The team that owns it (its namespace, queue, quota).")
    pool: Name = Field(description="The node pool it runs on.")
    num_hosts: int = Field(
        default=1, ge=1, le=1024, description="Pods (JAX processes), one per host."
    )
    model: str = Field(
        default="tiny",
        description="Named model config of the training workload (workloads/train/configs.py): "
        "tiny, small or medium.",
    )
    image: Annotated[str, AfterValidator(_image_ref)] = Field(
        default=RELEASE,
        description="Tag (e.g. '0.1.0') or digest ('sha256:...') of the training image in the "
        "stack registry's train repository; default this mlstack release's version.",
    )
    steps: int | None = Field(
        default=None, ge=1, description="Training steps; default the model config's."
    )
    global_batch_size: int | None = Field(
        default=None,
        ge=1,
        description="Sequences per step over all hosts; default the model config's. Must split "
        "evenly over the job's devices.",
    )
    dataset: str = Field(
        default="pystdlib",
        description="Prepared dataset (`mlstack data prepare`): its path in the datasets bucket.",
    )
    checkpoint_every_steps: int = Field(
        default=500, ge=1, description="Save a checkpoint every N steps (and on SIGTERM)."
    )
    keep_checkpoints: int = Field(
        default=3, ge=1, le=1000, description="Newest checkpoints kept; older ones are deleted."
    )
    export_every_steps: int = Field(
        default=0,
        ge=0,
        description="Also export a serving bundle every N steps; 0: only at the end.",
    )
    gpus_per_host: int | None = Field(
        default=None,
        ge=1,
        description="GPUs each pod requests; default all GPUs of one node of the pool. GPU "
        "pools only.",
    )
    cpu: float = Field(
        default=4, gt=0, le=1024, description="CPU cores per pod (request and limit)."
    )
    memory_gib: float = Field(
        default=16, gt=0, le=16384, description="Memory per pod in GiB (request and limit)."
    )
    max_restarts: int = Field(
        default=3,
        ge=0,
        le=1000,
        description="Times the whole job restarts (from its latest checkpoint) after a pod "
        "fails, before it is marked failed.",
    )
    termination_grace_period_s: int | None = Field(
        default=None,
        ge=30,
        le=3600,
        description="Seconds a pod has after SIGTERM (preemption, node drain) to save a "
        "checkpoint before it is killed; default 300, or on a spot pool the cloud's reclaim "
        "notice if shorter (AWS 120, GKE 105 from 1.35, else 15), which it may not exceed.",
    )
    priority: str = Field(
        default=TRAINING_PRIORITY,
        description=f"Priority class: {TRAINING_PRIORITY} or {BEST_EFFORT_PRIORITY} "
        f"({SERVING_PRIORITY} is the model servers' and is refused: the job would preempt them).",
    )
    fsdp: int | None = Field(
        default=None,
        ge=1,
        description="Size of the fsdp mesh axis (parameters sharded over that many devices); "
        "unset: data parallel only.",
    )
    dtype: Literal["float32", "bfloat16"] | None = Field(
        default=None, description="Compute dtype; default the model config's."
    )


def _bundle_version(value: str) -> str:
    if value == "latest":
        raise ValueError(
            "name a bundle version such as 'step-00002000': 'latest' is the pointer that an "
            "unpinned server follows"
        )
    if not _BUNDLE_VERSION.match(value):
        raise ValueError(
            "use a bundle version as the training export names it, e.g. 'step-00002000' "
            "(letters, digits, '.', '_', '-'; at most 128)"
        )
    return value


BundleVersion = Annotated[str, AfterValidator(_bundle_version)]


class Canary(Model):
    version: BundleVersion = Field(
        description="The bundle version the canary replicas serve, e.g. 'step-00003000' (a "
        "directory under the model's versions/)."
    )
    replicas: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="Canary replicas, taken from the service's replicas: the canary's share of "
        "the traffic is this count over all ready replicas.",
    )


class InferenceService(Model):
    name: Name = Field(
        description="Service name, unique within its team; names the Kubernetes Service, "
        "Deployment, autoscaler and disruption budget."
    )
    team: Name = Field(description="The team that owns it (its namespace, queue, quota).")
    pool: Name = Field(description="The node pool it runs on.")
    model: str | None = Field(
        default=None,
        description="The model to serve: its directory under the team's prefix in the models "
        "bucket, which is a training job's name; default the service name.",
    )
    version: BundleVersion | None = Field(
        default=None,
        description="Bundle version the (stable) replicas serve; unset: follow the model's "
        "`latest` and load each new export within reload_interval_s. A canary needs it set.",
    )
    image: Annotated[str, AfterValidator(_image_ref)] = Field(
        default=RELEASE,
        description="Tag (e.g. '0.1.0') or digest ('sha256:...') of the serving image in the "
        "stack registry's serve repository; default this mlstack release's version.",
    )
    replicas: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="Replicas at least (the autoscaler's minimum), canary included.",
    )
    max_replicas: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Replicas at most (the autoscaler's maximum), canary included; default "
        "replicas (no autoscaling).",
    )
    autoscale_on: Literal["cpu", "requests_per_second"] = Field(
        default="cpu",
        description="What the autoscaler follows: 'cpu' (CPU utilization, needs "
        "metrics-server) or 'requests_per_second' per replica (the server's metrics through "
        "prometheus-adapter).",
    )
    target_cpu_percent: int = Field(
        default=70,
        ge=1,
        le=100,
        description="autoscale_on cpu: average CPU utilization (of the request) to hold.",
    )
    target_requests_per_second: float | None = Field(
        default=None,
        gt=0,
        le=1000000,
        description="autoscale_on requests_per_second: requests per second per replica to "
        "hold; required there.",
    )
    gpus_per_replica: int | None = Field(
        default=None,
        ge=0,
        le=64,
        description="GPUs each replica requests; default 1 on GPU pools, 0 on CPU pools.",
    )
    cpu: float = Field(
        default=4, gt=0, le=1024, description="CPU cores per replica (request and limit)."
    )
    memory_gib: float = Field(
        default=16, gt=0, le=16384, description="Memory per replica in GiB (request and limit)."
    )
    max_batch: int = Field(
        default=32,
        ge=1,
        le=1024,
        description="Requests decoded together in one batch at most (the server's --max-batch).",
    )
    max_queue: int = Field(
        default=256,
        ge=1,
        le=1000000,
        description="Requests waiting at most per replica; more are answered 429 (the server's "
        "--max-queue).",
    )
    reload_interval_s: int = Field(
        default=60,
        ge=1,
        le=86400,
        description="Seconds between checks for a newer bundle (the server's --reload-interval-s).",
    )
    startup_timeout_s: int = Field(
        default=600,
        ge=30,
        le=7200,
        description="Seconds a replica may take to load the bundle and compile and warm up "
        "every batch bucket before it is restarted (the startup probe's budget).",
    )
    termination_grace_period_s: int | None = Field(
        default=None,
        ge=15,
        le=3600,
        description="Seconds a replica has to stop before it is killed: 5 s for the Service "
        "to drop it, then SIGTERM, and it finishes the requests in flight; default 60, or on a "
        "spot pool the cloud's reclaim notice if shorter, which it may not exceed.",
    )
    internal_load_balancer: bool = Field(
        default=False,
        description="Also expose the service on an internal load balancer (reachable from "
        "the private network, never the internet); needs the team's allow_load_balancers. "
        "Default: ClusterIP only.",
    )
    allow_from_namespaces: tuple[Name, ...] = Field(
        default=(),
        description="Other namespaces whose pods may call the service; its own namespace and "
        "tenancy.monitoring_namespace always may.",
    )
    canary: Canary | None = Field(
        default=None,
        description="A second set of replicas serving another bundle version behind the same "
        "Service; promote by setting version to it and removing canary, roll back by removing "
        "canary.",
    )

    @property
    def model_name(self) -> str:
        """The model directory under the team's prefix, default filled in."""
        return self.model if self.model is not None else self.name


# --- pipelines --------------------------------------------------------------------------------

_METRIC = re.compile(r"^[a-z][a-z0-9_-]*\.(loss|perplexity)$")


def _metric(value: str) -> str:
    if not _METRIC.match(value):
        raise ValueError(
            "use '<split>.loss' or '<split>.perplexity', e.g. 'test.loss' (lower is better)"
        )
    return value


def _same_as(model: type[BaseModel], name: str) -> Any:
    """A copy of another model's field (type checks, default, description): a train step takes
    the training job's knobs with the same meaning and limits."""
    return copy(model.model_fields[name])


class _PipelineStep(Model):
    """What every step has: a name, the steps it waits for and its retries."""

    name: Name = Field(
        description="Step name, unique within its pipeline; names the step's Job or JobSet "
        "in each run and its directory in the run's store area."
    )
    after: tuple[Name, ...] = Field(
        default=(),
        description="Steps of the same pipeline that must finish first; none: it starts "
        "with the run.",
    )
    retries: int = Field(
        default=1,
        ge=0,
        le=10,
        description="Attempts after the first failure before the run fails.",
    )


class PrepareStep(_PipelineStep):
    kind: Literal["prepare"] = Field(
        description="'prepare', 'train', 'evaluate', 'select' or 'promote': what the step does."
    )
    dataset: str = Field(
        default="pystdlib",
        description="prepare: the source dataset (`mlstack data prepare`): its path in the "
        "datasets bucket, read only; the step splits it into train and test.",
    )
    test_fraction: float = Field(
        default=0.05,
        gt=0,
        lt=0.5,
        description="prepare: the share of documents held out as the test split (chosen by "
        "content hash, so the same documents every run).",
    )
    seed: int = Field(
        default=0, ge=0, description="prepare: seed of the split, part of its cache key."
    )
    cpu: float = Field(
        default=2, gt=0, le=1024, description="CPU cores of the step's pod (request and limit)."
    )
    memory_gib: float = Field(
        default=8,
        gt=0,
        le=16384,
        description="Memory of the step's pod in GiB (request and limit).",
    )


class TrainStep(_PipelineStep):
    kind: Literal["train"] = Field(
        description="'prepare', 'train', 'evaluate', 'select' or 'promote': what the step does."
    )
    pool: Name = Field(description="train: the node pool the candidate trains on.")
    model: str = Field(
        default="tiny",
        description="train: named model config (workloads/train/configs.py): tiny, small or "
        "medium.",
    )
    num_hosts: int = _same_as(TrainingJob, "num_hosts")
    steps: int | None = _same_as(TrainingJob, "steps")
    global_batch_size: int | None = _same_as(TrainingJob, "global_batch_size")
    learning_rate: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="train: peak learning rate; default the model config's. Candidates "
        "often differ only in this.",
    )
    checkpoint_every_steps: int = _same_as(TrainingJob, "checkpoint_every_steps")
    eval_every_steps: int | None = Field(
        default=None,
        ge=1,
        description="train: report the test split's loss every N steps in the metrics; "
        "default at the end only.",
    )
    gpus_per_host: int | None = _same_as(TrainingJob, "gpus_per_host")
    cpu: float = _same_as(TrainingJob, "cpu")
    memory_gib: float = _same_as(TrainingJob, "memory_gib")
    max_restarts: int = _same_as(TrainingJob, "max_restarts")
    termination_grace_period_s: int | None = _same_as(TrainingJob, "termination_grace_period_s")
    priority: str = _same_as(TrainingJob, "priority")
    fsdp: int | None = _same_as(TrainingJob, "fsdp")
    dtype: Literal["float32", "bfloat16"] | None = _same_as(TrainingJob, "dtype")
    seed: int = Field(
        default=0, ge=0, description="train: seed of the parameters and the data order."
    )


class EvaluateStep(_PipelineStep):
    kind: Literal["evaluate"] = Field(
        description="'prepare', 'train', 'evaluate', 'select' or 'promote': what the step does."
    )
    split: Literal["test", "train"] = Field(
        default="test",
        description="evaluate: the prepare step's split each upstream train step's bundle "
        "is evaluated on (loss and perplexity, in evals/<split>.json beside the bundle).",
    )
    max_batches: int | None = Field(
        default=None,
        ge=1,
        description="evaluate: batches read at most; default the whole split.",
    )
    cpu: float = _same_as(PrepareStep, "cpu")
    memory_gib: float = _same_as(PrepareStep, "memory_gib")


class SelectStep(_PipelineStep):
    kind: Literal["select"] = Field(
        description="'prepare', 'train', 'evaluate', 'select' or 'promote': what the step does."
    )
    metric: Annotated[str, AfterValidator(_metric)] = Field(
        default="test.loss",
        description="select: the metric candidates are ranked by, '<split>.loss' or "
        "'<split>.perplexity' (lower is better); an upstream evaluate must produce it.",
    )
    min_improvement: float = Field(
        default=0.0,
        ge=0,
        description="select: how much lower than the model's `champion` the best candidate's "
        "metric must be to be selected; otherwise none is.",
    )


def _alias(value: str) -> str:
    if value == "latest":
        raise ValueError(
            "'latest' is the export pointer, which every export moves: name "
            "another alias, e.g. 'canary' or 'champion'"
        )
    return _dns_label(value)


AliasName = Annotated[str, AfterValidator(_alias)]


class PromoteStep(_PipelineStep):
    kind: Literal["promote"] = Field(
        description="'prepare', 'train', 'evaluate', 'select' or 'promote': what the step does."
    )
    alias: AliasName = Field(
        default="canary",
        description="promote: the alias moved to the selected version (nothing moves when "
        "the select step chose none).",
    )
    then_alias: AliasName | None = Field(
        default=None,
        description="promote: an alias moved after soak_s, if `alias` still names the "
        "version then (nobody rolled it back), e.g. 'champion'.",
    )
    soak_s: int = Field(
        default=0,
        ge=0,
        le=7 * 86400,
        description="promote: seconds between moving alias and then_alias.",
    )


PipelineStep = Annotated[
    PrepareStep | TrainStep | EvaluateStep | SelectStep | PromoteStep,
    Field(discriminator="kind"),
]


def _schedule(value: str) -> str:
    problem = cron_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _time_zone(value: str) -> str:
    # The CronJob's timeZone takes a tz database name (the CronJob documentation's "Time
    # zones"); the API server checks it against its own copy of the database, this one against
    # Python's (zoneinfo: the system's, or the tzdata package's).
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("use a tz database name such as 'Etc/UTC' or 'Europe/Berlin'") from None
    return value


def _some_steps(value: tuple[Any, ...]) -> tuple[Any, ...]:
    # Not min_length: pydantic reports that too when a step is refused, a second, false line.
    if not value:
        raise ValueError("declare at least one step, e.g. {name: data, kind: prepare}")
    return value


class Pipeline(Model):
    name: Name = Field(
        description="Pipeline name, unique within its team; names its runner CronJob and its "
        "ConfigMap."
    )
    team: Name = Field(
        description="The team that owns it (its namespace, queue, quota and storage prefix)."
    )
    model: Name | None = Field(
        default=None,
        description="The registry model its candidates are exported to and its aliases "
        "move in: a directory under the team's prefix in the models bucket; default the "
        "pipeline name.",
    )
    schedule: Annotated[str, AfterValidator(_schedule)] | None = Field(
        default=None,
        description="When runs start, as a Kubernetes CronJob schedule: 5 cron fields "
        "('0 2 * * *') or @hourly, @daily, @weekly, @monthly, @yearly; unset: runs start only "
        "by hand (`mlstack pipeline run`).",
    )
    time_zone: Annotated[str, AfterValidator(_time_zone)] = Field(
        default="Etc/UTC",
        description="The IANA time zone the schedule is read in, e.g. 'Europe/Berlin'.",
    )
    starting_deadline_s: int = Field(
        default=3600,
        ge=10,
        le=7 * 86400,
        description="Seconds after its scheduled time a missed run may still start; later it "
        "is skipped (and a CronJob without it stops for good after 100 missed starts).",
    )
    pool: Name = Field(
        description="The CPU node pool the runner and the prepare, evaluate, select and "
        "promote steps run on."
    )
    image: Annotated[str, AfterValidator(_image_ref)] = Field(
        default=RELEASE,
        description="Tag (e.g. '0.1.0') or digest ('sha256:...') of the training image, in "
        "the stack registry's train repository, that the runner and every step run; default "
        "this mlstack release's version.",
    )
    runner_cpu: float = Field(
        default=0.5, gt=0, le=64, description="CPU cores of the runner pod (request and limit)."
    )
    runner_memory_gib: float = Field(
        default=1,
        gt=0,
        le=256,
        description="Memory of the runner pod in GiB (request and limit).",
    )
    steps: Annotated[tuple[PipelineStep, ...], AfterValidator(_some_steps)] = Field(
        description="The steps, each with a kind and the steps it waits for (`after`).",
    )

    @property
    def model_name(self) -> str:
        """The registry model, default filled in."""
        return self.model if self.model is not None else self.name


class Workloads(Model):
    training_jobs: tuple[TrainingJob, ...] = Field(default=(), description="JAX training jobs.")
    inference_services: tuple[InferenceService, ...] = Field(
        default=(), description="Model servers."
    )
    pipelines: tuple[Pipeline, ...] = Field(
        default=(),
        description="Continuous training: steps (prepare, train candidates, evaluate, select, "
        "promote) run by hand or on a schedule.",
    )


class OnPremConfig(Model):
    kubeconfig_path: str | None = Field(
        default=None,
        description="Path to a kubeconfig for the existing cluster, on the machine that runs "
        "pulumi; a leading '~/' is that machine's home (the provider expands it, so the plan "
        "is the same for every operator). Alternatively set the secret `mlstack:kubeconfig`.",
    )
    context: str | None = Field(default=None, description="kubeconfig context to use.")
    metrics_server_installed: bool = Field(
        default=False,
        description="The cluster already runs metrics-server (the `metrics.k8s.io` API); "
        "otherwise mlstack installs it, as CPU autoscaling needs it.",
    )
    storage_endpoint: Annotated[str, AfterValidator(_http_url)] = Field(
        description="S3-compatible endpoint, e.g. 'https://minio.lab.internal:9000'. Buckets "
        "exist already; credentials come from the secrets `mlstack:s3AccessKeyId` and "
        "`mlstack:s3SecretAccessKey`."
    )
    storage_region: str = Field(default="us-east-1", description="Region the S3 endpoint uses.")
    registry_host: Annotated[str, AfterValidator(_host_port)] = Field(
        description="Container registry host[:port][/path], e.g. 'registry.lab.internal:5000'."
    )


class AwsAccessEntry(Model):
    principal_arn: str = Field(
        description="An IAM role (or user) ARN, e.g. 'arn:aws:iam::123456789012:role/vision'."
    )
    kubernetes_groups: tuple[str, ...] = Field(
        min_length=1,
        description="Kubernetes groups the principal gets: the teams' groups or viewer_groups.",
    )


class AwsSystemPool(Model):
    instance_type: str = Field(default="m6i.large", description="Instance type of system nodes.")
    min_nodes: int = Field(default=2, ge=1, le=100, description="System nodes at least.")
    max_nodes: int = Field(default=4, ge=1, le=100, description="System nodes at most.")


class AwsConfig(Model):
    region: str = Field(description="AWS region, e.g. 'us-east-1'.")
    availability_zones: tuple[str, ...] | None = Field(
        default=None,
        description="AZs of the VPC, e.g. ['us-east-1a', 'us-east-1b']; default the region's "
        "first 2 (dev) or 3 (staging, prod) from the catalog.",
    )
    vpc_cidr: str = Field(
        default="10.0.0.0/16", description="Private IPv4 range of the VPC, a /16 to a /19."
    )
    nat_gateways: Literal["single", "per-az"] | None = Field(
        default=None,
        description="'single' (one NAT gateway, cheaper) or 'per-az' (one per AZ, survives an "
        "AZ outage); default single in dev, per-az otherwise.",
    )
    public_access_cidrs: tuple[str, ...] = Field(
        default=(),
        description="CIDRs allowed to reach the EKS API endpoint from the internet; empty: "
        "private endpoint only (reach it from the VPC, a VPN or a bastion).",
    )
    api_access_cidrs: tuple[str, ...] = Field(
        default=(),
        description="Private CIDRs routed to the VPC (a VPN's client range, an office or "
        "on-prem network, a bastion's or CI runner's subnet) allowed to reach the EKS API's "
        "private endpoint: each becomes a port 443 ingress rule on the cluster security group, "
        "which otherwise admits only the cluster's own nodes. Required when "
        "public_access_cidrs is empty (pulumi itself deploys the Kubernetes layer through it).",
    )
    cluster_admin_arns: tuple[str, ...] = Field(
        default=(),
        description="IAM principals given cluster admin through EKS access entries. Not the "
        "identity that runs pulumi: EKS makes the cluster's creator an admin already, and a "
        "second entry for it fails.",
    )
    access_entries: tuple[AwsAccessEntry, ...] = Field(
        default=(),
        description="IAM principals mapped to Kubernetes groups (team groups) by EKS access "
        "entries.",
    )
    allow_spot: bool = Field(
        default=True, description="Whether this stack may run spot node groups."
    )
    default_cpu_instance_type: str = Field(
        default="m6i.2xlarge", description="Instance type of CPU pools that name none."
    )
    system_pool: AwsSystemPool = Field(
        default_factory=AwsSystemPool,
        description="The node group for cluster add-ons (autoscaler, Kueue, CoreDNS).",
    )
    log_retention_days: int = Field(
        default=90, ge=1, description="Days the control-plane logs are kept in CloudWatch."
    )


class GcpSystemPool(Model):
    machine_type: str = Field(default="e2-standard-4", description="Machine type of system nodes.")
    min_nodes: int = Field(default=1, ge=1, le=100, description="System nodes at least (total).")
    max_nodes: int = Field(default=3, ge=1, le=100, description="System nodes at most (total).")


class GcpConfig(Model):
    project: str = Field(description="GCP project id, e.g. 'acme-ml-prod'.")
    region: str = Field(description="GCP region, e.g. 'us-central1'; the cluster is regional.")
    zones: tuple[str, ...] | None = Field(
        default=None,
        description="Zones the nodes run in, e.g. ['us-central1-a', 'us-central1-b']; default "
        "the region's first 2 (dev) or 3 (staging, prod) from the catalog. Each GPU pool uses "
        "those of them that offer its accelerator.",
    )
    pool_zones: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="Zones per node pool name, overriding `zones` for that pool; every zone "
        "listed must offer the pool's accelerator.",
    )
    release_channel: Literal["rapid", "regular", "stable", "extended"] = Field(
        default="regular",
        description="GKE release channel; the control plane runs at least "
        "cluster.kubernetes_version and GKE upgrades it and the nodes within the channel.",
    )
    subnet_cidr: str = Field(
        default="10.0.0.0/20", description="Primary range of the nodes' subnet (a /16 to a /24)."
    )
    pods_cidr: str = Field(
        default="10.4.0.0/14", description="Secondary range for pod IPs (a /11 to a /21)."
    )
    services_cidr: str = Field(
        default="10.8.0.0/20", description="Secondary range for Service IPs (a /16 to a /27)."
    )
    master_cidr: str = Field(
        default="172.16.0.0/28",
        description="The /28 the GKE control plane's private endpoint takes; must not overlap "
        "the other ranges.",
    )
    master_authorized_networks: tuple[str, ...] = Field(
        default=(),
        description="CIDRs allowed to reach the cluster's public endpoint; empty: no public "
        "IP endpoint, and the control plane is reached through its DNS-based endpoint (from "
        "any network that reaches Google APIs, for callers with IAM "
        "container.clusters.connect).",
    )
    gpu_driver_version: Literal["default", "latest"] = Field(
        default="latest",
        description="NVIDIA driver GKE installs on GPU nodes: 'default' or 'latest' for the "
        "node version.",
    )
    allow_spot: bool = Field(default=True, description="Whether this stack may run spot pools.")
    default_cpu_machine_type: str = Field(
        default="n2-standard-8", description="Machine type of CPU pools that name none."
    )
    system_pool: GcpSystemPool = Field(
        default_factory=GcpSystemPool,
        description="The node pool for cluster add-ons (Kueue, the platform's controllers).",
    )
    cmek: bool = Field(
        default=False,
        description="Encrypt the buckets and Kubernetes secrets with Cloud KMS keys the "
        "platform creates (rotated every 90 days) instead of Google-managed keys.",
    )
    kms_key_ring: Name | None = Field(
        default=None,
        description="Name of the `cmek` key ring; default the cluster's name. GCP never "
        "deletes a key ring or its keys, so the name stays taken after `pulumi destroy`: to "
        "create the stack again, name a ring not used before in the project and region. On a "
        "live stack a new name replaces the keys, and data under the old ones is lost.",
    )
    rbac_security_group: str | None = Field(
        default=None,
        description="Google Groups for RBAC: the 'gke-security-groups@<your domain>' group "
        "that contains the teams' groups, so team groups in RoleBindings match Google Groups.",
    )
    enable_apis: bool = Field(
        default=True,
        description="Enable the project's APIs the platform uses (cloudresourcemanager, "
        "compute, container, storage, artifactregistry, iam, cloudkms; the Service Usage API "
        "that enables them must be on); they are left on at destroy.",
    )


class Platform(Model):
    cloud: Cloud = Field(description="'aws', 'gcp' or 'onprem'.")
    environment: Literal["dev", "staging", "prod"] = Field(
        default="dev", description="prod protects stateful resources from deletion."
    )
    cluster: ClusterConfig = Field(description="The Kubernetes cluster.")
    node_pools: tuple[NodePool, ...] = Field(min_length=1, description="CPU and GPU node pools.")
    storage: StorageConfig = Field(description="Object storage buckets by purpose.")
    registry: RegistryConfig = Field(
        default_factory=RegistryConfig, description="Container registry for workload images."
    )
    teams: tuple[Team, ...] = Field(default=(), description="Teams sharing the platform.")
    tenancy: TenancyConfig = Field(
        default_factory=TenancyConfig,
        description="How teams share the cluster: Pod Security, container defaults, cohorts.",
    )
    workloads: Workloads = Field(
        default_factory=Workloads, description="Training jobs and inference services to deploy."
    )
    extra_manifests: tuple[dict[str, Any], ...] = Field(
        default=(),
        description="Extra Kubernetes objects deployed with the platform (apiVersion, kind, "
        "metadata.name); the policy pack checks them like the rest.",
    )
    onprem: OnPremConfig | None = Field(default=None, description="cloud: onprem settings.")
    aws: AwsConfig | None = Field(default=None, description="cloud: aws settings.")
    gcp: GcpConfig | None = Field(default=None, description="cloud: gcp settings.")

    def pool(self, name: str) -> NodePool:
        return next(p for p in self.node_pools if p.name == name)

    @property
    def gpu_pools(self) -> tuple[NodePool, ...]:
        return tuple(p for p in self.node_pools if p.kind is PoolKind.GPU)

    def pod_security(self, team: Team) -> PodSecurityLevel:
        """The Pod Security level a team's namespace enforces."""
        return team.pod_security or self.tenancy.pod_security

    def cohort(self, name: str) -> Cohort:
        return next(c for c in self.tenancy.cohorts if c.name == name)
