"""The JobSet of a training job, built without Pulumi: the environment contract its pods get,
where they run, what they request, and strict validity against the JobSet CRD and the
Kubernetes schema."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from jobset_schema import JobSetValidationError, jobset_problems, validate_jobset

from mlstack.components.backend import ImageRegistry, ObjectStore, StaticCredentials
from mlstack.stacks.names import (
    CHECKPOINTS_ANNOTATION,
    GPU_RESOURCE,
    GPU_TAINT_KEY,
    LOCAL_QUEUE_NAME,
    OBJECT_STORE_SECRET,
    POOL_LABEL,
    PRIORITY_LABEL,
    QUEUE_LABEL,
    SERVICE_ACCOUNT_NAME,
    TRAIN_REPOSITORY,
)
from mlstack.stacks.schema import (
    SUPPORTED_KUBERNETES,
    NodePool,
    Platform,
    PoolKind,
    Team,
    TrainingJob,
)
from mlstack.stacks.validate import load_platform
from mlstack.workloads import contract
from mlstack.workloads.deploy.jobset import (
    COMPLETION_INDEX_ANNOTATION,
    ENTRY_MODULE,
    REPLICATED_JOB,
    container_args,
    coordinator_address,
    jobset_manifest,
)
from mlstack.workloads.deploy.pods import RUN_AS_USER, S3_ENDPOINT_ENV, Placement, image_ref
from mlstack.workloads.deploy.settings import JobSettings, job_settings
from mlstack.workloads.train.configs import CONFIGS
from tests.workloads.deploy.placements import GCS, LAB_S3

#: The lab's language team: 8 A100s, 64 CPUs, 512 GiB.
JOB = {"name": "pretrain", "team": "language", "pool": "a100"}


def _platform(lab_config: dict[str, Any], **job: Any) -> Platform:
    config = copy.deepcopy(lab_config)
    config["workloads"] = {"training_jobs": [{**JOB, **job}]}
    return load_platform(config)


def _built(
    lab_config: dict[str, Any], placement: Placement = LAB_S3, **job: Any
) -> tuple[JobSettings, dict[str, Any]]:
    platform = _platform(lab_config, **job)
    config = platform.workloads.training_jobs[0]
    settings = job_settings(config, platform.pool(config.pool))
    team = next(t for t in platform.teams if t.name == config.team)
    return settings, jobset_manifest(settings, team, placement)


def _workers(manifest: dict[str, Any]) -> dict[str, Any]:
    (rj,) = manifest["spec"]["replicatedJobs"]
    assert rj["name"] == REPLICATED_JOB
    return rj


def _pod(manifest: dict[str, Any]) -> dict[str, Any]:
    return _workers(manifest)["template"]["spec"]["template"]["spec"]


def _container(manifest: dict[str, Any]) -> dict[str, Any]:
    (container,) = _pod(manifest)["containers"]
    return container


def _env(manifest: dict[str, Any]) -> dict[str, Any]:
    """name -> value, or the valueFrom source."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in _container(manifest)["env"]}


def _as_seen_by(manifest: dict[str, Any], index: int) -> dict[str, str]:
    """The environment of the pod with completion index `index`: the downward API resolved,
    Secrets left out."""
    env = {}
    for e in _container(manifest)["env"]:
        source = e.get("valueFrom", {})
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            assert path == f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"
            env[e["name"]] = str(index)
        elif "value" in e:
            env[e["name"]] = e["value"]
    return env


# --- the environment contract -----------------------------------------------------------------


def test_every_process_reads_a_valid_contract_with_its_own_id(lab_config: dict[str, Any]) -> None:
    _, manifest = _built(lab_config, num_hosts=2, gpus_per_host=4, model="small")
    for index in range(2):
        env = contract.read_environment(_as_seen_by(manifest, index))
        assert env.num_processes == 2
        assert env.process_id == index
        assert env.coordinator_address == "pretrain-workers-0-0.pretrain:8476"
        assert env.data_url == "s3://lab-ml-datasets/pystdlib"
        assert env.checkpoint_url == "s3://lab-ml-checkpoints/language/pretrain"
        assert env.model_url == "s3://lab-ml-models/language/pretrain"


def test_the_coordinator_is_process_0s_stable_dns_name(lab_config: dict[str, Any]) -> None:
    """JobSet names pod i of job j of a replicated job `<jobset>-<rj>-<j>-<i>` and publishes it
    under `<subdomain>`: process 0 is the first pod of the only Job."""
    _, manifest = _built(lab_config, num_hosts=2, gpus_per_host=4, model="small")
    name = manifest["metadata"]["name"]
    network = manifest["spec"]["network"]
    assert network == {
        "enableDNSHostnames": True,
        "subdomain": name,
        "publishNotReadyAddresses": True,
    }
    host, port = coordinator_address(name).rsplit(":", 1)
    assert host == f"{name}-{REPLICATED_JOB}-0-0.{network['subdomain']}"
    assert int(port) == contract.COORDINATOR_PORT
    assert _container(manifest)["ports"] == [
        {"name": "coordinator", "containerPort": contract.COORDINATOR_PORT}
    ]


