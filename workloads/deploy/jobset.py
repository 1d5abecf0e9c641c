"""A training job as a JobSet: pure builders that return dicts, no resources.

One replicated job of `num_hosts` pods (an Indexed Job, one completion per process). JobSet
gives each pod a stable DNS name, `<jobset>-workers-0-<index>.<subdomain>`, through the headless
Service it creates for the JobSet and deletes with it; process 0's name is the coordinator
address, and each pod's completion index is its process id. The pods set the environment
contract of `workloads.contract` and nothing else about where they run.

Values that only the cloud knows (the registry URL, bucket names) may be Pulumi outputs: the
builders put them into the manifest as they are, or join them with `pulumi.Output.concat`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi

from components.backend import ImageRegistry, ObjectStore
from components.kubernetes.system import MANAGED_BY, OBJECT_STORE_SECRET
from policies.queues import LOCAL_QUEUE_NAME, PRIORITY_LABEL, QUEUE_LABEL
from policies.tenancy import (
    CHECKPOINTS_ANNOTATION,
    GPU_RESOURCE,
    SERVICE_ACCOUNT_NAME,
    TEAM_LABEL,
    quantity,
)
from stacks.schema import POOL_LABEL, NodePool, Team, TrainingJob
from workloads import contract
from workloads.deploy.settings import TRAIN_REPOSITORY, JobSettings
from workloads.storage import S3_ENDPOINT_VARS

JOBSET_API = "jobset.x-k8s.io/v1alpha2"
#: The replicated job's name: part of every pod's DNS name.
REPLICATED_JOB = "workers"
CONTAINER = "train"
#: The training entry point, run as `python -m`.
ENTRY_MODULE = "workloads.train.main"
#: The image's non-root user (workloads/Dockerfile); the pods run as it.
RUN_AS_USER = 65532
#: Writable scratch in an otherwise read-only container: local checkpoint staging, data cache.
SCRATCH_DIR = "/tmp"
#: Labels the JobSet and its pods with the job's name.
JOB_LABEL = "mlstack.dev/training-job"
#: The Job controller's annotation on every pod of an Indexed Job: its completion index.
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
#: Where the S3-compatible endpoint goes (read first by workloads.storage).
S3_ENDPOINT_ENV = S3_ENDPOINT_VARS[0]
#: The keys of the object-store Secret that the tenancy layer copies into team namespaces.
ACCESS_KEY_ENV = "AWS_ACCESS_KEY_ID"
SECRET_KEY_ENV = "AWS_SECRET_ACCESS_KEY"


@dataclass(frozen=True)
class Placement:
    """Where a stack keeps images and objects, as the training pods reach them."""

    #: The registry URL (`host[/path]`); images are `<registry>/train:<tag>`.
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


def image_ref(registry: pulumi.Input[str], image: str) -> pulumi.Input[str]:
    """`<registry>/train:<tag>`, or `<registry>/train@sha256:...` for a digest."""
    repository = join(registry, TRAIN_REPOSITORY)
    separator = "@" if image.startswith("sha256:") else ":"
    return join(repository, image, sep=separator)


def coordinator_address(job_name: str) -> str:
    """Process 0's stable DNS name (its JobSet's first pod) and the coordinator port."""
    return f"{job_name}-{REPLICATED_JOB}-0-0.{job_name}:{contract.COORDINATOR_PORT}"


def run_urls(placement: Placement, team: Team, job: TrainingJob) -> dict[str, pulumi.Input[str]]:
    """Where the run reads its data and writes checkpoints and serving bundles. The team's
    identity may write only under its prefix in the checkpoints and models buckets, and the
    job's name keeps its runs apart from the team's other jobs (a resumed run finds its own)."""
    return {
        contract.DATA_URL: join(placement.buckets["datasets"], job.dataset),
        contract.CHECKPOINT_URL: join(
            placement.buckets["checkpoints"], team.object_prefix, job.name
        ),
        contract.MODEL_URL: join(placement.buckets["models"], team.object_prefix, job.name),
    }


def container_args(settings: JobSettings) -> list[str]:
    """The entry point's flags: the run's settings (`python -m workloads.train.main --help`)."""
    job = settings.job
    args = [
        *("--config", job.model),
        *("--steps", str(settings.steps)),
        *("--checkpoint-every", str(job.checkpoint_every_steps)),
        *("--keep-checkpoints", str(job.keep_checkpoints)),
        *("--export-every", str(job.export_every_steps)),
    ]
    if job.global_batch_size is not None:
        args += ["--global-batch-size", str(job.global_batch_size)]
    if job.fsdp is not None:
        args += ["--fsdp", str(job.fsdp)]
    if job.dtype is not None:
        args += ["--dtype", job.dtype]
    return args


def _value(name: str, value: pulumi.Input[str]) -> dict[str, Any]:
    return {"name": name, "value": value}


def container_env(settings: JobSettings, team: Team, placement: Placement) -> list[dict[str, Any]]:
    """The environment contract, plus how to reach the store."""
    job = settings.job
    env = [
        _value(contract.COORDINATOR_ADDRESS, coordinator_address(job.name)),
        _value(contract.NUM_PROCESSES, str(job.num_hosts)),
        {
            "name": contract.PROCESS_ID,
            "valueFrom": {
                "fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}
            },
        },
        *(_value(k, v) for k, v in run_urls(placement, team, job).items()),
    ]
    if placement.s3_endpoint is not None:
        env.append(_value(S3_ENDPOINT_ENV, placement.s3_endpoint))
    if placement.region is not None:
        env.append(_value("AWS_REGION", placement.region))
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


def resources(settings: JobSettings) -> dict[str, dict[str, Any]]:
    """Requests equal to limits (Guaranteed QoS: the last pods evicted under node pressure).
    The CPU limit is set too: the namespace's LimitRange would otherwise give the container
    its default CPU limit, which may be below the request, and the pod would be refused."""
    job = settings.job
    amounts: dict[str, Any] = {
        "cpu": quantity(job.cpu),
        "memory": quantity(job.memory_gib, "Gi"),
    }
    if settings.gpus_per_host:
        amounts[GPU_RESOURCE] = str(settings.gpus_per_host)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def pod_template(settings: JobSettings, team: Team, placement: Placement) -> dict[str, Any]:
    """The workers' pod template: restricted Pod Security, on the job's pool, as the team's
    `workload` ServiceAccount (its cloud identity reads and writes the team's objects)."""
    job, pool = settings.job, settings.pool
    mounts = [{"name": "scratch", "mountPath": SCRATCH_DIR}]
    volumes: list[dict[str, Any]] = [{"name": "scratch", "emptyDir": {}}]
    if settings.gpus_per_host:
        # NCCL and XLA exchange buffers through /dev/shm; the runtime's default is 64 MiB.
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
    container = {
        "name": CONTAINER,
        "image": image_ref(placement.registry, job.image),
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", ENTRY_MODULE],
        "args": container_args(settings),
        "env": container_env(settings, team, placement),
        "ports": [{"name": "coordinator", "containerPort": contract.COORDINATOR_PORT}],
        "resources": resources(settings),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    }
    spec: dict[str, Any] = {
        # A failed process fails its Job and JobSet restarts every process together (from the
        # latest checkpoint): JAX processes cannot rejoin a running computation one by one.
        "restartPolicy": "Never",
        "serviceAccountName": SERVICE_ACCOUNT_NAME,
        "priorityClassName": job.priority,
        "terminationGracePeriodSeconds": job.termination_grace_period_s,
        "nodeSelector": {POOL_LABEL: pool.name},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    taints = tolerations(pool)
    if taints:
        spec["tolerations"] = taints
    return {"metadata": {"labels": _labels(team, job.name)}, "spec": spec}


def _labels(team: Team, job_name: str) -> dict[str, str]:
    return {**MANAGED_BY, TEAM_LABEL: team.name, JOB_LABEL: job_name}


def jobset_manifest(settings: JobSettings, team: Team, placement: Placement) -> dict[str, Any]:
    """The JobSet of a training job, in its team's namespace and queued by Kueue."""
    job = settings.job
    n = job.num_hosts
    return {
        "apiVersion": JOBSET_API,
        "kind": "JobSet",
        "metadata": {
            "name": job.name,
            "namespace": team.name,
            "labels": {
                **_labels(team, job.name),
                QUEUE_LABEL: LOCAL_QUEUE_NAME,
                PRIORITY_LABEL: job.priority,
            },
            # Saves checkpoints and resumes from them: it may run on spot capacity.
            "annotations": {CHECKPOINTS_ANNOTATION: "true"},
        },
        "spec": {
            "failurePolicy": {"maxRestarts": job.max_restarts},
            "network": {
                "enableDNSHostnames": True,
                # The JobSet's own headless Service, named after the subdomain; process 0's
                # name must resolve before any process is ready (all wait in initialize).
                "subdomain": job.name,
                "publishNotReadyAddresses": True,
            },
            "replicatedJobs": [
                {
                    "name": REPLICATED_JOB,
                    "replicas": 1,
                    "template": {
                        "metadata": {"labels": _labels(team, job.name)},
                        "spec": {
                            "completionMode": "Indexed",
                            "completions": n,
                            "parallelism": n,
                            "backoffLimit": 0,
                            "template": pod_template(settings, team, placement),
                        },
                    },
                }
            ],
        },
    }
