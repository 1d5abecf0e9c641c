"""A pipeline's cluster objects as plain dicts: each step's Job or JobSet, the runner's
CronJob, its ConfigMap and the runner's RBAC. Pure builders, no resources (`pipelines` declares
them).

Each step's manifest goes into the runtime spec (`pipeline.json` in the ConfigMap); the runner
(`workloads.pipeline.runner`) names it per run, puts the step's command and contract env into
its container and creates it in the team's namespace, where Kueue admits it against the team's
quota like any Job: one step at a time, no quota held for steps that are not running. A train
step's JobSet comes from the TrainingJob component's own builder (`jobset.jobset_manifest`).
"""

from __future__ import annotations

from typing import Any

from mlstack.stacks.names import (
    LOCAL_QUEUE_NAME,
    MANAGED_BY,
    PIPELINE_LABEL,
    PIPELINE_RUNNER_SA,
    PRIORITY_LABEL,
    QUEUE_LABEL,
    SERVICE_ACCOUNT_NAME,
    TEAM_LABEL,
    TRAIN_REPOSITORY,
    TRAINING_PRIORITY,
)
from mlstack.stacks.pipelines import runtime_pipeline, step_training_job
from mlstack.stacks.schema import (
    NodePool,
    Pipeline,
    PipelineStep,
    Platform,
    PromoteStep,
    SelectStep,
    Team,
    TrainStep,
)
from mlstack.workloads.deploy.jobset import jobset_manifest
from mlstack.workloads.deploy.pods import (
    Placement,
    container_security_context,
    guaranteed_resources,
    image_ref,
    node_placement,
    pod_security_context,
    scratch_volumes,
    store_env,
)
from mlstack.workloads.deploy.settings import job_settings

#: Select and promote read a few small JSON objects from the store and write one: their pod
#: is small and fixed.
SMALL_STEP_CPU = 0.5
SMALL_STEP_MEMORY_GIB = 1.0
#: Where the runner reads its pipeline (the ConfigMap's one key, mounted read-only).
SPEC_DIR = "/etc/mlstack/pipeline"
SPEC_KEY = "pipeline.json"
RUNNER_MODULE = "mlstack.workloads.pipeline.runner"
STEP_MODULE = "mlstack.workloads.pipeline.step"
#: Runs kept in the CronJob's history (`kubectl get jobs`); the run state is in the store.
SUCCESSFUL_RUNS_KEPT = 3
FAILED_RUNS_KEPT = 3
#: A failed runner is not retried by the Job controller: the engine retries steps itself, and
#: the next scheduled (or hand-started) run resumes the same run state.
RUNNER_BACKOFF_LIMIT = 0
#: The longest one run may take before its runner is stopped: a day (a nightly run that
#: overruns would otherwise hold the next one back under concurrencyPolicy Forbid forever).
RUNNER_DEADLINE_S = 86400


def object_name(pipeline: Pipeline) -> str:
    """The pipeline's CronJob and ConfigMap name: at most 49 characters, within the 52 a
    CronJob's name may have (its Jobs add 11; Kubernetes CronJob docs, "Writing a CronJob
    spec")."""
    return f"pipeline-{pipeline.name}"


def step_pods(step: PipelineStep) -> tuple[int, float, float]:
    """(pods, CPUs each, GiB each) a step runs as."""
    if isinstance(step, TrainStep):
        return step.num_hosts, step.cpu, step.memory_gib
    if isinstance(step, SelectStep | PromoteStep):
        return 1, SMALL_STEP_CPU, SMALL_STEP_MEMORY_GIB
    return 1, step.cpu, step.memory_gib


def _labels(team: Team, pipeline: Pipeline) -> dict[str, str]:
    return {**MANAGED_BY, TEAM_LABEL: team.name, PIPELINE_LABEL: pipeline.name}


def step_job(
    pipeline: Pipeline, step: PipelineStep, team: Team, pool: NodePool, placement: Placement
) -> dict[str, Any]:
    """A prepare, evaluate, select or promote step as a Job on the pipeline's CPU pool, in the
    team's LocalQueue, as the team's `workload` ServiceAccount (its storage identity). The
    command is the step entry point's; the runner adds the run's flags and env."""
    _, cpu, memory_gib = step_pods(step)
    labels = _labels(team, pipeline)
    container = {
        "name": "step",
        "image": image_ref(placement.registry, TRAIN_REPOSITORY, pipeline.image),
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", STEP_MODULE],
        "env": store_env(placement),
        "resources": guaranteed_resources(cpu, memory_gib, 0),
        "securityContext": container_security_context(),
        "volumeMounts": scratch_volumes(0)[1],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"{pipeline.name}-{step.name}",
            "namespace": team.name,
            "labels": {**labels, QUEUE_LABEL: LOCAL_QUEUE_NAME, PRIORITY_LABEL: TRAINING_PRIORITY},
        },
        "spec": {
            # The engine retries a failed step (its `retries`) as a new Job.
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": SERVICE_ACCOUNT_NAME,
                    "priorityClassName": TRAINING_PRIORITY,
                    **node_placement(pool),
                    "securityContext": pod_security_context(),
                    "containers": [container],
                    "volumes": scratch_volumes(0)[0],
                },
            },
        },
    }


def step_manifest(
    platform: Platform,
    pipeline: Pipeline,
    step: PipelineStep,
    placement: Placement,
    spot_notice_s: int | None,
) -> dict[str, Any]:
    """The step's Job, or for a train step the JobSet the TrainingJob component would deploy
    for the training job the step runs as."""
    team = next(t for t in platform.teams if t.name == pipeline.team)
    if isinstance(step, TrainStep):
        job = step_training_job(pipeline, step)
        settings = job_settings(job, platform.pool(step.pool), spot_notice_s)
        manifest = jobset_manifest(settings, team, placement)
        manifest["metadata"]["name"] = f"{pipeline.name}-{step.name}"
        manifest["metadata"]["labels"][PIPELINE_LABEL] = pipeline.name
        return manifest
    return step_job(pipeline, step, team, platform.pool(pipeline.pool), placement)


