"""Pod rules (policies/rules/pods.py) on every workload kind, called directly."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from rule_args import fails, messages, resource_args

from mlstack.policies.rules import pods
from mlstack.stacks.names import GPU_TAINT_KEY, QUEUE_LABEL

IMAGE = "harbor.lab.internal/ml/train:1.4.2"
GPU_TOLERATION = {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}
QUEUE = {QUEUE_LABEL: "default"}

TYPES = {
    "Pod": "kubernetes:core/v1:Pod",
    "Deployment": "kubernetes:apps/v1:Deployment",
    "StatefulSet": "kubernetes:apps/v1:StatefulSet",
    "DaemonSet": "kubernetes:apps/v1:DaemonSet",
    "Job": "kubernetes:batch/v1:Job",
    "CronJob": "kubernetes:batch/v1:CronJob",
    "JobSet": "kubernetes:jobset.x-k8s.io/v1alpha2:JobSet",
}


def container(name: str = "train", image: str = IMAGE, gpus: int = 0, **fields: Any) -> dict:
    """A container every pod rule accepts (unless `fields` says otherwise)."""
    limits: dict[str, Any] = {"memory": "8Gi"}
    if gpus:
        limits[GPU_TAINT_KEY] = gpus
    c: dict[str, Any] = {
        "name": name,
        "image": image,
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True},
        "resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": limits},
    }
    c.update(fields)
    return c


def pod_spec(*containers: dict, **fields: Any) -> dict:
    spec: dict[str, Any] = {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
        "containers": list(containers) or [container()],
    }
    spec.update(fields)
    return spec


def gpu_spec(**fields: Any) -> dict:
    return pod_spec(container(gpus=8), tolerations=[GPU_TOLERATION], **fields)


def manifest(
    kind: str,
    spec: dict,
    *,
    labels: dict | None = None,
    pod_labels: dict | None = None,
    job_labels: dict | None = None,
) -> dict:
    """A `kind` object in namespace vision named train, whose pods run `spec`."""
    metadata = {"name": "train", "namespace": "vision", "labels": dict(labels or {})}
    template = {"metadata": {"labels": dict(pod_labels or {})}, "spec": copy.deepcopy(spec)}
    job = {"metadata": {"labels": dict(job_labels or {})}, "spec": {"template": template}}
    if kind == "Pod":
        metadata["labels"].update(pod_labels or {})
        body: dict[str, Any] = {"spec": template["spec"]}
    elif kind == "CronJob":
        body = {"spec": {"schedule": "0 3 * * *", "jobTemplate": job}}
    elif kind == "JobSet":
        body = {"spec": {"replicatedJobs": [{"name": "workers", "replicas": 2, "template": job}]}}
    else:
        body = {"spec": {"selector": {"matchLabels": {"app": "train"}}, "template": template}}
    return {"apiVersion": "v1", "kind": kind, "metadata": metadata, **body}


def check(rule: Any, kind: str, spec: dict, config: dict | None = None, **extra: Any) -> list[str]:
    return messages(rule, resource_args(TYPES[kind], manifest(kind, spec, **extra), config))


@pytest.mark.parametrize("kind", sorted(TYPES))
@pytest.mark.parametrize("policy", pods.POLICIES, ids=lambda p: p.name)
def test_a_well_configured_gpu_workload_passes(kind: str, policy: Any) -> None:
    where = "job_labels" if kind == "CronJob" else "labels"
    assert check(policy.validate, kind, gpu_spec(), **{where: QUEUE}) == []


@pytest.mark.parametrize("policy", pods.POLICIES, ids=lambda p: p.name)
def test_other_resource_types_are_ignored(policy: Any) -> None:
    bad = manifest("Pod", pod_spec(container(image="x", securityContext={"privileged": True})))
    for resource_type in ("kubernetes:core/v1:ConfigMap", "mlstack:kubernetes:System", "aws:x"):
        assert messages(policy.validate, resource_args(resource_type, bad)) == []


# no-privileged-containers


@fails("no-privileged-containers")
def test_a_privileged_init_container_of_a_cronjob_is_reported() -> None:
    setup = container("setup", securityContext={"privileged": True})
    spec = pod_spec(container(), initContainers=[setup])
    [message] = check(pods.no_privileged_containers, "CronJob", spec)
    assert message.startswith("CronJob vision/train: container 'setup' runs privileged")
    assert "remove securityContext.privileged" in message


def test_privileged_false_is_allowed() -> None:
    spec = pod_spec(container(securityContext={"privileged": False, "runAsNonRoot": True}))
    assert check(pods.no_privileged_containers, "Deployment", spec) == []


# no-privilege-escalation


@fails("no-privilege-escalation")
@pytest.mark.parametrize("context", [{}, {"allowPrivilegeEscalation": True}])
def test_a_jobset_container_that_may_escalate_is_reported(context: dict) -> None:
    spec = pod_spec(container(), container("sidecar", securityContext=context))
    [message] = check(pods.no_privilege_escalation, "JobSet", spec)
    assert message.startswith("JobSet vision/train, replicatedJob workers: container 'sidecar'")
    assert "set securityContext.allowPrivilegeEscalation: false" in message


def test_no_escalation_on_every_container_passes() -> None:
    spec = pod_spec(container(), initContainers=[container("setup")])
    assert check(pods.no_privilege_escalation, "Job", spec) == []


# no-host-namespaces


@fails("no-host-namespaces")
def test_sharing_host_namespaces_is_reported_once_per_pod_naming_each() -> None:
    spec = pod_spec(hostNetwork=True, hostPID=True, hostIPC=False)
    [message] = check(pods.no_host_namespaces, "DaemonSet", spec)
    assert message.startswith("DaemonSet vision/train: the pod shares the node's namespaces")
    assert "(hostNetwork, hostPID)" in message
    assert "reach the pod through a Service" in message


def test_host_namespaces_set_to_false_pass() -> None:
    spec = pod_spec(hostNetwork=False, hostPID=False, hostIPC=False)
    assert check(pods.no_host_namespaces, "Pod", spec) == []


# no-added-capabilities


def _with_caps(*add: str, drop: tuple[str, ...] = ("ALL",)) -> dict:
    c = container()
    c["securityContext"]["capabilities"] = {"add": list(add), "drop": list(drop)}
    return c


@fails("no-added-capabilities")
@pytest.mark.parametrize("kind", ["Deployment", "JobSet", "CronJob"])
def test_added_capabilities_beyond_restricted_are_reported(kind: str) -> None:
    init = _with_caps("SYS_ADMIN")
    init["name"] = "setup"
    spec = pod_spec(
        _with_caps("NET_ADMIN", "NET_BIND_SERVICE", "CAP_SYS_PTRACE"), initContainers=[init]
    )
    found = check(pods.no_added_capabilities, kind, spec)
    assert len(found) == 2
    assert "container 'setup' adds Linux capabilities SYS_ADMIN" in found[0]
    assert "container 'train' adds Linux capabilities CAP_SYS_PTRACE, NET_ADMIN," in found[1]
    assert "NET_BIND_SERVICE only" in found[1]


@pytest.mark.parametrize("add", [(), ("NET_BIND_SERVICE",), ("CAP_NET_BIND_SERVICE",)])
def test_restricted_capabilities_pass(add: tuple[str, ...]) -> None:
    assert check(pods.no_added_capabilities, "Pod", pod_spec(_with_caps(*add))) == []


# no-host-ports


@fails("no-host-ports")
def test_a_host_port_is_reported() -> None:
    c = container(ports=[{"containerPort": 8080}, {"containerPort": 9090, "hostPort": 9090}])
    [message] = check(pods.no_host_ports, "DaemonSet", pod_spec(c))
    assert message.startswith("DaemonSet vision/train: container 'train' binds hostPort 9090")
    assert "reach the pod through a Service" in message


def test_container_ports_without_host_ports_pass() -> None:
    c = container(ports=[{"containerPort": 8080, "name": "http"}])
    assert check(pods.no_host_ports, "Deployment", pod_spec(c)) == []


# no-host-path-volumes


@fails("no-host-path-volumes")
def test_a_host_path_volume_is_reported_with_its_path() -> None:
    volumes = [
        {"name": "scratch", "emptyDir": {}},
        {"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}},
    ]
    [message] = check(pods.no_host_path_volumes, "StatefulSet", pod_spec(volumes=volumes))
    assert "StatefulSet vision/train: volume 'docker' mounts a host path" in message
    assert "(/var/run/docker.sock)" in message
    assert "PersistentVolumeClaim" in message


def test_claims_and_empty_dirs_pass() -> None:
    volumes = [
        {"name": "data", "persistentVolumeClaim": {"claimName": "datasets"}},
        {"name": "shm", "emptyDir": {"medium": "Memory"}},
    ]
    assert check(pods.no_host_path_volumes, "Job", pod_spec(volumes=volumes)) == []


# run-as-non-root


@fails("run-as-non-root")
def test_a_container_running_as_uid_0_overrides_the_pods_non_root() -> None:
    root = container("root", securityContext={"allowPrivilegeEscalation": False, "runAsUser": 0})
    [message] = check(pods.run_as_non_root, "Job", pod_spec(container(), root))
    assert message.startswith("Job vision/train: container 'root' may run as root")
    assert "runAsNonRoot: true" in message
    assert "non-zero runAsUser" in message


@fails("run-as-non-root")
def test_a_container_turning_run_as_non_root_off_is_reported() -> None:
    off = container("off", securityContext={"runAsNonRoot": False})
    assert len(check(pods.run_as_non_root, "Deployment", pod_spec(off))) == 1


@fails("run-as-non-root")
def test_a_pod_that_says_nothing_about_its_user_is_reported_per_container() -> None:
    bare = {"name": "bare", "image": IMAGE}
    spec = {"containers": [bare], "initContainers": [{"name": "init", "image": IMAGE}]}
    init, bare = check(pods.run_as_non_root, "Pod", spec)
    assert "Pod vision/train: container 'init' may run as root" in init
    assert "Pod vision/train: container 'bare' may run as root" in bare


@fails("run-as-non-root")
def test_pod_level_uid_0_is_root_even_with_run_as_non_root() -> None:
    spec = pod_spec(securityContext={"runAsNonRoot": True, "runAsUser": 0})
    assert len(check(pods.run_as_non_root, "Job", spec)) == 1


def test_pod_level_non_root_covers_containers_that_set_a_non_zero_user() -> None:
    c = container(securityContext={"allowPrivilegeEscalation": False, "runAsUser": 1001})
    spec = pod_spec(c, securityContext={"runAsNonRoot": True, "runAsUser": 0})
    assert check(pods.run_as_non_root, "Job", spec) == []


# containers-set-requests-and-limits


@fails("containers-set-requests-and-limits")
def test_missing_memory_request_and_limit_are_named() -> None:
    c = container(resources={"requests": {"cpu": "1"}})
    [message] = check(pods.containers_set_requests_and_limits, "Deployment", pod_spec(c))
    assert message.startswith(
        "Deployment vision/train: container 'train' sets no requests.memory, limits.memory;"
    )
    assert "quota" in message


@fails("containers-set-requests-and-limits")
def test_an_init_container_without_resources_is_reported() -> None:
    spec = pod_spec(container(), initContainers=[{"name": "fetch", "image": IMAGE}])
    [message] = check(pods.containers_set_requests_and_limits, "CronJob", spec)
    assert "container 'fetch' sets no requests.cpu, requests.memory, limits.memory" in message


def test_a_cpu_limit_is_not_required_by_default() -> None:
    assert check(pods.containers_set_requests_and_limits, "Job", pod_spec()) == []


@fails("containers-set-requests-and-limits")
def test_require_cpu_limit_config_adds_the_cpu_limit() -> None:
    config = {"requireCpuLimit": True}
    [message] = check(pods.containers_set_requests_and_limits, "Job", pod_spec(), config)
    assert "container 'train' sets no limits.cpu" in message
    both = {"cpu": 1, "memory": "1Gi"}
    limited = container(resources={"requests": both, "limits": both})
    assert check(pods.containers_set_requests_and_limits, "Job", pod_spec(limited), config) == []


# no-latest-image-tag


@pytest.mark.parametrize(
    ("image", "tag"),
    [
        ("harbor.lab.internal/ml/train:1.4.2", "1.4.2"),
        ("python", "latest"),
        ("python:latest", "latest"),
        ("harbor.lab.internal:5000/train", "latest"),
        ("harbor.lab.internal:5000/ml/train:2.0", "2.0"),
        ("python@sha256:" + "a" * 64, None),
        ("python:3.11@sha256:" + "b" * 64, None),
    ],
)
def test_image_tag(image: str, tag: str | None) -> None:
    assert pods.image_tag(image) == tag


@fails("no-latest-image-tag")
@pytest.mark.parametrize(
    "image", ["python", "python:latest", "harbor.lab.internal:5000/train", "ghcr.io/x/y:latest"]
)
def test_an_image_that_resolves_to_latest_is_reported(image: str) -> None:
    [message] = check(pods.no_latest_image_tag, "Job", pod_spec(container(image=image)))
    assert message.startswith(f"Job vision/train: container 'train' uses {image!r}")
    assert "pin a version tag or a digest" in message


@pytest.mark.parametrize(
    "image", [IMAGE, "harbor.lab.internal:5000/train:2.0", "python@sha256:" + "c" * 64]
)
def test_tagged_and_digest_pinned_images_pass(image: str) -> None:
    assert check(pods.no_latest_image_tag, "JobSet", pod_spec(container(image=image))) == []


# gpu-pods-tolerate-gpu-taint


@pytest.mark.parametrize(
    ("toleration", "tolerates"),
    [
        ({"operator": "Exists"}, True),
        ({"key": "", "operator": "Exists", "effect": ""}, True),
        ({"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}, True),
        ({"key": GPU_TAINT_KEY, "value": "present", "effect": "NoSchedule"}, True),
        ({"key": GPU_TAINT_KEY, "operator": "Equal", "value": "present"}, True),
        ({"key": GPU_TAINT_KEY, "operator": "Equal", "value": "true"}, False),
        ({"key": "dedicated", "operator": "Exists"}, False),
        ({"operator": "Exists", "effect": "NoExecute"}, False),
        ({"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "PreferNoSchedule"}, False),
    ],
)
def test_tolerates_gpu_taint(toleration: dict, tolerates: bool) -> None:
    spec = resource_args(TYPES["Pod"], manifest("Pod", pod_spec(tolerations=[toleration]))).props
    assert pods.tolerates_gpu_taint(spec["spec"]) is tolerates


@fails("gpu-pods-tolerate-gpu-taint")
def test_a_gpu_job_without_the_toleration_is_reported() -> None:
    spec = pod_spec(container(gpus=1), tolerations=[{"key": "dedicated", "operator": "Exists"}])
    [message] = check(pods.gpu_pods_tolerate_gpu_taint, "Job", spec, labels=QUEUE)
    assert message.startswith("Job vision/train: requests GPUs but does not tolerate the GPU")
    assert f"add the toleration {{key: {GPU_TAINT_KEY}, operator: Exists" in message


@fails("gpu-pods-tolerate-gpu-taint")
def test_a_gpu_request_given_as_a_string_in_an_init_container_counts() -> None:
    init = container("warmup", resources={"requests": {GPU_TAINT_KEY: "1"}})
    spec = pod_spec(container(), initContainers=[init])
    assert len(check(pods.gpu_pods_tolerate_gpu_taint, "Pod", spec)) == 1


def test_exists_with_an_empty_key_tolerates_the_gpu_taint() -> None:
    spec = pod_spec(container(gpus=2), tolerations=[{"operator": "Exists"}])
    assert check(pods.gpu_pods_tolerate_gpu_taint, "Job", spec) == []


def test_cpu_only_pods_need_no_toleration() -> None:
    zero = container(resources={"requests": {"cpu": "1", GPU_TAINT_KEY: 0}})
    assert check(pods.gpu_pods_tolerate_gpu_taint, "Deployment", pod_spec(zero)) == []


# gpu-pods-use-a-queue


@fails("gpu-pods-use-a-queue")
@pytest.mark.parametrize("kind", ["Job", "JobSet", "Pod", "Deployment"])
def test_a_gpu_workload_without_a_queue_label_is_reported(kind: str) -> None:
    [message] = check(pods.gpu_pods_use_a_queue, kind, gpu_spec(), labels={"app": "train"})
    assert message.startswith(f"{kind} vision/train")
    assert "requests GPUs outside Kueue" in message
    assert message.endswith(
        f"add the label {QUEUE_LABEL}: default (the team's LocalQueue) to metadata.labels"
    )


@fails("gpu-pods-use-a-queue")
def test_a_queue_label_only_on_the_pod_template_does_not_count() -> None:
    [message] = check(pods.gpu_pods_use_a_queue, "Job", gpu_spec(), pod_labels=QUEUE)
    assert message.endswith("to metadata.labels")


@fails("gpu-pods-use-a-queue")
def test_a_cronjob_must_carry_the_label_on_its_job_template() -> None:
    [message] = check(pods.gpu_pods_use_a_queue, "CronJob", gpu_spec(), labels=QUEUE)
    assert message.startswith("CronJob vision/train: requests GPUs outside Kueue")
    assert message.endswith("to spec.jobTemplate.metadata.labels")


@fails("gpu-pods-use-a-queue")
def test_a_jobset_is_reported_once_however_many_replicated_jobs_request_gpus() -> None:
    jobset = manifest("JobSet", gpu_spec())
    jobset["spec"]["replicatedJobs"].append({**jobset["spec"]["replicatedJobs"][0], "name": "ps"})
    args = resource_args(TYPES["JobSet"], jobset)
    assert len(messages(pods.gpu_pods_use_a_queue, args)) == 1


@pytest.mark.parametrize("kind", ["Job", "JobSet", "Pod", "Deployment", "StatefulSet"])
def test_a_queue_label_on_the_object_passes(kind: str) -> None:
    assert check(pods.gpu_pods_use_a_queue, kind, gpu_spec(), labels=QUEUE) == []


def test_a_cronjob_queued_through_its_job_template_passes() -> None:
    assert check(pods.gpu_pods_use_a_queue, "CronJob", gpu_spec(), job_labels=QUEUE) == []


def test_cpu_work_needs_no_queue() -> None:
    assert check(pods.gpu_pods_use_a_queue, "Job", pod_spec()) == []
