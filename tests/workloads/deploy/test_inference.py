"""The InferenceService component through the offline plan: what an inference service in the
stack config becomes on each cloud, what it waits for, its outputs, and that the policy pack
passes it (a canary, a load balancer, GPUs)."""

from __future__ import annotations

import copy
import fnmatch
import json
import re
from collections.abc import Callable
from typing import Any

import kubernetes_validate
import pytest
from tests_support import PlanWithOptions, wire_ints

from mlstack.components.backend import get_backend
from mlstack.components.kubernetes.resources import without_await
from mlstack.policies.check import check_plan
from mlstack.stacks import offline
from mlstack.stacks.names import (
    OBJECT_STORE_SECRET,
    SERVICE_LABEL,
    SKIP_AWAIT_ANNOTATION,
    TRACK_LABEL,
)
from mlstack.stacks.offline import SECRET_PLACEHOLDER, run_plan
from mlstack.stacks.plan import PlannedResource
from mlstack.stacks.stackfile import StackFile, read_stack
from mlstack.stacks.validate import load_platform
from mlstack.workloads import contract
from mlstack.workloads.deploy.serving import service_manifests
from mlstack.workloads.deploy.settings import service_settings
from tests.workloads.deploy.placements import LAB_S3

MakeStack = Callable[..., StackFile]
SERVING = "mlstack:workloads:InferenceService"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
LAB_SERVICE = "serving-language-lm-small-api"
ROLES = {
    "deployment": DEPLOYMENT,
    "service": SERVICE,
    "autoscaler": HPA,
    "disruption-budget": PDB,
}


def _manifest(resource: PlannedResource) -> dict[str, Any]:
    """The resource's inputs as the object the provider sends."""
    api_version, kind = resource.type.removeprefix("kubernetes:").split(":")
    api_version = api_version.removeprefix("core/")
    return {"apiVersion": api_version, "kind": kind, **wire_ints(dict(resource.inputs))}


def _container(deployment: PlannedResource) -> dict[str, Any]:
    return deployment.inputs["spec"]["template"]["spec"]["containers"][0]


def _env(deployment: PlannedResource) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in _container(deployment)["env"]}


def _with_services(lab_config: dict[str, Any], *services: dict[str, Any]) -> dict[str, Any]:
    config = copy.deepcopy(lab_config)
    config["workloads"]["inference_services"] = list(services)
    return config


def test_a_service_is_a_component_with_its_objects(lab: PlanWithOptions) -> None:
    component = lab.get(SERVING, LAB_SERVICE)
    for role, type_ in ROLES.items():
        (child,) = lab.children(component, type_)
        assert child.name == f"{LAB_SERVICE}-{role}"
        assert child.inputs["metadata"]["name"] == "lm-small-api"
        assert child.inputs["metadata"]["namespace"] == "language"
    assert lab.children(component, NETWORK_POLICY) == []
    provider = lab.get("pulumi:providers:kubernetes", "onprem-cluster-provider")
    deployment = lab.get(DEPLOYMENT, f"{LAB_SERVICE}-deployment")
    assert deployment.provider is not None and deployment.provider.startswith(provider.urn)


def test_the_component_declares_exactly_what_the_pure_builders_build(
    lab: PlanWithOptions,
) -> None:
    platform = load_platform(read_stack("onprem-lab").platform)
    service = platform.workloads.inference_services[0]
    team = next(t for t in platform.teams if t.name == service.team)
    placement = LAB_S3
    settings = service_settings(service, platform.pool(service.pool))
    internal_lb = get_backend(platform.cloud).internal_lb_annotations
    expected = service_manifests(settings, team, placement, internal_lb)
    assert set(expected) == set(ROLES)
    version = f"{platform.cluster.kubernetes_version}.0"
    for role, manifest in expected.items():
        resource = lab.get(ROLES[role], f"{LAB_SERVICE}-{role}")
        awaited_with_pods = role in ("deployment", "canary", "service")
        assert _manifest(resource) == (without_await(manifest) if awaited_with_pods else manifest)
        kubernetes_validate.validate(manifest, version, strict=True)


