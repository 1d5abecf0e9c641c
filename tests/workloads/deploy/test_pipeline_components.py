"""What a pipeline of the stack config deploys, through the offline plan: the runner's
CronJob and ConfigMap, the team's pipeline-runner ServiceAccount and Role, each step's manifest
(strict-valid, the train steps' from the TrainingJob component's builder), and the runner's
storage identity on each cloud."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import kubernetes_validate
import pytest
from jobset_schema import validate_jobset
from tests_support import PlanWithOptions

from mlstack.stacks.names import OBJECT_STORE_SECRET, PIPELINE_RUNNER_SA, QUEUE_LABEL
from mlstack.stacks.offline import run_plan
from mlstack.stacks.pipelines import step_training_job
from mlstack.stacks.schema import TrainStep
from mlstack.stacks.stackfile import StackFile, read_stack
from mlstack.stacks.validate import load_platform
from mlstack.workloads.deploy.jobset import jobset_manifest
from mlstack.workloads.deploy.pipeline_manifests import SPEC_KEY
from mlstack.workloads.deploy.settings import job_settings
from mlstack.workloads.pipeline.spec import Pipeline as RuntimePipeline
from tests.workloads.deploy.placements import LAB_S3

MakeStack = Callable[..., StackFile]
CRONJOB = "kubernetes:batch/v1:CronJob"
CONFIGMAP = "kubernetes:core/v1:ConfigMap"
ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"
ACCOUNT = "kubernetes:core/v1:ServiceAccount"
LAB = "pipeline-language-nightly"


def _runner_pod(cronjob: Any) -> dict[str, Any]:
    return cronjob.inputs["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def _spec(lab: PlanWithOptions) -> RuntimePipeline:
    document = lab.get(CONFIGMAP, f"{LAB}-spec").inputs["data"][SPEC_KEY]
    return RuntimePipeline.loads(document, "pipeline.json")


def test_a_scheduled_pipeline_is_a_cronjob_kueue_admits(lab: PlanWithOptions) -> None:
    cronjob = lab.get(CRONJOB, f"{LAB}-runner")
    spec = cronjob.inputs["spec"]
    assert cronjob.inputs["metadata"]["name"] == "pipeline-nightly"
    assert cronjob.inputs["metadata"]["namespace"] == "language"
    assert (spec["schedule"], spec["timeZone"], spec["suspend"]) == (
        "0 2 * * *",
        "Europe/Berlin",
        False,
    )
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] == 3600
    assert spec["jobTemplate"]["metadata"]["labels"][QUEUE_LABEL] == "default"
    assert spec["jobTemplate"]["spec"]["backoffLimit"] == 0
    pod = _runner_pod(cronjob)
    assert pod["serviceAccountName"] == PIPELINE_RUNNER_SA
    assert pod["automountServiceAccountToken"] is True
    assert pod["nodeSelector"] == {"mlstack.dev/pool": "cpu"}
    (container,) = pod["containers"]
    assert container["command"] == [
        "python",
        "-m",
        "mlstack.workloads.pipeline.runner",
        "--spec",
        "/etc/mlstack/pipeline/pipeline.json",
    ]
    assert container["resources"]["requests"] == container["resources"]["limits"]
    assert {"name": "spec", "mountPath": "/etc/mlstack/pipeline", "readOnly": True} in container[
        "volumeMounts"
    ]
    assert {"name": "spec", "configMap": {"name": "pipeline-nightly"}} in pod["volumes"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    # On-prem the runner reaches the store with the team's object-store Secret, like the pods.
    secrets = {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    assert secrets == {OBJECT_STORE_SECRET}


def test_the_runner_may_only_run_jobs_and_jobsets_in_its_namespace(lab: PlanWithOptions) -> None:
    role = lab.get(ROLE, "pipelines-language-role")
    assert role.inputs["metadata"]["namespace"] == "language"
    verbs = ["create", "get", "list", "watch", "delete"]
    assert role.inputs["rules"] == [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": verbs},
        {"apiGroups": ["jobset.x-k8s.io"], "resources": ["jobsets"], "verbs": verbs},
    ]
    binding = lab.get(BINDING, "pipelines-language-rolebinding")
    assert binding.inputs["subjects"] == [
        {"kind": "ServiceAccount", "name": PIPELINE_RUNNER_SA, "namespace": "language"}
    ]
    assert binding.inputs["roleRef"]["kind"] == "Role"
    account = lab.get(ACCOUNT, "pipelines-language-serviceaccount")
    assert account.inputs["metadata"]["name"] == PIPELINE_RUNNER_SA


def test_the_configmap_holds_the_runtime_pipeline(lab: PlanWithOptions) -> None:
    spec = _spec(lab)
    assert spec.work_url == "s3://lab-ml-checkpoints/language/pipelines/nightly"
    assert spec.model_url == "s3://lab-ml-models/language/lm-nightly"
    assert spec.image.startswith("harbor.lab.internal/ml/train:")
    assert [s.name for s in spec.steps] == ["data", "small-a", "small-b", "eval", "pick", "ship"]
    assert spec.step("small-b").config["learning_rate"] == 1e-3


def test_every_step_manifest_is_strict_valid_and_queued(lab: PlanWithOptions) -> None:
    spec = _spec(lab)
    version = f"{load_platform(read_stack('onprem-lab').platform).cluster.kubernetes_version}.0"
    kinds = {}
    for step in spec.steps:
        manifest = step.manifest
        assert manifest is not None, step.name
        kinds[step.name] = manifest["kind"]
        assert manifest["metadata"]["labels"][QUEUE_LABEL] == "default"
        assert manifest["metadata"]["namespace"] == "language"
        if manifest["kind"] == "JobSet":
            validate_jobset(manifest, version)
        else:
            kubernetes_validate.validate(dict(manifest), version, strict=True)
            pod = manifest["spec"]["template"]["spec"]
            assert pod["serviceAccountName"] == "workload"
            assert pod["nodeSelector"] == {"mlstack.dev/pool": "cpu"}
    assert kinds == {
        "data": "Job",
        "small-a": "JobSet",
        "small-b": "JobSet",
        "eval": "Job",
        "pick": "Job",
        "ship": "Job",
    }


def test_a_train_step_is_the_jobset_the_training_job_builder_makes(lab: PlanWithOptions) -> None:
    platform = load_platform(read_stack("onprem-lab").platform)
    (pipeline,) = platform.workloads.pipelines
    step = pipeline.steps[1]
    assert isinstance(step, TrainStep)
    team = next(t for t in platform.teams if t.name == pipeline.team)
    job = step_training_job(pipeline, step)
    expected = jobset_manifest(job_settings(job, platform.pool(step.pool)), team, LAB_S3)
    manifest = dict(_spec(lab).step("small-a").manifest or {})
    assert manifest["spec"] == json.loads(json.dumps(expected["spec"]))
    assert manifest["metadata"]["name"] == "nightly-small-a"
    pod = manifest["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"


def test_the_stack_outputs_each_pipeline(lab: PlanWithOptions) -> None:
    assert lab.plan.outputs["pipelines"] == {
        "language/nightly": {
            "name": "nightly",
            "team": "language",
            "schedule": "0 2 * * *",
            "models": "s3://lab-ml-models/language/lm-nightly",
            "work": "s3://lab-ml-checkpoints/language/pipelines/nightly",
        }
    }


def test_a_pipeline_without_schedule_is_a_suspended_cronjob(
    lab_config: dict[str, Any], make_stack: MakeStack
) -> None:
    del lab_config["workloads"]["pipelines"][0]["schedule"]
    plan = run_plan(make_stack(lab_config))
    spec = plan.get(CRONJOB, f"{LAB}-runner").inputs["spec"]
    # Never started by the clock; `mlstack pipeline run` creates a Job from its template.
    assert spec["suspend"] is True
    assert plan.outputs["pipelines"]["language/nightly"]["schedule"] is None


def test_without_pipelines_nothing_of_them_is_declared(
    lab_config: dict[str, Any], make_stack: MakeStack
) -> None:
    del lab_config["workloads"]["pipelines"]
    plan = run_plan(make_stack(lab_config))
    assert not [r for r in plan.resources if "pipeline" in r.name]
    assert plan.outputs["pipelines"] == {}


def test_on_gcp_the_runner_acts_as_the_team_s_service_account() -> None:
    plan = run_plan(read_stack("gcp-dev"))
    members = {
        r.name: r.inputs["member"]
        for r in plan.of_type("gcp:serviceaccount/iAMMember:IAMMember")
        if r.name.startswith("gcp-team-ml-workload-identity")
    }
    assert members == {
        "gcp-team-ml-workload-identity": "serviceAccount:acme-ml-dev.svc.id.goog[ml/workload]",
        "gcp-team-ml-workload-identity-pipeline-runner": (
            "serviceAccount:acme-ml-dev.svc.id.goog[ml/pipeline-runner]"
        ),
    }
    workload = next(r for r in plan.of_type(ACCOUNT) if r.inputs["metadata"]["name"] == "workload")
    runner = plan.get(ACCOUNT, "pipelines-ml-serviceaccount")
    assert runner.inputs["metadata"]["annotations"] == workload.inputs["metadata"]["annotations"]


def test_on_aws_the_runner_is_associated_with_the_team_s_role(
    make_stack: MakeStack,
) -> None:
    stack = read_stack("aws-dev")
    platform = copy.deepcopy(stack.platform)
    gcp = read_stack("gcp-dev").platform["workloads"]["pipelines"][0]
    team = platform["teams"][0]["name"]
    pool = next(p for p in platform["node_pools"] if p["kind"] == "gpu")["name"]
    for step in gcp["steps"]:
        if step["kind"] == "train":
            step["pool"] = pool
    platform["workloads"]["pipelines"] = [gcp | {"team": team}]
    plan = run_plan(
        make_stack(
            platform,
            **{k.split(":")[1]: v for k, v in stack.config.items() if k != "mlstack:platform"},
        )
    )
    associations = {
        r.inputs["serviceAccount"]
        for r in plan.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")
        if r.inputs["namespace"] == team
    }
    assert associations == {"workload", PIPELINE_RUNNER_SA}
    role = next(r for r in plan.of_type("aws:iam/role:Role") if r.name == f"aws-team-{team}-role")
    trust = json.loads(role.inputs["assumeRolePolicy"])
    condition = trust["Statement"][0]["Condition"]["StringEquals"]
    assert condition["aws:RequestTag/kubernetes-service-account"] == [
        "workload",
        PIPELINE_RUNNER_SA,
    ]


@pytest.mark.parametrize("stack", ["aws-dev", "aws-prod", "gcp-prod"])
def test_a_team_without_pipelines_gets_no_runner_identity(stack: str) -> None:
    plan = run_plan(read_stack(stack))
    assert not [r for r in plan.resources if PIPELINE_RUNNER_SA in r.name]
