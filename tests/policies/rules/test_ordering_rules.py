"""First-deploy ordering (policies/rules/ordering.py): what `pulumi up` awaits needs nothing that
only a later step (pushing images, training) makes.

Small stacks first, one thing at a time; then the await graph of every shipped stack, and the
shipped stacks with the skipAwait annotation taken away again (the code before issue 16).
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import pytest
from pulumi_policy import PolicyResource
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE
from rule_args import PlanCopy, fails, policy_resource, stack_args, violations

from mlstack.components.kubernetes import resources as k8s_resources
from mlstack.components.kubernetes.system import MODELS_ENV, REGISTRY_ENV
from mlstack.policies.rules import ordering
from mlstack.policies.rules.objects import kind_of, pod_templates
from mlstack.policies.rules.ordering import awaited, awaits_no_later_artifacts
from mlstack.stacks import offline
from mlstack.stacks.names import (
    PLATFORM_CONFIGMAP,
    SKIP_AWAIT_ANNOTATION,
    SYSTEM_NAMESPACE,
    WAIT_FOR_ANNOTATION,
)
from mlstack.stacks.plan import Plan
from mlstack.stacks.stackfile import read_stack, shipped_stacks
from mlstack.workloads import contract

RULE = "first-deploy-ordering"
REGISTRY = "000000000000.dkr.ecr.us-east-1.amazonaws.com"
MODELS = "s3://acme-models"
MODEL = f"{MODELS}/vision/resnet"
ECR_REPOSITORY = "aws:ecr/repository:Repository"
S3_BUCKET = "aws:s3/bucket:Bucket"
TYPES = {
    "ConfigMap": "kubernetes:core/v1:ConfigMap",
    "Deployment": "kubernetes:apps/v1:Deployment",
    "Service": "kubernetes:core/v1:Service",
    "Job": "kubernetes:batch/v1:Job",
    "JobSet": "kubernetes:jobset.x-k8s.io/v1alpha2:JobSet",
}
LABELS = {"app": "chat"}


def _platform(registry: str = REGISTRY, models: str = MODELS) -> PolicyResource:
    manifest = {
        "metadata": {"name": PLATFORM_CONFIGMAP, "namespace": SYSTEM_NAMESPACE},
        "data": {REGISTRY_ENV: registry, MODELS_ENV: models},
    }
    return policy_resource(TYPES["ConfigMap"], manifest)


def _created(*types: str) -> list[PolicyResource]:
    """Cloud resources the stack creates: the registry's repositories, the buckets."""
    return [policy_resource(t, {"name": f"r{i}"}, name=f"r{i}") for i, t in enumerate(types)]


def _pod(image: str, model: str | None = None) -> dict[str, Any]:
    env = [{"name": contract.MODEL_URL, "value": model}] if model is not None else []
    return {"containers": [{"name": "serve", "image": image, "env": env}]}


def _deployment(
    image: str, model: str | None = None, annotations: dict[str, str] | None = None
) -> PolicyResource:
    manifest = {
        "metadata": {"name": "chat", "namespace": "vision", "annotations": annotations or {}},
        "spec": {"template": {"metadata": {"labels": LABELS}, "spec": _pod(image, model)}},
    }
    return policy_resource(TYPES["Deployment"], manifest)


def _service(annotations: dict[str, str] | None = None) -> PolicyResource:
    manifest = {
        "metadata": {"name": "chat", "namespace": "vision", "annotations": annotations or {}},
        "spec": {"selector": LABELS, "ports": [{"port": 80}]},
    }
    return policy_resource(TYPES["Service"], manifest)


def _jobset(image: str, model: str, annotations: dict[str, str] | None = None) -> PolicyResource:
    job = {"template": {"spec": {"template": {"spec": _pod(image, model)}}}}
    manifest = {
        "metadata": {"name": "resnet", "namespace": "vision", "annotations": annotations or {}},
        "spec": {"replicatedJobs": [{"name": "workers", **job}]},
    }
    return policy_resource(TYPES["JobSet"], manifest)


SKIP = {SKIP_AWAIT_ANNOTATION: "true"}
AWS = _created(ECR_REPOSITORY, S3_BUCKET)


def _run(resources: list[PolicyResource]) -> list[str]:
    return violations(awaits_no_later_artifacts, stack_args(resources)).messages


# --- what the provider awaits -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "annotations", "expected"),
    [
        ("Deployment", {}, True),
        ("Service", {}, True),
        ("Job", {}, True),
        ("Deployment", SKIP, False),
        ("Deployment", {SKIP_AWAIT_ANNOTATION: "false"}, True),
        ("JobSet", {}, False),
        ("JobSet", {WAIT_FOR_ANNOTATION: "condition=Completed"}, True),
        ("JobSet", {WAIT_FOR_ANNOTATION: "condition=Completed", **SKIP}, False),
        ("HorizontalPodAutoscaler", {}, False),
    ],
)
def test_awaited_follows_the_providers_await_logic(
    kind: str, annotations: dict[str, str], expected: bool
) -> None:
    assert awaited(kind, {"metadata": {"annotations": annotations}}) is expected


# --- small stacks -------------------------------------------------------------------------------


def test_unawaited_serving_from_the_stacks_registry_passes() -> None:
    image = f"{REGISTRY}/ml/serve:0.1.0"
    resources = [*AWS, _platform(), _deployment(image, MODEL, SKIP), _service(SKIP)]
    assert _run(resources) == []