def pipeline_document(
    platform: Platform, pipeline: Pipeline, placement: Placement, spot_notice_s: int | None
) -> str:
    """The ConfigMap's `pipeline.json`: the runtime spec with each step's manifest. Needs a
    Placement of plain strings (resolve the registry and buckets first)."""
    buckets = placement.buckets
    manifests = {
        step.name: step_manifest(platform, pipeline, step, placement, spot_notice_s)
        for step in pipeline.steps
    }
    spec = runtime_pipeline(
        platform,
        f"{pipeline.team}/{pipeline.name}",
        datasets_url=str(buckets["datasets"]),
        checkpoints_url=str(buckets["checkpoints"]),
        models_url=str(buckets["models"]),
        image=str(image_ref(placement.registry, TRAIN_REPOSITORY, pipeline.image)),
        manifests=manifests,
    )
    return spec.dumps()


def config_map(pipeline: Pipeline, team: Team, document: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": object_name(pipeline),
            "namespace": team.name,
            "labels": _labels(team, pipeline),
        },
        "data": {SPEC_KEY: document},
    }


def runner_cronjob(
    pipeline: Pipeline, team: Team, pool: NodePool, placement: Placement
) -> dict[str, Any]:
    """The runner: one Job per scheduled run, admitted by Kueue in the team's LocalQueue (the
    queue label on the jobTemplate's metadata, where Kueue reads a CronJob's: Kueue docs, "Run
    a CronJob"). Without a schedule the CronJob is suspended: it never starts a run itself, and
    `mlstack pipeline run` creates a Job from its jobTemplate (as `kubectl create job --from
    cronjob/...` does)."""
    labels = _labels(team, pipeline)
    container = {
        "name": "runner",
        "image": image_ref(placement.registry, TRAIN_REPOSITORY, pipeline.image),
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", RUNNER_MODULE, "--spec", f"{SPEC_DIR}/{SPEC_KEY}"],
        "env": store_env(placement),
        "resources": guaranteed_resources(pipeline.runner_cpu, pipeline.runner_memory_gib, 0),
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
            *scratch_volumes(0)[1],
        ],
    }
    pod_spec = {
        "restartPolicy": "Never",
        "serviceAccountName": PIPELINE_RUNNER_SA,
        # The runner calls the API server with its ServiceAccount's token.
        "automountServiceAccountToken": True,
        "priorityClassName": TRAINING_PRIORITY,
        **node_placement(pool),
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": [
            {"name": "spec", "configMap": {"name": object_name(pipeline)}},
            *scratch_volumes(0)[0],
        ],
    }
    spec: dict[str, Any] = {
        # A CronJob schedules at most 100 missed starts back and then stops for good, unless
        # startingDeadlineSeconds bounds how far back it looks (Kubernetes CronJob docs,
        # "CronJob limitations"); Forbid: a run still going skips the next one.
        "schedule": pipeline.schedule or "@yearly",
        "timeZone": pipeline.time_zone,
        "startingDeadlineSeconds": pipeline.starting_deadline_s,
        "concurrencyPolicy": "Forbid",
        "suspend": pipeline.schedule is None,
        "successfulJobsHistoryLimit": SUCCESSFUL_RUNS_KEPT,
        "failedJobsHistoryLimit": FAILED_RUNS_KEPT,
        "jobTemplate": {
            "metadata": {
                "labels": {
                    **labels,
                    QUEUE_LABEL: LOCAL_QUEUE_NAME,
                    PRIORITY_LABEL: TRAINING_PRIORITY,
                }
            },
            "spec": {
                "backoffLimit": RUNNER_BACKOFF_LIMIT,
                "activeDeadlineSeconds": RUNNER_DEADLINE_S,
                "template": {"metadata": {"labels": labels}, "spec": pod_spec},
            },
        },
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": object_name(pipeline), "namespace": team.name, "labels": labels},
        "spec": spec,
    }


#: What the runner may do, in its own namespace only: run steps as Jobs and JobSets.
RUNNER_RULES = (
    {
        "apiGroups": ["batch"],
        "resources": ["jobs"],
        "verbs": ["create", "get", "list", "watch", "delete"],
    },
    {
        "apiGroups": ["jobset.x-k8s.io"],
        "resources": ["jobsets"],
        "verbs": ["create", "get", "list", "watch", "delete"],
    },
)


def runner_rbac(
    team: Team, annotations: dict[str, Any], pull_secret: str | None
) -> list[dict[str, Any]]:
    """The team's `pipeline-runner` ServiceAccount (with the cloud identity annotations the
    team's `workload` one has), its Role and RoleBinding."""
    meta = {"name": PIPELINE_RUNNER_SA, "namespace": team.name, "labels": dict(MANAGED_BY)}
    account: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {**meta, **({"annotations": dict(annotations)} if annotations else {})},
        "automountServiceAccountToken": False,
    }
    if pull_secret is not None:
        account["imagePullSecrets"] = [{"name": pull_secret}]
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": dict(meta),
        "rules": [dict(rule) for rule in RUNNER_RULES],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": dict(meta),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": PIPELINE_RUNNER_SA,
        },
        "subjects": [
            {"kind": "ServiceAccount", "name": PIPELINE_RUNNER_SA, "namespace": team.name}
        ],
    }
    return [account, role, binding]
