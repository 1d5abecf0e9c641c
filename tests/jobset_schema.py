"""Strict validation of JobSet objects, the way the API server and JobSet's webhook would judge a
create.

Three parts, all of them run by `validate_jobset`:

- JobSet's own fields against the vendored v1alpha2 CRD schema (tests/data/crds/jobset, see its
  SOURCE.md), closed like the Kueue schemas in `crd_schema` (unknown fields are errors, `status`
  removed) with ObjectMeta checked as the API server checks it;
- each replicated job's template, the embedded `batch/v1` JobSpec that the vendored file leaves
  out, as a Job with kubernetes-validate (strict, at the cluster's Kubernetes version): its pod
  template is checked as a core PodTemplateSpec;
- the CRD's CEL rule that applies to a create, and the checks of JobSet's validating webhook that
  a generated JobSet could break (names of the child Jobs, pods and headless Service).
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
from crd_schema import close_schema, error_path, format_checker, metadata_problems
from jsonschema import Draft4Validator

CRD_DIR = Path(__file__).resolve().parent / "data" / "crds" / "jobset" / "v1alpha2"
SCHEMA_FILE = CRD_DIR / "jobset.json"
JOBSET_API_VERSION = "jobset.x-k8s.io/v1alpha2"
DEFAULT_K8S = "1.33.0"

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
#: The suffix the Job controller adds to a pod name; the webhook checks names with one.
_POD_SUFFIX = "-abcde"


class JobSetValidationError(ValueError):
    """A JobSet the API server or JobSet's webhook would refuse; `problems` lists every reason."""

    def __init__(self, name: object, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"JobSet {name!r} is invalid:\n  " + "\n  ".join(problems))


def raw_schema() -> dict[str, Any]:
    """The vendored schema, as transcribed from upstream."""
    return json.loads(SCHEMA_FILE.read_text())


@functools.cache
def strict_schema() -> dict[str, Any]:
    """Status removed, unknown fields closed off; a replicated job's `template.spec` (left out of
    the vendored file) is any object here and validated as a batch/v1 JobSpec instead."""
    schema = copy.deepcopy(raw_schema())
    schema["properties"].pop("status", None)
    replicated = schema["properties"]["spec"]["properties"]["replicatedJobs"]["items"]
    replicated["properties"]["template"]["properties"]["spec"] = {"type": "object"}
    close_schema(schema)
    Draft4Validator.check_schema(schema)
    return schema


@functools.cache
def _validator() -> Draft4Validator:
    return Draft4Validator(strict_schema(), format_checker=format_checker())


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def job_template_problems(
    where: str, template: Mapping[str, Any], namespace: str, k8s_version: str
) -> list[str]:
    """A replicated job's template as the Job it becomes, against Kubernetes' own schema."""
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {**_dict(template.get("metadata")), "name": "job", "namespace": namespace},
        "spec": template.get("spec"),
    }
    try:
        kubernetes_validate.validate(job, k8s_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{where}.{error_path(exc.path)}: {exc.message}"]
    return []


def _dns1035_problem(what: str, name: str) -> str | None:
    if len(name) > 63:
        return f"{what} {name!r} is longer than 63 characters"
    if not _DNS1035.fullmatch(name):
        return f"{what} {name!r} is not a DNS-1035 label"
    return None


def webhook_problems(manifest: Mapping[str, Any]) -> list[str]:
    """JobSet's validating webhook on a create (pkg/webhooks/jobset_webhook.go), for the fields
    a generated JobSet sets, and the CRD's create-time CEL rule."""
    name = str(_dict(manifest.get("metadata")).get("name", ""))
    spec = _dict(manifest.get("spec"))
    problems: list[str] = []
    subdomain = _dict(spec.get("network")).get("subdomain")
    if subdomain:
        why = _dns1035_problem("spec.network.subdomain", str(subdomain))
        if why:
            problems.append(why)
    jobs = [_dict(rj) for rj in _list(spec.get("replicatedJobs"))]
    if jobs and "dependsOn" in jobs[0]:
        problems.append("spec.replicatedJobs[0].dependsOn: the first ReplicatedJob cannot depend")
    names = [str(rj.get("name", "")) for rj in jobs]
    if len(set(names)) != len(names):
        problems.append("spec.replicatedJobs: names are not unique")
    for i, rj in enumerate(jobs):
        replicas = rj.get("replicas", 1)
        job_spec = _dict(_dict(rj.get("template")).get("spec"))
        group = rj.get("groupName", "default")
        why = _dns1035_problem(f"spec.replicatedJobs[{i}].groupName", str(group))
        if why:
            problems.append(why)
        longest_job = f"{name}-{rj.get('name')}-{int(replicas) - 1}"
        why = _dns1035_problem(f"spec.replicatedJobs[{i}]: child Job name", longest_job)
        if why:
            problems.append(why)
        completions = job_spec.get("completions")
        if job_spec.get("completionMode", "Indexed") == "Indexed" and completions is not None:
            pod = f"{longest_job}-{int(completions) - 1}{_POD_SUFFIX}"
            why = _dns1035_problem(f"spec.replicatedJobs[{i}]: pod name", pod)
            if why:
                problems.append(why)
        parallelism = job_spec.get("parallelism", 1)
        if int(parallelism) * int(replicas) > 2**31 - 1:
            problems.append(f"spec.replicatedJobs[{i}]: replicas x parallelism exceeds int32")
    startup = _dict(spec.get("startupPolicy"))
    if startup.get("startupPolicyOrder") == "InOrder" and any("dependsOn" in rj for rj in jobs):
        problems.append("spec: StartupPolicy and DependsOn APIs are mutually exclusive")
    return problems


def jobset_problems(manifest: Mapping[str, Any], k8s_version: str = DEFAULT_K8S) -> list[str]:
    """Every reason a strict create of `manifest` would be refused."""
    problems: list[str] = []
    if manifest.get("apiVersion") != JOBSET_API_VERSION:
        problems.append(f"apiVersion: {manifest.get('apiVersion')!r} is not {JOBSET_API_VERSION}")
    if manifest.get("kind") != "JobSet":
        problems.append(f"kind: {manifest.get('kind')!r} is not JobSet")
    metadata = manifest.get("metadata")
    problems += metadata_problems(metadata, namespaced=True)
    errors = sorted(_validator().iter_errors(dict(manifest)), key=lambda e: list(e.path))
    problems += [f"{error_path(e.absolute_path)}: {e.message}" for e in errors]
    namespace = str(_dict(metadata).get("namespace") or "default")
    for i, rj in enumerate(_list(_dict(manifest.get("spec")).get("replicatedJobs"))):
        template = _dict(_dict(rj).get("template"))
        problems += job_template_problems(
            f"spec.replicatedJobs[{i}].template", template, namespace, k8s_version
        )
    problems += webhook_problems(manifest)
    return problems


def validate_jobset(manifest: Mapping[str, Any], k8s_version: str = DEFAULT_K8S) -> None:
    """Raise JobSetValidationError unless `manifest` is a JobSet a strict create accepts."""
    problems = jobset_problems(manifest, k8s_version)
    if problems:
        name = _dict(manifest.get("metadata")).get("name")
        raise JobSetValidationError(name, problems)
