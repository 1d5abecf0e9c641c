"""Turn a manifest dict into the typed pulumi_kubernetes resource for its kind.

Manifests are built by pure functions (tested and schema-validated without Pulumi); this is
the one place they become resources. Typed classes keep the plan's type tokens exact
(`kubernetes:core/v1:ConfigMap`); kinds without a typed class (CRDs) become CustomResources.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any, cast

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes import _utilities as _k8s_utilities

from mlstack.stacks.names import SKIP_AWAIT_ANNOTATION

Manifest = Mapping[str, Any]

_TYPED: dict[tuple[str, str], Callable[..., pulumi.CustomResource]] = {
    ("v1", "Namespace"): k8s.core.v1.Namespace,
    ("v1", "ConfigMap"): k8s.core.v1.ConfigMap,
    ("v1", "Secret"): k8s.core.v1.Secret,
    ("v1", "ServiceAccount"): k8s.core.v1.ServiceAccount,
    ("v1", "Service"): k8s.core.v1.Service,
    ("v1", "ResourceQuota"): k8s.core.v1.ResourceQuota,
    ("v1", "LimitRange"): k8s.core.v1.LimitRange,
    ("v1", "Pod"): k8s.core.v1.Pod,
    ("v1", "PersistentVolumeClaim"): k8s.core.v1.PersistentVolumeClaim,
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("apps/v1", "StatefulSet"): k8s.apps.v1.StatefulSet,
    ("apps/v1", "DaemonSet"): k8s.apps.v1.DaemonSet,
    ("batch/v1", "Job"): k8s.batch.v1.Job,
    ("batch/v1", "CronJob"): k8s.batch.v1.CronJob,
    ("rbac.authorization.k8s.io/v1", "Role"): k8s.rbac.v1.Role,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): k8s.rbac.v1.RoleBinding,
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): k8s.rbac.v1.ClusterRole,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): k8s.rbac.v1.ClusterRoleBinding,
    ("storage.k8s.io/v1", "StorageClass"): k8s.storage.v1.StorageClass,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.networking.v1.NetworkPolicy,
    ("scheduling.k8s.io/v1", "PriorityClass"): k8s.scheduling.v1.PriorityClass,
    ("policy/v1", "PodDisruptionBudget"): k8s.policy.v1.PodDisruptionBudget,
    ("autoscaling/v2", "HorizontalPodAutoscaler"): k8s.autoscaling.v2.HorizontalPodAutoscaler,
}

#: Kinds mlstack only ever patches (objects that exist already, such as on-prem Nodes).
_PATCHES: dict[tuple[str, str], Callable[..., pulumi.CustomResource]] = {
    ("v1", "Node"): k8s.core.v1.NodePatch,
}


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


def top_level_fields(api_version: str, kind: str) -> frozenset[str] | None:
    """The top-level manifest fields a typed kind accepts; None for kinds declared as
    CustomResources, which take any."""
    cls = _TYPED.get((api_version, kind))
    if cls is None:
        return None
    params = inspect.signature(cast(Any, cls)._internal_init).parameters
    return frozenset(
        _camel(p) for p in params if p not in ("__self__", "resource_name", "opts", "__props__")
    )


def without_await(manifest: Manifest) -> dict[str, Any]:
    """`manifest` annotated so that pulumi-kubernetes does not wait for it to become ready.

    The provider skips its create and update await when `pulumi.com/skipAwait` is "true"
    (provider/pkg/await/await.go checks `metadata.SkipAwaitLogic` before every awaiter; PR 417
    added the annotation); it still waits for deletion of custom resources, so a JobSet's
    delete-before-replace keeps its order (metadata/overrides.go, `allowsSkipAwaitWithDelete`
    lists only the legacy built-in kinds).
    """
    metadata = dict(manifest.get("metadata") or {})
    metadata["annotations"] = {**(metadata.get("annotations") or {}), SKIP_AWAIT_ANNOTATION: "true"}
    return {**manifest, "metadata": metadata}


def declare(
    name: str,
    manifest: Manifest,
    opts: pulumi.ResourceOptions,
    *,
    patch: bool = False,
    skip_await: bool = False,
) -> pulumi.CustomResource:
    """Declare `manifest` as a resource named `name`.

    With patch=True the object must exist already and only the manifest's fields are applied
    (server-side apply), so other owners' fields are left alone. With skip_await=True `pulumi up`
    does not wait for the object to become ready (`without_await`).
    """
    if skip_await:
        manifest = without_await(manifest)
    gvk = (manifest["apiVersion"], manifest["kind"])
    body = {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind")}
    table = _PATCHES if patch else _TYPED
    if gvk in table:
        return table[gvk](name, opts=opts, **{_snake(k): v for k, v in body.items()})
    if patch:
        raise ValueError(f"no patch type for {gvk[1]} ({gvk[0]})")
    return CustomObject(name, manifest, opts)


class CustomObject(pulumi.CustomResource):
    """An object of a CRD kind, with whatever top-level fields it has.

    `k8s.apiextensions.CustomResource` takes only `metadata` and `spec`; some kinds keep their
    fields elsewhere (a Kueue WorkloadPriorityClass has a top-level `value`). Same type token and
    provider as CustomResource, so the engine treats both alike.
    """

    def __init__(self, name: str, manifest: Manifest, opts: pulumi.ResourceOptions) -> None:
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(version=_k8s_utilities.get_version())
        )
        super().__init__(
            f"kubernetes:{manifest['apiVersion']}:{manifest['kind']}", name, dict(manifest), opts
        )