def test_the_service_waits_for_kueue_and_its_team(lab: PlanWithOptions) -> None:
    deployment = lab.get(DEPLOYMENT, f"{LAB_SERVICE}-deployment")
    deps = lab.opts(deployment).dependencies
    for type_, name in (
        (HELM_RELEASE, "kueue-release"),
        ("kubernetes:core/v1:Namespace", "team-language-namespace"),
        ("kubernetes:core/v1:ServiceAccount", "team-language-service-account"),
        ("kubernetes:core/v1:Secret", "team-language-object-store-credentials"),
        ("kubernetes:kueue.x-k8s.io/v1beta2:LocalQueue", "team-language-local-queue"),
    ):
        assert lab.get(type_, name).urn in deps, name
    assert lab.get("kubernetes:core/v1:Namespace", "team-vision-namespace").urn not in deps
    for role in ("service", "autoscaler", "disruption-budget"):
        child = lab.get(ROLES[role], f"{LAB_SERVICE}-{role}")
        assert lab.get("kubernetes:core/v1:Namespace", "team-language-namespace").urn in (
            lab.opts(child).dependencies
        ), role


def test_the_deployment_reads_the_training_jobs_model(lab: PlanWithOptions) -> None:
    deployment = lab.get(DEPLOYMENT, f"{LAB_SERVICE}-deployment")
    env = _env(deployment)
    trained = lab.plan.outputs["training_jobs"]["language/lm-small"]["models"]
    assert env[contract.MODEL_URL] == trained == "s3://lab-ml-models/language/lm-small"
    assert contract.MODEL_VERSION not in env
    assert _container(deployment)["image"].startswith("harbor.lab.internal/ml/serve:")


def test_no_secret_value_reaches_the_deployment(lab: PlanWithOptions) -> None:
    deployment = lab.get(DEPLOYMENT, f"{LAB_SERVICE}-deployment")
    assert SECRET_PLACEHOLDER not in json.dumps(deployment.to_json())
    assert _env(deployment)["AWS_SECRET_ACCESS_KEY"] == {
        "secretKeyRef": {"name": OBJECT_STORE_SECRET, "key": "AWS_SECRET_ACCESS_KEY"}
    }


def test_the_stack_outputs_each_services_url_and_model(lab: PlanWithOptions) -> None:
    assert lab.plan.outputs["inference_services"] == {
        "language/lm-small-api": {
            "url": "http://lm-small-api.language.svc.cluster.local",
            "models": "s3://lab-ml-models/language/lm-small",
        },
        "language/lm-nightly-api": {
            "url": "http://lm-nightly-api.language.svc.cluster.local",
            "models": "s3://lab-ml-models/language/lm-nightly",
        },
    }


@pytest.mark.parametrize(
    ("stack", "scheme", "registry", "gpus"),
    [
        ("aws-dev", "s3", "000000000000.dkr.ecr.us-east-1.amazonaws.com/ml", "1"),
        ("gcp-dev", "gs", "us-central1-docker.pkg.dev/acme-ml-dev/ml", "1"),
    ],
)
def test_cloud_services_use_the_clouds_buckets_registry_and_identity(
    stack: str, scheme: str, registry: str, gpus: str
) -> None:
    plan = run_plan(read_stack(stack))
    deployment = plan.get(DEPLOYMENT, "serving-ml-lm-tiny-api-deployment")
    container = _container(deployment)
    assert container["image"].startswith(f"{registry}/serve:")
    assert container["resources"]["limits"].get("nvidia.com/gpu") == gpus
    env = _env(deployment)
    assert env[contract.MODEL_URL] == f"{scheme}://acme-ml-dev-models/ml/lm-tiny"
    assert not any("secretKeyRef" in json.dumps(v) for v in env.values())
    assert (
        plan.outputs["inference_services"]["ml/lm-tiny-api"]["models"]
        == (plan.outputs["training_jobs"]["ml/lm-tiny"]["models"])
    )
    version = f"{plan.platform.cluster.kubernetes_version}.0"
    kubernetes_validate.validate(_manifest(deployment), version, strict=True)


