"""A training job as a JobSet: pure builders that return dicts, no resources.

One replicated job of `num_hosts` pods (an Indexed Job, one completion per process). JobSet
gives each pod a stable DNS name, `<jobset>-workers-0-<index>.<subdomain>`, through the headless
Service it creates for the JobSet and deletes with it; process 0's name is the coordinator
address, and each pod's completion index is its process id. The pods set the environment
contract of `workloads.contract` and nothing else about where they run.

Where the pods land, what they request and their security context come from `pods`, which the
serving Deployments share.
"""

from __future__ import annotations

from typing import Any

import pulumi

from mlstack.stacks.names import (
    CHECKPOINTS_ANNOTATION,
    JOB_LABEL,
    LOCAL_QUEUE_NAME,
    MANAGED_BY,
    PRIORITY_LABEL,
    QUEUE_LABEL,
    SERVICE_ACCOUNT_NAME,
    TEAM_LABEL,
    TRAIN_REPOSITORY,
)
from mlstack.stacks.schema import Team, TrainingJob
from mlstack.workloads import contract
from mlstack.workloads.deploy.pods import (
    Placement,
    container_security_context,
    env_value,
    guaranteed_resources,
    image_ref,
    join,
    node_placement,
    pod_security_context,
    scratch_volumes,
    store_env,
)
from mlstack.workloads.deploy.settings import JobSettings

JOBSET_API = "jobset.x-k8s.io/v1alpha2"
#: The replicated job's name: part of every pod's DNS name.
REPLICATED_JOB = "workers"
CONTAINER = "train"
#: The training entry point, run as `python -m`.
ENTRY_MODULE = "mlstack.workloads.train.main"
#: The Job controller's annotation on every pod of an Indexed Job: its completion index.
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


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
    """The entry point's flags: the run's settings
    (`python -m mlstack.workloads.train.main --help`)."""
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


def container_env(settings: JobSettings, team: Team, placement: Placement) -> list[dict[str, Any]]:
    """The environment contract, plus how to reach the store."""
    job = settings.job
    return [
        env_value(contract.COORDINATOR_ADDRESS, coordinator_address(job.name)),
        env_value(contract.NUM_PROCESSES, str(job.num_hosts)),
        {
            "name": contract.PROCESS_ID,
            "valueFrom": {
                "fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}
            },
        },
        *(env_value(k, v) for k, v in run_urls(placement, team, job).items()),
        *store_env(placement),
    ]


def resources(settings: JobSettings) -> dict[str, dict[str, Any]]:
    """Requests equal to limits, GPUs included (`pods.guaranteed_resources`)."""
    job = settings.job
    return guaranteed_resources(job.cpu, job.memory_gib, settings.gpus_per_host)


def pod_template(settings: JobSettings, team: Team, placement: Placement) -> dict[str, Any]:
    """The workers' pod template: restricted Pod Security, on the job's pool, as the team's
    `workload` ServiceAccount (its cloud identity reads and writes the team's objects)."""
    job = settings.job
    volumes, mounts = scratch_volumes(settings.gpus_per_host)
    container = {
        "name": CONTAINER,
        "image": image_ref(placement.registry, TRAIN_REPOSITORY, job.image),
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", ENTRY_MODULE],
        "args": container_args(settings),
        "env": container_env(settings, team, placement),
        "ports": [{"name": "coordinator", "containerPort": contract.COORDINATOR_PORT}],
        "resources": resources(settings),
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }
    spec: dict[str, Any] = {
        # A failed process fails its Job and JobSet restarts every process together (from the
        # latest checkpoint): JAX processes cannot rejoin a running computation one by one.
        "restartPolicy": "Never",
        "serviceAccountName": SERVICE_ACCOUNT_NAME,
        "priorityClassName": job.priority,
        "terminationGracePeriodSeconds": settings.termination_grace_period_s,
        **node_placement(settings.pool),
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": volumes,
    }
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
            # No rules: any failed child Job restarts the JobSet, recreating every Job, up to
            # maxRestarts times (JobSet's default action, RestartJobSet; its example
            # examples/simple/max-restarts.yaml pairs it with backoffLimit 0 below, so that one
            # failed pod fails its Job at once instead of being retried alone while its peers
            # wait for it in a collective).
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
