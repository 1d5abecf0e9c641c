"""Config checks of the extra manifests (`extra.py` declares them): each is a Kubernetes object
with the fields its kind has, none is listed twice, and no Secret carries its values in clear
text."""

from __future__ import annotations

from collections.abc import Mapping

from mlstack.components.kubernetes.extra import extra_manifest_key
from mlstack.components.kubernetes.resources import top_level_fields
from mlstack.stacks.errors import Problem, format_path
from mlstack.stacks.schema import Platform


def extra_manifest_problems(p: Platform) -> list[Problem]:
    problems = []
    seen: dict[str, int] = {}
    for i, manifest in enumerate(p.extra_manifests):
        path = format_path(("extra_manifests", i))
        metadata = manifest.get("metadata")
        fields = {
            "apiVersion": manifest.get("apiVersion"),
            "kind": manifest.get("kind"),
            "metadata.name": metadata.get("name") if isinstance(metadata, Mapping) else None,
        }
        missing = [k for k, v in fields.items() if not isinstance(v, str) or not v]
        if missing:
            problems.append(
                Problem(
                    path,
                    f"a Kubernetes object needs {', '.join(missing)}",
                    "give apiVersion, kind and metadata.name as strings",
                )
            )
            continue
        allowed = top_level_fields(manifest["apiVersion"], manifest["kind"])
        unknown = sorted(set(manifest) - allowed) if allowed is not None else []
        if unknown:
            problems.append(
                Problem(
                    f"{path}.{unknown[0]}",
                    f"{manifest['kind']} ({manifest['apiVersion']}) has no top-level field "
                    f"{unknown[0]}",
                    f"remove it; allowed: {', '.join(sorted(allowed or ()))}",
                )
            )
        literal = [f for f in ("data", "stringData") if manifest.get(f)]
        if manifest["kind"] == "Secret" and manifest["apiVersion"] == "v1" and literal:
            # The value itself is never echoed: it is the secret.
            problems.append(
                Problem(
                    f"{path}.{literal[0]}",
                    "a Secret's values written in the stack file are in clear text in Git and "
                    "in the stack's state",
                    "remove them and create the Secret out of band (kubectl create secret, or "
                    "an external secrets operator); workloads refer to it by name",
                )
            )
        key = extra_manifest_key(manifest)
        if key in seen:
            problems.append(
                Problem(
                    f"{path}.metadata.name",
                    f"the same object as platform.extra_manifests[{seen[key]}]",
                    "remove one, or give it another name",
                    fields["metadata.name"],
                )
            )
        seen.setdefault(key, i)
    return problems
