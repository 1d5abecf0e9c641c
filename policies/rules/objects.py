"""Reading Kubernetes objects as the policy engine hands them over.

Props arrive as read-only Mappings and Sequences (the analyzer wraps them to detect unknown
values) with numbers as floats, so every accessor here takes any Mapping or Sequence, never
assumes `dict` or `int`, and treats a missing or odd-typed field as absent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

from mlstack.stacks.names import GPU_RESOURCE, QUEUE_LABEL

MANDATORY = EnforcementLevel.MANDATORY

_EMPTY: Mapping[str, Any] = {}


def mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else _EMPTY


def sequence(value: Any) -> Sequence[Any]:
    return value if isinstance(value, Sequence) and not isinstance(value, str | bytes) else ()


def get(value: Any, *path: str | int) -> Any:
    """The value at `path` inside nested Mappings/Sequences, or None."""
    for key in path:
        if isinstance(key, int):
            items = sequence(value)
            value = items[key] if -len(items) <= key < len(items) else None
        else:
            value = mapping(value).get(key)
        if value is None:
            return None
    return value


class Unknown:
    """A value the engine does not know yet (during a preview: an output of a resource not yet
    created, such as an ARN). Falsy, so `known(...) or default` reads it as absent."""

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = Unknown()


def known(value: Any, *path: str | int) -> Any:
    """`get(value, *path)`, or UNKNOWN where the analyzer's proxy reports an unknown value on the
    way, instead of raising: for rules that can still judge the rest of a resource (or, in a
    stack rule, every other resource) without it. UNKNOWN in, UNKNOWN out."""
    if isinstance(value, Unknown):
        return UNKNOWN
    try:
        return get(value, *path)
    except UnknownValueError:
        return UNKNOWN


def known_items(value: Any) -> list[Any]:
    """The items of a Sequence, each unknown one as UNKNOWN; [] for anything else."""
    items = sequence(value)
    found: list[Any] = []
    for i in range(len(items)):
        try:
            found.append(items[i])
        except UnknownValueError:
            found.append(UNKNOWN)
    return found


def kind_of(resource_type: str) -> str | None:
    """The Kubernetes kind of a `kubernetes:<group>/<version>:<Kind>` type token, else None."""
    if not resource_type.startswith("kubernetes:") or resource_type.count(":") != 2:
        return None
    return resource_type.rsplit(":", 1)[1]


def labels_of(props: Mapping[str, Any]) -> Mapping[str, Any]:
    return mapping(get(props, "metadata", "labels"))


def annotations_of(props: Mapping[str, Any]) -> Mapping[str, Any]:
    return mapping(get(props, "metadata", "annotations"))


def describe(kind: str, props: Mapping[str, Any]) -> str:
    """'Job vision/train' or 'ClusterRole reader'."""
    name = get(props, "metadata", "name") or "(unnamed)"
    namespace = get(props, "metadata", "namespace")
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def number(value: Any) -> float:
    """A count such as a GPU request: numbers and numeric strings; anything else is 0."""
    if isinstance(value, bool):
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return 0.0
    return 0.0


@dataclass(frozen=True)
class PodTemplate:
    """One pod spec inside a workload object."""

    where: str  # e.g. "Job vision/train" or "JobSet vision/train, replicatedJob workers"
    spec: Mapping[str, Any]

    def containers(self) -> Iterator[Mapping[str, Any]]:
        for field in ("initContainers", "containers"):
            for c in sequence(self.spec.get(field)):
                yield mapping(c)

    def resource_names(self) -> set[str]:
        """Resources the pod asks for: cpu and memory always (a LimitRange defaults them, and
        Kueue counts them), plus whatever its containers request or limit."""
        names = {"cpu", "memory"}
        for c in self.containers():
            for part in ("limits", "requests"):
                names.update(str(k) for k in mapping(get(c, "resources", part)))
        return names

    def requests_gpus(self) -> bool:
        return any(
            number(get(c, "resources", part, GPU_RESOURCE)) > 0
            for c in self.containers()
            for part in ("limits", "requests")
        )


#: Where each workload kind keeps its pod template(s).
_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
#: Kinds that run to completion: what Kueue queues and what spot capacity may preempt.
BATCH_KINDS = frozenset({"Pod", "Job", "CronJob", "JobSet"})
WORKLOAD_KINDS = frozenset({*_TEMPLATE_PATHS, "Pod", "JobSet"})


def pod_templates(kind: str, props: Mapping[str, Any]) -> list[PodTemplate]:
    """Every pod template of a workload object; [] for other kinds."""
    where = describe(kind, props)
    if kind == "Pod":
        return [PodTemplate(where, mapping(props.get("spec")))]
    if kind == "JobSet":
        templates = []
        for rj in sequence(get(props, "spec", "replicatedJobs")):
            pod = get(rj, "template", "spec", "template")
            templates.append(
                PodTemplate(
                    f"{where}, replicatedJob {get(rj, 'name') or '?'}", mapping(get(pod, "spec"))
                )
            )
        return templates
    path = _TEMPLATE_PATHS.get(kind)
    if path is None:
        return []
    return [PodTemplate(where, mapping(get(props, *path, "spec")))]


def queue_name(kind: str, props: Mapping[str, Any]) -> str | None:
    """The LocalQueue a workload names, read where Kueue reads it: the object's own labels,
    except a CronJob, whose Jobs get the labels of its jobTemplate. Pod template labels do not
    count: Kueue does not look there."""
    where = get(props, "spec", "jobTemplate") if kind == "CronJob" else props
    name = labels_of(mapping(where)).get(QUEUE_LABEL)
    return str(name) if name else None


def workload(args: ResourceValidationArgs) -> tuple[str, list[PodTemplate]] | None:
    """(kind, pod templates) when the resource is a workload object, else None."""
    kind = kind_of(args.resource_type)
    if kind is None or kind not in WORKLOAD_KINDS:
        return None
    return kind, pod_templates(kind, args.props)


def templates_of(args: ResourceValidationArgs) -> list[PodTemplate]:
    """The pod templates of the resource; [] when it is not a workload object."""
    found = workload(args)
    return found[1] if found is not None else []


def containers_of(args: ResourceValidationArgs) -> Iterator[tuple[PodTemplate, Mapping[str, Any]]]:
    """(template, container) for every container, init containers included, of the resource."""
    for t in templates_of(args):
        for c in t.containers():
            yield t, c


def config_value(args: Any, key: str, default: Any) -> Any:
    """A policy's config value: the engine fills schema defaults, direct callers may not."""
    value = mapping(args.get_config()).get(key)
    return default if value is None else value


def resource_rule(
    name: str, description: str, validate: Any, **extra: Any
) -> ResourceValidationPolicy:
    """A mandatory resource rule (`extra`: config_schema and the like)."""
    return ResourceValidationPolicy(
        name=name,
        description=description,
        validate=validate,
        enforcement_level=MANDATORY,
        **extra,
    )


def stack_rule(name: str, description: str, validate: Any, **extra: Any) -> StackValidationPolicy:
    """A mandatory stack rule (`extra`: config_schema and the like)."""
    return StackValidationPolicy(
        name=name,
        description=description,
        validate=validate,
        enforcement_level=MANDATORY,
        **extra,
    )