def test_process_ids_are_completion_indexes_of_one_indexed_job(lab_config: dict[str, Any]) -> None:
    _, manifest = _built(lab_config, num_hosts=2, gpus_per_host=4, model="small")
    rj = _workers(manifest)
    assert rj["replicas"] == 1
    job = rj["template"]["spec"]
    assert job["completionMode"] == "Indexed"
    assert job["completions"] == job["parallelism"] == 2
    assert _env(manifest)[contract.NUM_PROCESSES] == "2"


def test_urls_follow_the_team_prefix_and_the_dataset(lab_config: dict[str, Any]) -> None:
    lab_config["teams"][1]["storage_prefix"] = "research/language"
    _, manifest = _built(lab_config, dataset="corpora/web-v2")
    env = _env(manifest)
    assert env[contract.DATA_URL] == "s3://lab-ml-datasets/corpora/web-v2"
    assert env[contract.CHECKPOINT_URL] == "s3://lab-ml-checkpoints/research/language/pretrain"
    assert env[contract.MODEL_URL] == "s3://lab-ml-models/research/language/pretrain"


def test_an_s3_compatible_store_gets_its_endpoint_and_keys_from_the_team_secret(
    lab_config: dict[str, Any],
) -> None:
    env = _env(_built(lab_config)[1])
    assert env[S3_ENDPOINT_ENV] == "https://minio.lab.internal:9000"
    assert env["AWS_REGION"] == "us-east-1"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key] == {"secretKeyRef": {"name": OBJECT_STORE_SECRET, "key": key}}


def test_a_cloud_store_needs_no_keys_the_service_account_has_the_identity(
    lab_config: dict[str, Any],
) -> None:
    settings, manifest = _built(lab_config, placement=GCS)
    env = _env(manifest)
    assert env[contract.CHECKPOINT_URL] == "gs://c/language/pretrain"
    assert not {S3_ENDPOINT_ENV, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env)
    assert not any("secretKeyRef" in str(v) for v in env.values())
    assert _pod(manifest)["serviceAccountName"] == SERVICE_ACCOUNT_NAME
    assert settings.job.team == manifest["metadata"]["namespace"]


def test_placement_of_a_backend_store_names_the_credentials_secret_only_with_keys() -> None:
    registry = ImageRegistry(url="harbor.lab.internal/ml")
    buckets = {"datasets": "d", "checkpoints": "c", "models": "m"}
    keyed = ObjectStore(
        scheme="s3",
        buckets=buckets,
        endpoint="https://minio:9000",
        region="eu-west-1",
        credentials=StaticCredentials("id", "key"),
    )
    placement = Placement.of(keyed, registry)
    assert placement.credentials_secret == OBJECT_STORE_SECRET
    assert (placement.s3_endpoint, placement.region) == ("https://minio:9000", "eu-west-1")
    assert set(placement.buckets) == set(buckets)
    by_identity = Placement.of(ObjectStore(scheme="gs", buckets=buckets), registry)
    assert by_identity.credentials_secret is None
    assert by_identity.s3_endpoint is None


# --- the command ------------------------------------------------------------------------------


def test_the_command_runs_the_entry_point_with_the_run_settings(lab_config: dict[str, Any]) -> None:
    _, manifest = _built(lab_config, checkpoint_every_steps=100, keep_checkpoints=5)
    container = _container(manifest)
    assert container["command"] == ["python", "-m", ENTRY_MODULE]
    steps = CONFIGS["tiny"].total_steps
    assert container["args"] == [
        *("--config", "tiny", "--steps", str(steps), "--checkpoint-every", "100"),
        *("--keep-checkpoints", "5", "--export-every", "0"),
    ]


def test_optional_flags_appear_only_when_set(lab_config: dict[str, Any]) -> None:
    settings, _ = _built(
        lab_config,
        num_hosts=2,
        gpus_per_host=4,
        model="small",
        steps=10,
        global_batch_size=128,
        fsdp=4,
        dtype="float32",
        export_every_steps=5,
    )
    args = container_args(settings)
    flags = dict(zip(args[::2], args[1::2], strict=True))
    assert flags == {
        "--config": "small",
        "--steps": "10",
        "--checkpoint-every": "500",
        "--keep-checkpoints": "3",
        "--export-every": "5",
        "--global-batch-size": "128",
        "--fsdp": "4",
        "--dtype": "float32",
    }