def test_a_canary_is_a_second_deployment_behind_the_same_service(
    lab_config: dict[str, Any], make_stack: MakeStack
) -> None:
    config = _with_services(
        lab_config,
        {
            "name": "chat",
            "team": "language",
            "pool": "cpu",
            "model": "lm-small",
            "version": "step-00001000",
            "replicas": 3,
            "max_replicas": 5,
            "canary": {"version": "step-00002000"},
        },
    )
    plan = run_plan(make_stack(config, name="canary"))
    component = plan.get(SERVING, "serving-language-chat")
    deployments = {d.name: d for d in plan.of_type(DEPLOYMENT) if d.parent == component.urn}
    assert set(deployments) == {"serving-language-chat-deployment", "serving-language-chat-canary"}
    canary = deployments["serving-language-chat-canary"]
    assert canary.inputs["metadata"]["name"] == "chat-canary"
    assert _env(canary)[contract.MODEL_VERSION] == "step-00002000"
    service = plan.get(SERVICE, "serving-language-chat-service")
    assert service.inputs["spec"]["selector"] == {SERVICE_LABEL: "chat"}
    template_labels = [
        d.inputs["spec"]["template"]["metadata"]["labels"] for d in deployments.values()
    ]
    tracks = {labels[TRACK_LABEL] for labels in template_labels}
    assert tracks == {"stable", "canary"}
    hpa = plan.get(HPA, "serving-language-chat-autoscaler")
    assert (hpa.inputs["spec"]["minReplicas"], hpa.inputs["spec"]["maxReplicas"]) == (2, 4)


def test_pulumi_up_does_not_wait_for_serving_pods(
    lab_config: dict[str, Any], make_stack: MakeStack
) -> None:
    """Issue 16: serving pods need an image pushed and a model trained after the first `up`, so
    the provider must not await the Deployments' rollout or the Service's endpoints (it did, with
    a custom timeout of startup_timeout_s + 960 s, and the first `up` timed out)."""
    config = _with_services(
        lab_config,
        {"name": "chat", "team": "language", "pool": "cpu", "model": "lm-small"},
    )
    timeouts: dict[str, tuple[str, str]] = {}

    class TimeoutsMonitor(offline.RecordingMonitor):
        def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
            response = super().RegisterResource(request)
            timeouts[response.urn] = (request.customTimeouts.create, request.customTimeouts.update)
            return response

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(offline, "RecordingMonitor", TimeoutsMonitor)
        plan = offline.run_plan(make_stack(config, name="timeouts"))
    for type_, role, skipped in [
        (DEPLOYMENT, "deployment", True),
        (SERVICE, "service", True),
        (HPA, "autoscaler", False),
    ]:
        resource = plan.get(type_, f"serving-language-chat-{role}")
        annotations = resource.inputs["metadata"].get("annotations", {})
        assert (annotations.get(SKIP_AWAIT_ANNOTATION) == "true") is skipped, role
        assert timeouts[resource.urn] == ("", ""), role


def test_services_of_one_name_in_two_teams_are_two_components(
    lab_config: dict[str, Any], make_stack: MakeStack
) -> None:
    config = _with_services(
        lab_config,
        {"name": "chat", "team": "vision", "pool": "l40s"},
        {"name": "chat", "team": "language", "pool": "cpu"},
    )
    plan = run_plan(make_stack(config, name="two"))
    for team in ("vision", "language"):
        deployment = plan.get(DEPLOYMENT, f"serving-{team}-chat-deployment")
        assert deployment.parent == plan.get(SERVING, f"serving-{team}-chat").urn
        assert deployment.inputs["metadata"]["namespace"] == team
        assert _env(deployment)[contract.MODEL_URL] == f"s3://lab-ml-models/{team}/chat"
    assert set(plan.outputs["inference_services"]) == {"vision/chat", "language/chat"}


def test_without_services_nothing_is_served(
    lab_config: dict[str, Any], make_stack: MakeStack
) -> None:
    config = copy.deepcopy(lab_config)
    del config["workloads"]["inference_services"]
    plan = run_plan(make_stack(config, name="idle"))
    assert plan.of_type(SERVING) == []
    assert plan.of_type(DEPLOYMENT) == []
    assert plan.outputs["inference_services"] == {}


