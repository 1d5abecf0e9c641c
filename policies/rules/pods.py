"""Rules for every workload object's pods: security context, resources, images, GPUs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pulumi_policy import (
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

from mlstack.policies.rules.objects import (
    MANDATORY,
    PodTemplate,
    config_value,
    containers_of,
    get,
    mapping,
    queue_name,
    sequence,
    templates_of,
    workload,
)
from mlstack.stacks.names import GPU_TAINT_KEY, QUEUE_LABEL
from mlstack.stacks.schema import GPU_TAINT


def _name(container: Mapping[str, Any]) -> str:
    return str(container.get("name") or "?")


def no_privileged_containers(args: ResourceValidationArgs, report: ReportViolation) -> None:
    for t, c in containers_of(args):
        if get(c, "securityContext", "privileged") is True:
            report(
                f"{t.where}: container {_name(c)!r} runs privileged; "
                "remove securityContext.privileged (or set it to false)",
                None,
            )


def no_privilege_escalation(args: ResourceValidationArgs, report: ReportViolation) -> None:
    for t, c in containers_of(args):
        if get(c, "securityContext", "allowPrivilegeEscalation") is not False:
            report(
                f"{t.where}: container {_name(c)!r} may escalate privileges; "
                "set securityContext.allowPrivilegeEscalation: false",
                None,
            )


def no_host_namespaces(args: ResourceValidationArgs, report: ReportViolation) -> None:
    for t in templates_of(args):
        shared = [f for f in ("hostNetwork", "hostPID", "hostIPC") if t.spec.get(f) is True]
        if shared:
            report(
                f"{t.where}: the pod shares the node's namespaces ({', '.join(shared)}); "
                "remove them and reach the pod through a Service",
                None,
            )


#: The one capability the Pod Security Standards' restricted profile lets a container add
#: (kubernetes.io/docs/concepts/security/pod-security-standards, "Capabilities (v1.22+)":
#: containers must drop ALL and may add back only NET_BIND_SERVICE).
RESTRICTED_ADDABLE_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})


def no_added_capabilities(args: ResourceValidationArgs, report: ReportViolation) -> None:
    for t, c in containers_of(args):
        added = [str(x) for x in sequence(get(c, "securityContext", "capabilities", "add"))]
        extra = sorted(
            {
                x
                for x in added
                if x.upper().removeprefix("CAP_") not in RESTRICTED_ADDABLE_CAPABILITIES
            }
        )
        if extra:
            report(
                f"{t.where}: container {_name(c)!r} adds Linux capabilities {', '.join(extra)}, "
                "beyond the restricted Pod Security profile (NET_BIND_SERVICE only); remove "
                "them from securityContext.capabilities.add",
                None,
            )


def no_host_ports(args: ResourceValidationArgs, report: ReportViolation) -> None:
    for t, c in containers_of(args):
        ports = [p for p in sequence(c.get("ports")) if get(p, "hostPort")]
        if ports:
            report(
                f"{t.where}: container {_name(c)!r} binds hostPort "
                f"{', '.join(str(get(p, 'hostPort')) for p in ports)} on its node, reachable by "
                "anything that reaches the node and bypassing NetworkPolicies on many network "
                "plugins; remove hostPort and reach the pod through a Service",
                None,
            )


def no_host_path_volumes(args: ResourceValidationArgs, report: ReportViolation) -> None:
    for t in templates_of(args):
        for v in sequence(t.spec.get("volumes")):
            if get(v, "hostPath") is not None:
                report(
                    f"{t.where}: volume {get(v, 'name')!r} mounts a host path "
                    f"({get(v, 'hostPath', 'path')}); use a PersistentVolumeClaim, an emptyDir "
                    "or the object store",
                    None,
                )


def _runs_as_non_root(t: PodTemplate, c: Mapping[str, Any]) -> bool:
    pod = mapping(t.spec.get("securityContext"))
    own = mapping(c.get("securityContext"))
    non_root = own.get("runAsNonRoot", pod.get("runAsNonRoot"))
    user = own.get("runAsUser", pod.get("runAsUser"))
    return non_root is True and user != 0


def run_as_non_root(args: ResourceValidationArgs, report: ReportViolation) -> None:
    for t, c in containers_of(args):
        if not _runs_as_non_root(t, c):
            report(
                f"{t.where}: container {_name(c)!r} may run as root; set "
                "securityContext.runAsNonRoot: true (pod or container) and a non-zero "
                "runAsUser",
                None,
            )


def containers_set_requests_and_limits(
    args: ResourceValidationArgs, report: ReportViolation
) -> None:
    needed = ["requests.cpu", "requests.memory", "limits.memory"]
    if config_value(args, "requireCpuLimit", False):
        needed.append("limits.cpu")
    for t, c in containers_of(args):
        missing = [key for key in needed if get(c, "resources", *key.split(".")) in (None, "")]
        if missing:
            report(
                f"{t.where}: container {_name(c)!r} sets no {', '.join(missing)}; set "
                "resources so the scheduler and the team's quota can account for it",
                None,
            )


def image_tag(image: str) -> str | None:
    """The tag of an image reference; None when it is pinned by digest."""
    if "@" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else "latest"


def no_latest_image_tag(args: ResourceValidationArgs, report: ReportViolation) -> None:
    for t, c in containers_of(args):
        image = c.get("image")
        if isinstance(image, str) and image_tag(image) == "latest":
            report(
                f"{t.where}: container {_name(c)!r} uses {image!r}, which means :latest; "
                "pin a version tag or a digest so every pod runs the same image",
                None,
            )


def tolerates_gpu_taint(spec: Mapping[str, Any]) -> bool:
    for tol in sequence(spec.get("tolerations")):
        key = get(tol, "key")
        effect = get(tol, "effect")
        operator = get(tol, "operator") or "Equal"
        if effect not in (None, "", "NoSchedule"):
            continue
        if operator == "Exists" and key in (None, "", GPU_TAINT_KEY):
            return True
        if operator == "Equal" and key == GPU_TAINT_KEY and get(tol, "value") == GPU_TAINT.value:
            return True
    return False


def gpu_pods_tolerate_gpu_taint(args: ResourceValidationArgs, report: ReportViolation) -> None:
    for t in templates_of(args):
        if t.requests_gpus() and not tolerates_gpu_taint(t.spec):
            report(
                f"{t.where}: requests GPUs but does not tolerate the GPU taint, so it can never "
                f"be scheduled; add the toleration {{key: {GPU_TAINT_KEY}, operator: Exists, "
                "effect: NoSchedule}",
                None,
            )


def gpu_pods_use_a_queue(args: ResourceValidationArgs, report: ReportViolation) -> None:
    found = workload(args)
    if found is None:
        return
    kind, templates = found
    if queue_name(kind, args.props) is not None:
        return
    where = "spec.jobTemplate.metadata.labels" if kind == "CronJob" else "metadata.labels"
    for t in templates:
        if t.requests_gpus():
            report(
                f"{t.where}: requests GPUs outside Kueue, bypassing the team's GPU quota; add "
                f"the label {QUEUE_LABEL}: default (the team's LocalQueue) to {where}",
                None,
            )
            return


POLICIES = [
    ResourceValidationPolicy(
        name="no-privileged-containers",
        description="Containers do not run privileged.",
        validate=no_privileged_containers,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="no-privilege-escalation",
        description="Containers set allowPrivilegeEscalation to false.",
        validate=no_privilege_escalation,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="no-added-capabilities",
        description="Containers add no Linux capability beyond NET_BIND_SERVICE.",
        validate=no_added_capabilities,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="no-host-ports",
        description="Containers bind no hostPort.",
        validate=no_host_ports,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="no-host-namespaces",
        description="Pods do not share the node's network, PID or IPC namespace.",
        validate=no_host_namespaces,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="no-host-path-volumes",
        description="Pods do not mount directories of the node.",
        validate=no_host_path_volumes,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="run-as-non-root",
        description="Containers run as a non-root user.",
        validate=run_as_non_root,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="containers-set-requests-and-limits",
        description="Containers set CPU and memory requests and a memory limit.",
        validate=containers_set_requests_and_limits,
        enforcement_level=MANDATORY,
        config_schema=PolicyConfigSchema(
            properties={
                "requireCpuLimit": {
                    "type": "boolean",
                    "default": False,
                    "description": "Also require a CPU limit (off: CPU limits throttle "
                    "input pipelines for little gain).",
                }
            }
        ),
    ),
    ResourceValidationPolicy(
        name="no-latest-image-tag",
        description="Images are pinned by a version tag or digest, never :latest.",
        validate=no_latest_image_tag,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="gpu-pods-tolerate-gpu-taint",
        description="Pods that request GPUs tolerate the GPU nodes' taint.",
        validate=gpu_pods_tolerate_gpu_taint,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="gpu-pods-use-a-queue",
        description="Workloads that request GPUs carry a Kueue queue label.",
        validate=gpu_pods_use_a_queue,
        enforcement_level=MANDATORY,
    ),
]
