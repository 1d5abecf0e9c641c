"""Strict validation of Kueue objects against the vendored v1beta2 CRD schemas.

(JobSet objects: `jobset_schema`, which reuses the closing, metadata and format checks here.)

The vendored files (tests/data/crds/kueue/v1beta2, see ../data/crds/kueue/SOURCE.md) are the
CRDs' `openAPIV3Schema`s. As written they accept unknown fields: the API server prunes those, or
rejects them under `fieldValidation=Strict`, but a JSON-Schema validator lets them through. So
`validate_kueue` validates against a closed copy of each schema, the way a strict apply does:

- every object schema that lists `properties`, and has neither `additionalProperties` nor
  `x-kubernetes-preserve-unknown-fields: true`, gets `additionalProperties: false`;
- `status` is removed: a declared object never sets it, and one upstream status pattern
  (`(?i)` in the middle of a regex, valid in Go RE2) does not compile in Python;
- `metadata` (only `type: object` in a CRD) is checked here like the API server checks any
  ObjectMeta: a DNS-1123 subdomain name, a DNS-1123 label namespace for namespaced kinds and
  none for cluster-scoped ones, labels and annotations as string-to-string maps with valid keys;
- `format: int32` / `int64` bound integers; the schema's CEL rules (`x-kubernetes-validations`),
  which JSON Schema cannot evaluate, are hand-translated for the kinds mlstack declares.

Draft 4 is the closest JSON-Schema draft to OpenAPI v3.0: its `integer` is a true int (8.0 is
not one), like the API server's.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from jsonschema import Draft4Validator, FormatChecker

CRD_DIR = Path(__file__).resolve().parent / "data" / "crds" / "kueue" / "v1beta2"
KUEUE_API_VERSION = "kueue.x-k8s.io/v1beta2"

#: kind -> (schema file stem, namespaced)
KINDS: dict[str, tuple[str, bool]] = {
    "ClusterQueue": ("clusterqueue", False),
    "Cohort": ("cohort", False),
    "LocalQueue": ("localqueue", True),
    "ResourceFlavor": ("resourceflavor", False),
    "WorkloadPriorityClass": ("workloadpriorityclass", False),
}

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
#: ObjectMeta's fields; anything else under metadata is unknown.
_OBJECT_META = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "labels",
        "annotations",
        "finalizers",
        "ownerReferences",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    }
)
_ANNOTATIONS_MAX_BYTES = 256 * 1024


class KueueValidationError(ValueError):
    """A manifest the API server would reject; `problems` lists every reason, one per line."""

    def __init__(self, kind: str, name: object, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{kind} {name!r} is invalid:\n  " + "\n  ".join(problems))


def close_schema(schema: Any) -> None:
    """Set `additionalProperties: false`, in place, on every object schema that lists
    properties and leaves unknown fields undecided. Walks schema keywords only, so a field
    named like a keyword ("items", "properties") is never mistaken for one."""
    if not isinstance(schema, dict):
        return
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and schema.get("x-kubernetes-preserve-unknown-fields") is not True
    ):
        schema["additionalProperties"] = False
    for keyword in ("properties", "patternProperties", "definitions"):
        for sub in schema.get(keyword, {}).values():
            close_schema(sub)
    for keyword in ("items", "additionalProperties", "not"):
        sub = schema.get(keyword)
        for s in sub if isinstance(sub, list) else [sub]:
            close_schema(s)
    for keyword in ("anyOf", "allOf", "oneOf"):
        for sub in schema.get(keyword, []):
            close_schema(sub)


def raw_schema(kind: str) -> dict[str, Any]:
    """The vendored schema of `kind`, as upstream wrote it."""
    stem, _ = KINDS[kind]
    return json.loads((CRD_DIR / f"{stem}.json").read_text())


@functools.cache
def strict_schema(kind: str) -> dict[str, Any]:
    """The schema `validate_kueue` uses: status removed, unknown fields closed off."""
    schema = copy.deepcopy(raw_schema(kind))
    schema["properties"].pop("status", None)
    close_schema(schema)
    Draft4Validator.check_schema(schema)
    return schema


def format_checker() -> FormatChecker:
    checker = FormatChecker(formats=())

    @checker.checks("int32")
    def _int32(value: object) -> bool:
        return not isinstance(value, int) or -(2**31) <= value < 2**31

    @checker.checks("int64")
    def _int64(value: object) -> bool:
        return not isinstance(value, int) or -(2**63) <= value < 2**63

    @checker.checks("date-time")
    def _date_time(value: object) -> bool:
        return not isinstance(value, str) or bool(_RFC3339.fullmatch(value))

    return checker


@functools.cache
def _validator(kind: str) -> Draft4Validator:
    return Draft4Validator(strict_schema(kind), format_checker=format_checker())


def error_path(parts: Iterable[object]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "<root>"


def _qualified_name_problem(key: object) -> str | None:
    if not isinstance(key, str):
        return "is not a string"
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return "has a prefix that is not a DNS-1123 subdomain"
    if len(name) > 63 or not _QUALIFIED_NAME.fullmatch(name):
        return "is not a qualified name (at most 63 alphanumerics, '-', '_' or '.')"
    return None


def metadata_problems(metadata: object, namespaced: bool) -> list[str]:
    """What the API server would say about an ObjectMeta."""
    if not isinstance(metadata, Mapping):
        return ["metadata: is not an object"]
    problems = [f"metadata.{k}: unknown field" for k in metadata if k not in _OBJECT_META]
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        problems.append("metadata.name: is required")
    elif len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        problems.append(f"metadata.name: {name!r} is not a DNS-1123 subdomain")
    namespace = metadata.get("namespace")
    if namespaced:
        if not isinstance(namespace, str) or not namespace:
            problems.append("metadata.namespace: a namespaced kind needs one")
        elif len(namespace) > 63 or not _DNS_LABEL.fullmatch(namespace):
            problems.append(f"metadata.namespace: {namespace!r} is not a DNS-1123 label")
    elif namespace is not None:
        problems.append("metadata.namespace: the kind is cluster-scoped")
    labels = metadata.get("labels", {})
    if not isinstance(labels, Mapping):
        problems.append("metadata.labels: is not a map")
    else:
        for key, value in labels.items():
            why = _qualified_name_problem(key)
            if why:
                problems.append(f"metadata.labels: key {key!r} {why}")
            if not isinstance(value, str):
                problems.append(f"metadata.labels[{key}]: {value!r} is not a string")
            elif len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
                problems.append(f"metadata.labels[{key}]: {value!r} is not a label value")
    annotations = metadata.get("annotations", {})
    if not isinstance(annotations, Mapping):
        problems.append("metadata.annotations: is not a map")
    else:
        size = 0
        for key, value in annotations.items():
            why = _qualified_name_problem(key)
            if why:
                problems.append(f"metadata.annotations: key {key!r} {why}")
            if not isinstance(value, str):
                problems.append(f"metadata.annotations[{key}]: {value!r} is not a string")
            else:
                size += len(str(key).encode()) + len(value.encode())
        if size > _ANNOTATIONS_MAX_BYTES:
            problems.append("metadata.annotations: larger than 256 KiB")
    return problems


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def cel_problems(kind: str, manifest: Mapping[str, Any]) -> list[str]:
    """The CRD's `x-kubernetes-validations` (CEL) rules that apply to a create, by hand.

    Only rules on fields mlstack sets are translated; transition rules (`oldSelf`) never apply
    to a create.
    """
    spec = _dict(manifest.get("spec"))
    problems: list[str] = []
    if kind in ("ClusterQueue", "Cohort"):
        groups = _list(spec.get("resourceGroups"))
        for i, group in enumerate(groups):
            covered = _list(_dict(group).get("coveredResources"))
            for j, flavor in enumerate(_list(_dict(group).get("flavors"))):
                if len(_list(_dict(flavor).get("resources"))) != len(covered):
                    problems.append(
                        f"spec.resourceGroups[{i}].flavors[{j}]: flavors must have the same "
                        "number of resources as the coveredResources"
                    )
        preemption = _dict(spec.get("preemption"))
        borrow = _dict(preemption.get("borrowWithinCohort"))
        if (
            preemption.get("reclaimWithinCohort", "Never") == "Never"
            and "borrowWithinCohort" in preemption
            and borrow.get("policy", "Never") != "Never"
        ):
            problems.append(
                "spec.preemption: reclaimWithinCohort=Never and borrowWithinCohort.Policy!=Never"
            )
        fungibility = _dict(spec.get("flavorFungibility"))
        if "preference" in fungibility and (
            fungibility.get("whenCanBorrow", "MayStopSearch") != "TryNextFlavor"
            or fungibility.get("whenCanPreempt", "TryNextFlavor") != "TryNextFlavor"
        ):
            problems.append(
                "spec.flavorFungibility: preference can only be set when both whenCanBorrow "
                "and whenCanPreempt are TryNextFlavor"
            )
    if kind == "ClusterQueue" and "cohortName" not in spec:
        for group in _list(spec.get("resourceGroups")):
            for flavor in _list(_dict(group).get("flavors")):
                for resource in _list(_dict(flavor).get("resources")):
                    if "borrowingLimit" in _dict(resource):
                        problems.append("spec: borrowingLimit must be nil when cohort is empty")
    if kind == "ResourceFlavor":
        effects = ("NoSchedule", "PreferNoSchedule", "NoExecute")
        if any(_dict(t).get("effect") not in effects for t in _list(spec.get("nodeTaints"))):
            problems.append(
                "spec.nodeTaints: supported taint effect values: 'NoSchedule', "
                "'PreferNoSchedule', 'NoExecute'"
            )
        if "topologyName" in spec and not _dict(spec.get("nodeLabels")):
            problems.append("spec: at least one nodeLabel is required when topology is set")
    return problems


def kueue_problems(manifest: Mapping[str, Any]) -> list[str]:
    """Every reason the API server (fieldValidation=Strict) would reject `manifest`."""
    kind = manifest.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        return [f"kind: {kind!r} is not one of {', '.join(KINDS)}"]
    problems: list[str] = []
    if manifest.get("apiVersion") != KUEUE_API_VERSION:
        problems.append(f"apiVersion: {manifest.get('apiVersion')!r} is not {KUEUE_API_VERSION}")
    problems += metadata_problems(manifest.get("metadata"), namespaced=KINDS[kind][1])
    errors = sorted(_validator(kind).iter_errors(dict(manifest)), key=lambda e: list(e.path))
    problems += [f"{error_path(e.absolute_path)}: {e.message}" for e in errors]
    problems += cel_problems(kind, manifest)
    return problems


def validate_kueue(manifest: Mapping[str, Any]) -> None:
    """Raise KueueValidationError unless `manifest` is a valid Kueue v1beta2 object."""
    problems = kueue_problems(manifest)
    if problems:
        metadata = manifest.get("metadata")
        name = metadata.get("name") if isinstance(metadata, Mapping) else None
        raise KueueValidationError(str(manifest.get("kind")), name, problems)