def test_the_policy_pack_passes_gpu_canary_and_load_balanced_services(
    lab_config: dict[str, Any], make_stack: MakeStack
) -> None:
    """Every rule on a stack with a GPU service with a canary behind an internal load
    balancer, and a CPU service open to other namespaces."""
    config = _with_services(
        lab_config,
        {
            "name": "vision-api",
            "team": "vision",
            "pool": "l40s",
            "version": "step-00000100",
            "replicas": 2,
            "canary": {"version": "step-00000200"},
            "internal_load_balancer": True,
        },
        {
            "name": "chat",
            "team": "language",
            "pool": "cpu",
            "model": "lm-small",
            "allow_from_namespaces": ["vision"],
            "autoscale_on": "requests_per_second",
            "target_requests_per_second": 20,
            "max_replicas": 4,
        },
    )
    config["teams"][0]["allow_load_balancers"] = True
    config["cluster"]["custom_metrics_adapter"] = True
    plan = run_plan(make_stack(config, name="served"))
    report = check_plan(plan)
    assert report.violations == [], [v.message for v in report.violations]
    lb = plan.get(SERVICE, "serving-vision-vision-api-service")
    assert lb.inputs["spec"]["type"] == "LoadBalancer"
    assert len(plan.of_type(NETWORK_POLICY)) == 3 * 2 + 2, "the teams' two, and one each"


def test_the_teams_aws_identity_reads_the_model_it_serves() -> None:
    """The pods run as the team's `workload` ServiceAccount, which EKS Pod Identity maps to the
    team's role; that role reads (and lists) under the team's prefix of the models bucket."""
    plan = run_plan(read_stack("aws-dev"))
    deployment = plan.get(DEPLOYMENT, "serving-ml-lm-tiny-api-deployment")
    pod = deployment.inputs["spec"]["template"]["spec"]
    association = plan.get(
        "aws:eks/podIdentityAssociation:PodIdentityAssociation", "aws-team-ml"
    ).inputs
    assert (association["namespace"], association["serviceAccount"]) == (
        deployment.inputs["metadata"]["namespace"],
        pod["serviceAccountName"],
    )
    url = _env(deployment)[contract.MODEL_URL]
    bucket, _, key = url.removeprefix("s3://").partition("/")
    policy = json.loads(
        plan.get("aws:iam/rolePolicy:RolePolicy", "aws-team-ml-policy").inputs["policy"]
    )

    def allowed(action: str, resource: str) -> bool:
        for statement in policy["Statement"]:
            actions = statement["Action"]
            resources = statement["Resource"]
            actions = [actions] if isinstance(actions, str) else actions
            resources = [resources] if isinstance(resources, str) else resources
            if action in actions and any(fnmatch.fnmatchcase(resource, r) for r in resources):
                return True
        return False

    for name in ("latest", "versions/step-00002000/params.npz"):
        assert allowed("s3:GetObject", f"arn:aws:s3:::{bucket}/{key}/{name}"), name
    assert allowed("s3:ListBucket", f"arn:aws:s3:::{bucket}")
    assert not allowed("s3:GetObject", f"arn:aws:s3:::{bucket}/other-team/model/latest")


def test_the_teams_gcp_identity_reads_the_model_it_serves() -> None:
    """The pods' ServiceAccount is bound to the team's Google service account, which may use
    objects of the models bucket only under the team's prefix."""
    plan = run_plan(read_stack("gcp-dev"))
    deployment = plan.get(DEPLOYMENT, "serving-ml-lm-tiny-api-deployment")
    account = plan.get("kubernetes:core/v1:ServiceAccount", "team-ml-service-account").inputs
    pod = deployment.inputs["spec"]["template"]["spec"]
    assert account["metadata"]["name"] == pod["serviceAccountName"]
    email = account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    grant = plan.get("gcp:storage/bucketIAMMember:BucketIAMMember", "gcp-team-ml-models-write")
    assert grant.inputs["member"] == f"serviceAccount:{email}"
    assert grant.inputs["role"] == "roles/storage.objectUser"
    (prefix,) = re.findall(r'startsWith\("([^"]+)"\)', grant.inputs["condition"]["expression"])
    bucket, _, key = _env(deployment)[contract.MODEL_URL].removeprefix("gs://").partition("/")
    assert grant.inputs["bucket"] == bucket
    assert f"projects/_/buckets/{bucket}/objects/{key}/latest".startswith(prefix)