def test_the_image_is_the_train_repository_of_the_stack_registry(
    lab_config: dict[str, Any],
) -> None:
    _, manifest = _built(lab_config, image="1.4.2")
    assert _container(manifest)["image"] == "harbor.lab.internal/ml/train:1.4.2"
    digest = "sha256:" + "ab" * 32
    expected = f"harbor.lab.internal/ml/train@{digest}"
    assert image_ref("harbor.lab.internal/ml/", TRAIN_REPOSITORY, digest) == expected
    _, default = _built(lab_config)
    assert _container(default)["image"].endswith(f":{TrainingJob.model_fields['image'].default}")


# --- placement, resources, queueing -----------------------------------------------------------


def test_gpu_pods_request_a_whole_node_by_default(lab_config: dict[str, Any]) -> None:
    _, manifest = _built(lab_config)
    resources = _container(manifest)["resources"]
    assert resources["requests"][GPU_RESOURCE] == resources["limits"][GPU_RESOURCE] == "8"
    assert resources["requests"] == resources["limits"], "Guaranteed QoS"
    assert resources["requests"]["cpu"] == "4"
    assert resources["requests"]["memory"] == "16Gi"


def test_gpus_per_host_and_fractional_cpu_memory(lab_config: dict[str, Any]) -> None:
    _, manifest = _built(lab_config, gpus_per_host=2, cpu=2.5, memory_gib=7.5)
    requests = _container(manifest)["resources"]["requests"]
    assert requests == {"cpu": "2500m", "memory": "7680Mi", GPU_RESOURCE: "2"}


def test_gpu_pods_select_their_pool_and_tolerate_its_taint(lab_config: dict[str, Any]) -> None:
    _, manifest = _built(lab_config)
    pod = _pod(manifest)
    assert pod["nodeSelector"] == {POOL_LABEL: "a100"}
    assert pod["tolerations"] == [
        {"key": GPU_TAINT_KEY, "operator": "Equal", "value": "present", "effect": "NoSchedule"}
    ]
    mounts = {m["name"]: m["mountPath"] for m in _container(manifest)["volumeMounts"]}
    assert mounts == {"scratch": "/tmp", "dshm": "/dev/shm"}
    volumes = {v["name"]: v["emptyDir"] for v in pod["volumes"]}
    assert volumes == {"scratch": {}, "dshm": {"medium": "Memory"}}


def test_a_pools_own_taints_are_tolerated_exactly(lab_config: dict[str, Any]) -> None:
    lab_config["node_pools"][1]["taints"] = [
        {"key": "example.com/reserved", "value": "", "effect": "NoExecute"},
        {"key": GPU_TAINT_KEY, "value": "a100"},
    ]
    _, manifest = _built(lab_config)
    assert _pod(manifest)["tolerations"] == [
        {"key": "example.com/reserved", "operator": "Exists", "effect": "NoExecute"},
        {"key": GPU_TAINT_KEY, "operator": "Equal", "value": "a100", "effect": "NoSchedule"},
    ]


def test_cpu_pool_pods_request_no_gpus_and_tolerate_nothing(lab_config: dict[str, Any]) -> None:
    _, manifest = _built(lab_config, pool="cpu", num_hosts=2)
    pod = _pod(manifest)
    assert GPU_RESOURCE not in _container(manifest)["resources"]["limits"]
    assert "tolerations" not in pod
    assert pod["nodeSelector"] == {POOL_LABEL: "cpu"}
    assert [v["name"] for v in pod["volumes"]] == ["scratch"]


def test_the_jobset_is_queued_by_kueue_at_its_priority(lab_config: dict[str, Any]) -> None:
    _, manifest = _built(lab_config, priority="mlstack-best-effort")
    metadata = manifest["metadata"]
    assert metadata["namespace"] == "language"
    assert metadata["labels"][QUEUE_LABEL] == LOCAL_QUEUE_NAME
    assert metadata["labels"][PRIORITY_LABEL] == "mlstack-best-effort"
    assert _pod(manifest)["priorityClassName"] == "mlstack-best-effort"
    # It checkpoints and resumes, so it may run on spot capacity.
    assert metadata["annotations"] == {CHECKPOINTS_ANNOTATION: "true"}


