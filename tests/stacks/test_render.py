"""Rendered manifests: valid against the Kubernetes schema of the stack's version, strictly."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml
from crd_schema import validate_kueue
from jobset_schema import validate_jobset

from mlstack.components.backend import get_backend
from mlstack.stacks.offline import run_plan
from mlstack.stacks.plan import Plan
from mlstack.stacks.render import REDACTED, canonical, manifests, render_yaml
from mlstack.stacks.stackfile import read_stack, shipped_stacks


@pytest.fixture(scope="module", params=shipped_stacks())
def plan(request: pytest.FixtureRequest) -> Plan:
    return run_plan(read_stack(request.param))


def test_every_rendered_object_is_schema_valid(plan: Plan) -> None:
    """Kubernetes' own kinds against its OpenAPI schema, Kueue's and JobSet's against their
    CRDs, strictly."""
    version = f"{plan.platform.cluster.kubernetes_version}.0"
    docs = list(yaml.safe_load_all(render_yaml(plan)))
    assert docs, "a stack renders at least its system namespace"
    kueue = [d for d in docs if d["apiVersion"].startswith("kueue.x-k8s.io/")]
    assert kueue, "the tenancy layer renders Kueue objects"
    jobsets = [d for d in docs if d["apiVersion"].startswith("jobset.x-k8s.io/")]
    assert len(jobsets) == len(plan.platform.workloads.training_jobs)
    for doc in docs:
        if doc in kueue:
            validate_kueue(doc)
        elif doc in jobsets:
            validate_jobset(doc, version)
        elif doc["kind"] == "PodMonitoring":
            # GKE's CRD kind: checked against its vendored schema excerpt in test_serving.py.
            assert doc["apiVersion"] == "monitoring.googleapis.com/v1"
        else:
            kubernetes_validate.validate(doc, version, strict=True)


def test_every_kubernetes_resource_of_the_plan_is_rendered_except_helm(plan: Plan) -> None:
    k8s = [
        r
        for r in plan.resources
        if r.custom and r.type.startswith("kubernetes:") and "helm.sh" not in r.type
    ]
    rendered = {
        (m["kind"], m["metadata"].get("namespace"), m["metadata"]["name"]) for m in manifests(plan)
    }
    assert len(rendered) == len(k8s)


def test_secrets_are_redacted_but_keep_their_keys(plan: Plan) -> None:
    secrets = [m for m in manifests(plan) if m["kind"] == "Secret"]
    if plan.platform.cloud != "onprem":
        # Cloud stacks reach buckets and registries by workload identity: no keys to copy.
        assert secrets == []
        return
    assert secrets
    for s in secrets:
        assert s["stringData"]
        assert set(s["stringData"].values()) == {REDACTED}
    assert "offline-placeholder" not in render_yaml(plan)


def test_helm_releases_are_listed_as_helm_commands(plan: Plan) -> None:
    text = render_yaml(plan)
    assert "helm upgrade --install kueue" in text
    assert "helm upgrade --install jobset oci://registry.k8s.io/jobset/charts/jobset" in text
    plugin = "helm upgrade --install nvidia-device-plugin nvidia-device-plugin"
    if get_backend(plan.platform.cloud).needs_gpu_device_plugin:
        assert plugin in text
        assert "--version 0.18.2" in text
    else:
        # GKE runs its own device plugin on GPU nodes; a second one would fight it.
        assert plugin not in text


def test_namespaces_come_first() -> None:
    plan = run_plan(read_stack("onprem-lab"))
    kinds = [m["kind"] for m in manifests(plan)]
    assert kinds[0] == "Namespace"


def test_canonical_order_is_stable() -> None:
    m = {"spec": {"b": 1, "a": 2}, "metadata": {"name": "x"}, "kind": "K", "apiVersion": "v1"}
    assert list(canonical(m)) == ["apiVersion", "kind", "metadata", "spec"]
    assert list(canonical(m)["spec"]) == ["a", "b"]