@fails(RULE)
def test_an_awaited_deployment_of_an_image_in_the_stacks_own_registry_fails() -> None:
    image = f"{REGISTRY}/ml/serve:0.1.0"
    [message] = _run([*AWS, _platform(), _deployment(image)])
    assert message.startswith("Deployment vision/chat: `pulumi up` waits for it")
    assert f"image {image} from the platform registry" in message
    assert f'{SKIP_AWAIT_ANNOTATION}: "true"' in message


@fails(RULE)
def test_an_awaited_service_in_front_of_such_pods_fails() -> None:
    image = f"{REGISTRY}/ml/serve:0.1.0"
    [message] = _run([*AWS, _platform(), _deployment(image, annotations=SKIP), _service()])
    assert message.startswith("Service vision/chat:")


@fails(RULE)
def test_an_awaited_deployment_of_a_model_a_training_job_exports_fails() -> None:
    """On-prem: the registry and buckets exist before the stack, but the model does not."""
    harbor = "harbor.lab.internal/ml"
    trains = _jobset(f"{harbor}/train:0.1.0", MODEL, SKIP)
    [message] = _run([_platform(harbor), trains, _deployment(f"{harbor}/serve:0.1.0", MODEL)])
    assert f"model {MODEL}, exported by training JobSet vision/resnet" in message


@fails(RULE)
def test_an_awaited_deployment_of_a_model_in_the_stacks_own_bucket_fails() -> None:
    [message] = _run([*AWS, _platform(), _deployment("nginx:1.27", MODEL)])
    assert f"model {MODEL} in the platform's models bucket" in message


def test_registries_and_buckets_the_stack_does_not_create_may_hold_artifacts_already() -> None:
    harbor = "harbor.lab.internal/ml"
    resources = [_platform(harbor, "s3://lab-models"), _deployment(f"{harbor}/serve:0.1.0")]
    assert _run([*resources, _service()]) == []
    assert _run([_platform(harbor), _deployment("nginx:1.27", "s3://lab-models/x/y")]) == []


def test_images_from_elsewhere_may_be_awaited() -> None:
    assert _run([*AWS, _platform(), _deployment("nginx:1.27"), _service()]) == []


def test_values_unknown_during_a_preview_are_not_judged() -> None:
    """A first preview: the registry URL is an output of the repository still to be created,
    and an unknown image may come from an image build of the same `up`."""
    resources = [*AWS, _platform(UNKNOWN_STRING_VALUE), _deployment(UNKNOWN_STRING_VALUE)]
    assert _run(resources) == []


@fails(RULE)
def test_a_training_jobset_with_a_wait_condition_fails() -> None:
    condition = {WAIT_FOR_ANNOTATION: "condition=Completed"}
    trains = _jobset(f"{REGISTRY}/ml/train:0.1.0", MODEL, condition)
    [message] = _run([*AWS, _platform(), trains])
    assert message.startswith("JobSet vision/resnet:")


def test_the_rule_is_in_the_pack() -> None:
    assert [p.name for p in ordering.POLICIES] == [RULE]


# --- the shipped stacks' await graphs ------------------------------------------------------------


@functools.cache
def _plan(stack: str) -> Plan:
    return offline.run_plan(read_stack(stack))


def _await_graph(plan: Plan) -> dict[str, bool]:
    """Every Kubernetes object that runs or fronts pods -> whether `pulumi up` awaits it."""
    graph: dict[str, bool] = {}
    for r in plan.resources:
        kind = kind_of(r.type)
        if kind is not None and (kind == "Service" or pod_templates(kind, r.inputs)):
            graph[r.name] = awaited(kind, r.inputs)
    return graph


@pytest.mark.parametrize("stack", shipped_stacks())
def test_shipped_stacks_await_no_workload_of_the_same_up(stack: str) -> None:
    plan = _plan(stack)
    resources = PlanCopy.of(plan).resources()
    assert violations(awaits_no_later_artifacts, stack_args(resources)).messages == []
    graph = _await_graph(plan)
    workloads = {
        name: waits for name, waits in graph.items() if name.startswith(("serving-", "training-"))
    }
    assert not any(workloads.values()), workloads
    if plan.platform.workloads.training_jobs or plan.platform.workloads.inference_services:
        assert workloads


@fails(RULE)
@pytest.mark.parametrize("stack", ["aws-dev", "gcp-dev", "onprem-lab"])
def test_shipped_stacks_with_awaited_serving_fail(
    stack: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The code before issue 16: Pulumi awaited the serving Deployments and Service (their
    image in the stack's new registry on AWS and GCP, their model from a training job of the same
    `up` everywhere)."""
    monkeypatch.setattr(k8s_resources, "without_await", dict)
    plan = offline.run_plan(read_stack(stack))
    messages = violations(
        awaits_no_later_artifacts, stack_args(PlanCopy.of(plan).resources())
    ).messages
    serving = [m for m in messages if m.startswith(("Deployment ", "Service "))]
    assert serving, messages
    assert all("exported by training JobSet" in m for m in serving), serving


@fails(RULE)
def test_a_planted_awaited_deployment_in_a_shipped_stack_fails() -> None:
    """aws-dev with one mistake: the serving Deployment loses its skipAwait annotation."""
    plan = PlanCopy.of(_plan("aws-dev"))
    [item] = [i for i in plan.items if i.type == TYPES["Deployment"]]
    inputs = copy.deepcopy(item.inputs)
    del inputs["metadata"]["annotations"][SKIP_AWAIT_ANNOTATION]
    item.inputs = inputs
    [message] = violations(awaits_no_later_artifacts, stack_args(plan.resources())).messages
    assert "from the platform registry" in message
    assert "exported by training JobSet" in message
