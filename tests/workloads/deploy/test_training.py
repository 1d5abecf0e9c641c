"""The TrainingJob component through the offline plan: what a training job in the stack config
becomes on each cloud, what it waits for, and how a change to it is applied."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from jobset_schema import validate_jobset
from tests_support import PlanWithOptions, wire_ints

from mlstack.components.kubernetes.addons import JOBSET
from mlstack.components.kubernetes.resources import without_await
from mlstack.stacks.names import JOBSET_NAMESPACE, OBJECT_STORE_SECRET
from mlstack.stacks.offline import SECRET_PLACEHOLDER, run_plan
from mlstack.stacks.plan import Plan, PlannedResource
from mlstack.stacks.stackfile import StackFile, read_stack
from mlstack.stacks.validate import load_platform
from mlstack.workloads import contract
from mlstack.workloads.deploy.jobset import jobset_manifest
from mlstack.workloads.deploy.settings import job_settings
from tests.workloads.deploy.placements import LAB_S3

MakeStack = Callable[..., StackFile]
TRAINING = "mlstack:workloads:TrainingJob"
JOBSET_KIND = "kubernetes:jobset.x-k8s.io/v1alpha2:JobSet"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
LAB_JOB = "training-language-lm-small"


def _container(jobset: PlannedResource) -> dict[str, Any]:
    pod = jobset.inputs["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    return pod["containers"][0]


def _env(jobset: PlannedResource) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in _container(jobset)["env"]}


def test_a_training_job_is_a_component_with_its_jobset(lab: PlanWithOptions) -> None:
    component = lab.get(TRAINING, LAB_JOB)
    (jobset,) = lab.children(component, JOBSET_KIND)
    assert jobset.name == f"{LAB_JOB}-jobset"
    assert jobset.custom
    assert jobset.inputs["metadata"] == {
        **jobset.inputs["metadata"],
        "name": "lm-small",
        "namespace": "language",
    }
    provider = lab.get("pulumi:providers:kubernetes", "onprem-cluster-provider")
    assert jobset.provider is not None and jobset.provider.startswith(provider.urn)


def test_the_component_declares_exactly_what_the_pure_builder_builds(
    lab: PlanWithOptions,
) -> None:
    platform = load_platform(read_stack("onprem-lab").platform)
    job = platform.workloads.training_jobs[0]
    team = next(t for t in platform.teams if t.name == job.team)
    placement = LAB_S3
    expected = jobset_manifest(job_settings(job, platform.pool(job.pool)), team, placement)
    jobset = lab.get(JOBSET_KIND, f"{LAB_JOB}-jobset")
    # Plus the annotation that keeps `pulumi up` from waiting for a training run.
    assert wire_ints(dict(jobset.inputs)) == without_await(expected)
    validate_jobset(expected, f"{platform.cluster.kubernetes_version}.0")


def test_the_jobset_waits_for_the_controllers_and_its_team(lab: PlanWithOptions) -> None:
    jobset = lab.get(JOBSET_KIND, f"{LAB_JOB}-jobset")
    deps = lab.opts(jobset).dependencies
    for type_, name in (
        (HELM_RELEASE, "jobset-release"),
        (HELM_RELEASE, "kueue-release"),
        ("kubernetes:core/v1:Namespace", "team-language-namespace"),
        ("kubernetes:core/v1:ServiceAccount", "team-language-service-account"),
        ("kubernetes:core/v1:Secret", "team-language-object-store-credentials"),
        ("kubernetes:kueue.x-k8s.io/v1beta2:LocalQueue", "team-language-local-queue"),
    ):
        assert lab.get(type_, name).urn in deps, name
    other_team = lab.get("kubernetes:core/v1:Namespace", "team-vision-namespace")
    assert other_team.urn not in deps


def test_a_changed_job_replaces_its_jobset_before_creating_the_new_one(
    lab: PlanWithOptions,
) -> None:
    opts = lab.opts(lab.get(JOBSET_KIND, f"{LAB_JOB}-jobset"))
    assert opts.replace_on_changes == ("spec",)
    assert opts.delete_before_replace is True
    assert not opts.protect


def test_kueue_starts_after_the_jobset_controller(lab: PlanWithOptions) -> None:
    kueue = lab.get("mlstack:kubernetes:Kueue", "kueue")
    assert lab.get(HELM_RELEASE, "jobset-release").urn in lab.opts(kueue).dependencies


def test_the_jobset_controller_is_the_pinned_oci_chart(lab: PlanWithOptions) -> None:
    release = lab.get(HELM_RELEASE, "jobset-release")
    assert release.parent == lab.get("mlstack:kubernetes:JobSetController", "jobset").urn
    inputs = release.inputs
    assert inputs["chart"] == JOBSET.chart == "oci://registry.k8s.io/jobset/charts/jobset"
    assert inputs["version"] == JOBSET.version == "0.12.0"
    assert "repositoryOpts" not in inputs
    assert inputs["namespace"] == JOBSET_NAMESPACE == "jobset-system"
    # mlstack declares the namespace at the chart's Pod Security level (Helm's createNamespace
    # left it unlabeled: issue 17, theme 4), and the release waits for it.
    assert not inputs.get("createNamespace")
    namespace = lab.get("kubernetes:core/v1:Namespace", "jobset-namespace")
    assert namespace.inputs["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == (
        "restricted"
    )
    assert namespace.urn in lab.opts(release).dependencies
    assert inputs["atomic"] is True


def test_no_secret_value_reaches_the_jobset(lab: PlanWithOptions) -> None:
    jobset = lab.get(JOBSET_KIND, f"{LAB_JOB}-jobset")
    assert SECRET_PLACEHOLDER not in json.dumps(jobset.to_json())
    env = _env(jobset)
    assert env["AWS_SECRET_ACCESS_KEY"] == {
        "secretKeyRef": {"name": OBJECT_STORE_SECRET, "key": "AWS_SECRET_ACCESS_KEY"}
    }


def test_the_stack_outputs_each_jobs_checkpoint_and_model_urls(lab: PlanWithOptions) -> None:
    assert lab.plan.outputs["training_jobs"] == {
        "language/lm-small": {
            "checkpoints": "s3://lab-ml-checkpoints/language/lm-small",
            "models": "s3://lab-ml-models/language/lm-small",
        }
    }


@pytest.mark.parametrize(
    ("stack", "scheme", "registry"),
    [
        ("aws-dev", "s3", "000000000000.dkr.ecr.us-east-1.amazonaws.com/ml"),
        ("gcp-dev", "gs", "us-central1-docker.pkg.dev/acme-ml-dev/ml"),
    ],
)
def test_cloud_jobs_use_the_clouds_buckets_registry_and_identity(
    stack: str, scheme: str, registry: str
) -> None:
    plan = run_plan(read_stack(stack))
    jobset = plan.get(JOBSET_KIND, "training-ml-lm-tiny-jobset")
    container = _container(jobset)
    assert container["image"].startswith(f"{registry}/train:")
    assert plan.outputs["registry_url"] == registry
    env = _env(jobset)
    assert env[contract.CHECKPOINT_URL] == f"{scheme}://acme-ml-dev-checkpoints/ml/lm-tiny"
    assert env[contract.DATA_URL] == f"{scheme}://acme-ml-dev-datasets/pystdlib"
    assert not any("secretKeyRef" in json.dumps(v) for v in env.values())
    version = f"{plan.platform.cluster.kubernetes_version}.0"
    validate_jobset(wire_ints(dict(jobset.inputs)), version)


def test_jobs_of_one_name_in_two_teams_are_two_jobsets(
    lab_config: dict[str, Any], make_stack: MakeStack
) -> None:
    config = copy.deepcopy(lab_config)
    config["workloads"] = {
        "training_jobs": [
            {"name": "pretrain", "team": "vision", "pool": "l40s"},
            {"name": "pretrain", "team": "language", "pool": "cpu", "num_hosts": 2},
        ]
    }
    plan = run_plan(make_stack(config, name="two"))
    for team in ("vision", "language"):
        jobset = plan.get(JOBSET_KIND, f"training-{team}-pretrain-jobset")
        assert jobset.parent == plan.get(TRAINING, f"training-{team}-pretrain").urn
        assert jobset.inputs["metadata"]["namespace"] == team
        assert _env(jobset)[contract.CHECKPOINT_URL] == f"s3://lab-ml-checkpoints/{team}/pretrain"


def test_without_training_jobs_the_controller_is_still_installed(
    lab_config: dict[str, Any], make_stack: MakeStack
) -> None:
    config = copy.deepcopy(lab_config)
    del config["workloads"]
    plan: Plan = run_plan(make_stack(config, name="idle"))
    assert plan.of_type(TRAINING) == []
    assert plan.of_type(JOBSET_KIND) == []
    assert plan.get(HELM_RELEASE, "jobset-release")
    assert plan.outputs["training_jobs"] == {}