def test_a_failed_pod_restarts_the_whole_job_up_to_max_restarts(
    lab_config: dict[str, Any],
) -> None:
    _, manifest = _built(lab_config, max_restarts=7, termination_grace_period_s=600)
    assert manifest["spec"]["failurePolicy"] == {"maxRestarts": 7}
    assert _workers(manifest)["template"]["spec"]["backoffLimit"] == 0
    pod = _pod(manifest)
    assert pod["restartPolicy"] == "Never"
    assert pod["terminationGracePeriodSeconds"] == 600


def test_pods_meet_the_restricted_pod_security_level(lab_config: dict[str, Any]) -> None:
    _, manifest = _built(lab_config)
    pod = _pod(manifest)
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert _container(manifest)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert "hostNetwork" not in pod
    assert all("hostPath" not in v for v in pod["volumes"])


# --- strict validity --------------------------------------------------------------------------

VARIANTS: dict[str, tuple[Placement, dict[str, Any]]] = {
    "default gpu job": (LAB_S3, {}),
    "multi-host sharded": (
        LAB_S3,
        {
            "num_hosts": 2,
            "gpus_per_host": 4,
            "model": "small",
            "global_batch_size": 256,
            "fsdp": 8,
            "dtype": "bfloat16",
        },
    ),
    "cpu pool on gcs": (GCS, {"pool": "cpu", "num_hosts": 4, "cpu": 0.5, "memory_gib": 1.5}),
    "digest image, custom priority": (
        GCS,
        {"image": "sha256:" + "0f" * 32, "priority": "mlstack-best-effort", "max_restarts": 0},
    ),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_is_strictly_valid(lab_config: dict[str, Any], variant: str) -> None:
    placement, job = VARIANTS[variant]
    _, manifest = _built(lab_config, placement=placement, **job)
    validate_jobset(manifest, "1.33.0")


@pytest.mark.parametrize("version", SUPPORTED_KUBERNETES)
def test_the_pod_template_is_valid_at_every_supported_version(
    lab_config: dict[str, Any], version: str
) -> None:
    lab_config["cluster"]["kubernetes_version"] = version
    _, manifest = _built(lab_config, num_hosts=2, gpus_per_host=4, model="small")
    validate_jobset(manifest, f"{version}.0")


def test_the_longest_name_and_the_most_hosts_fit_the_webhooks_name_limits() -> None:
    """A 40-character job name (the schema's most) with 1024 hosts: the last pod's name, with
    the Job controller's random suffix, still fits a DNS label."""
    pool = NodePool(name="cpu", kind=PoolKind.CPU, max_nodes=1000)
    job = TrainingJob(name="a" * 40, team="t", pool="cpu", num_hosts=1024)
    manifest = jobset_manifest(job_settings(job, pool), Team(name="t"), GCS)
    validate_jobset(manifest)


# The validator itself must refuse what the API server or JobSet's webhook would refuse.


def test_the_validator_refuses_an_unknown_jobset_field(lab_config: dict[str, Any]) -> None:
    _, manifest = _built(lab_config)
    manifest["spec"]["network"]["enableDnsHostnames"] = True
    manifest["spec"]["replicatedJobs"][0]["replica"] = 2
    problems = jobset_problems(manifest)
    assert any("enableDnsHostnames" in p for p in problems), problems
    assert any("'replica' was unexpected" in p for p in problems), problems
    with pytest.raises(JobSetValidationError):
        validate_jobset(manifest)


def test_the_validator_refuses_a_bad_pod_template(lab_config: dict[str, Any]) -> None:
    _, manifest = _built(lab_config)
    _container(manifest)["resource"] = {}
    (problem,) = jobset_problems(manifest)
    assert problem.startswith("spec.replicatedJobs[0].template.spec.template.spec.containers[0]")
    assert "'resource' was unexpected" in problem


def test_the_validator_refuses_names_the_webhook_refuses() -> None:
    pool = NodePool(name="cpu", kind=PoolKind.CPU, max_nodes=1000)
    job = TrainingJob(name="a" * 40, team="t", pool="cpu", num_hosts=1024)
    manifest = jobset_manifest(job_settings(job, pool), Team(name="t"), GCS)
    manifest["metadata"]["name"] = manifest["spec"]["network"]["subdomain"] = "a" * 46
    problems = jobset_problems(manifest)
    assert problems == [
        f"spec.replicatedJobs[0]: pod name '{'a' * 46}-workers-0-1023-abcde' is longer than 63 "
        "characters"
    ]
    # One host: 45 characters leave room for '-workers-0-0-abcde'.
    manifest["spec"]["replicatedJobs"][0]["template"]["spec"]["completions"] = 1
    manifest["metadata"]["name"] = "a" * 45
    manifest["spec"]["network"]["subdomain"] = "9lives"
    assert jobset_problems(manifest) == ["spec.network.subdomain '9lives' is not a DNS-1035 label"]
