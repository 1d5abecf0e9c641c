"""declare(): a manifest becomes the typed resource for its kind, or a CustomResource."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pulumi
import pytest

from mlstack.components.kubernetes.resources import declare
from mlstack.stacks.names import SKIP_AWAIT_ANNOTATION
from mlstack.stacks.plan import PlannedResource, is_secret

RunMocked = Callable[[Callable[[], object]], list[PlannedResource]]

CONFIGMAP = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "settings", "namespace": "team-a"},
    "data": {"K": "v"},
}
SECRET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "creds", "namespace": "team-a"},
    "type": "Opaque",
    "stringData": {"TOKEN": "t"},
}
DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "team-a"},
    "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx"}]},
        },
    },
}
CLUSTER_QUEUE = {
    "apiVersion": "kueue.x-k8s.io/v1beta1",
    "kind": "ClusterQueue",
    "metadata": {"name": "vision"},
    "spec": {"namespaceSelector": {}},
}
NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "dgx-01", "labels": {"a": "b"}}}


def _declared(
    run_mocked: RunMocked, manifest: dict[str, Any], patch: bool = False, skip_await: bool = False
) -> PlannedResource:
    def program() -> None:
        declare("r", manifest, pulumi.ResourceOptions(), patch=patch, skip_await=skip_await)

    (resource,) = run_mocked(program)
    return resource


def _plain(value: Any) -> Any:
    return value["value"] if is_secret(value) else value


@pytest.mark.parametrize(
    ("manifest", "type_token"),
    [
        (CONFIGMAP, "kubernetes:core/v1:ConfigMap"),
        (SECRET, "kubernetes:core/v1:Secret"),
        (DEPLOYMENT, "kubernetes:apps/v1:Deployment"),
    ],
)
def test_known_kinds_become_their_typed_resource_with_the_same_fields(
    run_mocked: RunMocked, manifest: dict[str, Any], type_token: str
) -> None:
    resource = _declared(run_mocked, manifest)
    assert resource.type == type_token
    for key, value in manifest.items():
        assert _plain(resource.inputs[key]) == value


def test_a_secrets_string_data_is_kept_secret_even_when_given_in_clear(
    run_mocked: RunMocked,
) -> None:
    assert is_secret(_declared(run_mocked, SECRET).inputs["stringData"])


def test_other_kinds_become_custom_resources(run_mocked: RunMocked) -> None:
    resource = _declared(run_mocked, CLUSTER_QUEUE)
    assert resource.type == "kubernetes:kueue.x-k8s.io/v1beta1:ClusterQueue"
    assert resource.inputs["metadata"] == {"name": "vision"}
    assert resource.inputs["spec"] == {"namespaceSelector": {}}


def test_a_node_patch_becomes_a_node_patch(run_mocked: RunMocked) -> None:
    resource = _declared(run_mocked, NODE, patch=True)
    assert resource.type == "kubernetes:core/v1:NodePatch"
    assert resource.inputs["metadata"] == NODE["metadata"]


def test_patching_a_kind_without_a_patch_type_is_refused() -> None:
    with pytest.raises(ValueError, match="ConfigMap"):
        declare("r", CONFIGMAP, pulumi.ResourceOptions(), patch=True)


@pytest.mark.parametrize("manifest", [DEPLOYMENT, CLUSTER_QUEUE])
def test_skip_await_adds_the_providers_annotation_and_nothing_else(
    run_mocked: RunMocked, manifest: dict[str, Any]
) -> None:
    annotated = {**manifest, "metadata": {**manifest["metadata"], "annotations": {"a": "b"}}}
    resource = _declared(run_mocked, annotated, skip_await=True)
    assert resource.inputs["metadata"] == {
        **annotated["metadata"],
        "annotations": {"a": "b", SKIP_AWAIT_ANNOTATION: "true"},
    }
    assert annotated["metadata"]["annotations"] == {"a": "b"}, "the caller's manifest is kept"
    assert "annotations" not in _declared(run_mocked, manifest).inputs["metadata"]
