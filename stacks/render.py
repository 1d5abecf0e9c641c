"""Kubernetes manifests from a plan: what `kubectl apply` would get, one YAML document each."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from mlstack.stacks.plan import Plan, PlannedResource, map_secrets

REDACTED = "REDACTED"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
_FIRST = ("Namespace", "CustomResourceDefinition", "PriorityClass", "ClusterRole")


def is_manifest(resource: PlannedResource) -> bool:
    """Kubernetes API objects, not providers, components or Helm releases."""
    return (
        resource.custom
        and resource.type.startswith("kubernetes:")
        and resource.type != HELM_RELEASE
        and "kind" in resource.inputs
    )


def _redact_all(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _redact_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_all(v) for v in value]
    return REDACTED


def _sorted(value: Any) -> Any:
    """Keys sorted, and numbers as the provider sends them: every number crosses the engine as
    a float64, which Go's JSON encoder writes without a fraction when it is whole."""
    if isinstance(value, Mapping):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def canonical(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """apiVersion, kind and metadata first, every map's keys sorted: stable, diffable output."""
    head = ("apiVersion", "kind", "metadata")
    body = {k: _sorted(manifest[k]) for k in head if k in manifest}
    body.update({k: _sorted(manifest[k]) for k in sorted(manifest) if k not in head})
    return body


def _order(manifest: Mapping[str, Any]) -> tuple[int, str, str, str]:
    kind = manifest["kind"]
    meta = manifest.get("metadata", {})
    rank = _FIRST.index(kind) if kind in _FIRST else len(_FIRST)
    return rank, kind, meta.get("namespace", ""), meta.get("name", "")


def manifests(plan: Plan) -> list[dict[str, Any]]:
    """Every Kubernetes object of the plan, secrets redacted, in apply order."""
    objs = [
        canonical(map_secrets(r.inputs, lambda s: _redact_all(s["value"])))
        for r in plan.resources
        if is_manifest(r)
    ]
    return sorted(objs, key=_order)


def render_yaml(plan: Plan) -> str:
    objs = manifests(plan)
    header = [
        f"# Kubernetes objects of stack {plan.stack!r} ({len(objs)}), from the offline plan.",
        "# Apply with: kubectl apply --server-side -f <this file>",
        "# (Node objects are patches of existing nodes: server-side apply keeps other fields.)",
    ]
    if any(r.type == "kubernetes:core/v1:Secret" for r in plan.resources):
        header.append(f"# Secret values are {REDACTED}: `pulumi up` sets the real ones.")
    releases = plan.of_type(HELM_RELEASE)
    if releases:
        header.append(
            "# Helm releases are not rendered offline; install them with helm first (they bring "
            "the CRDs some objects below need):"
        )
        declared = {o["metadata"]["name"] for o in objs if o.get("kind") == "Namespace"}
        if any(r.inputs.get("namespace") in declared for r in releases):
            header.append(
                "# (--create-namespace for a namespace declared below too: applying this file "
                "then sets its Pod Security labels)"
            )
        for r in sorted(releases, key=lambda r: r.name):
            repo = (r.inputs.get("repositoryOpts") or {}).get("repo")
            create = r.inputs.get("createNamespace") or r.inputs.get("namespace") in declared
            header.append(
                f"#   helm upgrade --install {r.inputs.get('name', r.name)} {r.inputs['chart']} "
                + (f"--repo {repo} " if repo else "")
                + f"--version {r.inputs.get('version', '')} "
                f"--namespace {r.inputs.get('namespace', 'default')} "
                + ("--create-namespace " if create else "")
                + "(values: mlstack plan --json)"
            )
    docs = yaml.safe_dump_all(objs, sort_keys=False, default_flow_style=False)
    return "\n".join(header) + "\n---\n" + docs
