"""The extra manifests' config checks: Kubernetes objects with their kind's fields, each once."""

from __future__ import annotations

from typing import Any

from mlstack.components.kubernetes.extra_checks import extra_manifest_problems
from mlstack.stacks.schema import Platform

STORAGE_CLASS = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {"name": "fast"},
    "provisioner": "kubernetes.io/no-provisioner",
}


def _problems(lab_config: dict[str, Any], *manifests: dict[str, Any]) -> list[str]:
    lab_config["extra_manifests"] = list(manifests)
    return [str(p) for p in extra_manifest_problems(Platform.model_validate(lab_config))]


def test_a_sound_manifest_passes(lab_config: dict[str, Any]) -> None:
    assert _problems(lab_config, STORAGE_CLASS) == []


def test_an_object_listed_twice_points_at_the_first(lab_config: dict[str, Any]) -> None:
    (problem,) = _problems(lab_config, STORAGE_CLASS, STORAGE_CLASS)
    assert problem.startswith("platform.extra_manifests[1].metadata.name: the same object as ")
    assert "platform.extra_manifests[0]" in problem


def test_a_field_the_kind_lacks(lab_config: dict[str, Any]) -> None:
    (problem,) = _problems(lab_config, {**STORAGE_CLASS, "spec": {}})
    assert problem.startswith("platform.extra_manifests[0].spec: StorageClass (storage.k8s.io/v1)")


def test_an_object_without_a_kind(lab_config: dict[str, Any]) -> None:
    manifest = {k: v for k, v in STORAGE_CLASS.items() if k != "kind"}
    (problem,) = _problems(lab_config, manifest)
    assert "a Kubernetes object needs kind" in problem


def _secret(**fields: Any) -> dict[str, Any]:
    meta = {"name": "db", "namespace": "vision"}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, **fields}


def test_a_secret_with_literal_values_is_refused_without_echoing_them(
    lab_config: dict[str, Any],
) -> None:
    for field, values in (("stringData", {"password": "hunter2"}), ("data", {"k": "aHVudGVy"})):
        (problem,) = _problems(lab_config, _secret(**{field: values}))
        assert problem.startswith(f"platform.extra_manifests[0].{field}: a Secret's values")
        assert "out of band" in problem
        assert "hunter2" not in problem and "aHVudGVy" not in problem


def test_a_secret_without_values_is_allowed(lab_config: dict[str, Any]) -> None:
    # An empty Secret that a controller fills (a service-account token, say) holds nothing.
    assert _problems(lab_config, _secret(type="Opaque")) == []
