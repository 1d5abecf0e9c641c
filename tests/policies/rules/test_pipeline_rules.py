"""Pipeline rules (policies/rules/pipelines.py): CronJobs that keep starting, the pipeline
runner's RBAC, and queue labels on team Jobs and on pipeline steps (inside their ConfigMap).

The stacks are `test_stack_rules.lab()` (a compliant platform with teams vision, language and
spot) plus a pipeline of team language as the stack side declares it: the runner CronJob, its
ServiceAccount, Role and RoleBinding, and the ConfigMap with the pipeline spec.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from rule_args import PlanCopy, check, fails, policy_resource, stack_args, violations
from test_stack_rules import TYPES, Manifest, lab, obj, workload

from mlstack.policies.rules import pipelines
from mlstack.stacks.names import QUEUE_LABEL
from mlstack.workloads.pipeline.spec import Pipeline, Step

CRONJOB = "kubernetes:batch/v1:CronJob"
RBAC = "kubernetes:rbac.authorization.k8s.io/v1"
ALL_TYPES = {
    **TYPES,
    "ServiceAccount": "kubernetes:core/v1:ServiceAccount",
    "Role": f"{RBAC}:Role",
    "ClusterRole": f"{RBAC}:ClusterRole",
    "RoleBinding": f"{RBAC}:RoleBinding",
    "ClusterRoleBinding": f"{RBAC}:ClusterRoleBinding",
}
NS = "language"
RUNNER_RULES = [
    {
        "apiGroups": ["batch"],
        "resources": ["jobs", "jobs/status"],
        "verbs": ["create", "get", "list", "watch", "delete"],
    },
    {
        "apiGroups": ["jobset.x-k8s.io"],
        "resources": ["jobsets", "jobsets/status"],
        "verbs": ["create", "get", "list", "watch", "delete"],
    },
]


def cronjob(**spec: Any) -> Manifest:
    manifest = workload("CronJob", name="pipeline-nightly", namespace=NS)
    manifest["spec"]["jobTemplate"]["metadata"] = {"labels": {QUEUE_LABEL: "default"}}
    manifest["spec"].update(spec)
    return manifest


def step_job(queue: str | None = "default", kind: str = "Job") -> dict[str, Any]:
    manifest = workload(kind, name="step", namespace=NS, queue=queue)
    return json.loads(json.dumps(manifest))


def pipeline_configmap(*steps: Step) -> Manifest:
    pipeline = Pipeline(
        name="nightly",
        team=NS,
        model="lm",
        work_url="s3://c/language/pipelines/nightly",
        model_url="s3://m/language/lm",
        datasets_url="s3://d",
        image="harbor.lab.internal/ml/train:1.4.2",
        steps=steps
        or (
            Step("data", "prepare", manifest=step_job()),
            Step("train", "train", after=("data",), manifest=step_job(kind="JobSet")),
        ),
    )
    return obj("ConfigMap", "pipeline-nightly", NS, data={pipelines.PIPELINE_KEY: pipeline.dumps()})


def runner_rbac(rules: list[dict[str, Any]] | None = None) -> list[Manifest]:
    subject = {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": NS}
    return [
        obj("ServiceAccount", "pipeline-runner", NS),
        obj("Role", "pipeline-runner", NS, rules=rules or RUNNER_RULES),
        obj(
            "RoleBinding",
            "pipeline-runner",
            NS,
            roleRef={
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "pipeline-runner",
            },
            subjects=[subject],
        ),
    ]


def with_pipeline() -> list[Manifest]:
    return [
        *lab(),
        cronjob(startingDeadlineSeconds=3600, concurrencyPolicy="Forbid"),
        *runner_rbac(),
        pipeline_configmap(),
    ]


def resource(manifest: Manifest) -> Any:
    kind = manifest["kind"]
    metadata = manifest["metadata"]
    name = "-".join(filter(None, [metadata.get("namespace"), metadata["name"], kind.lower()]))
    return policy_resource(ALL_TYPES[kind], manifest, name)


def run(rule: Any, manifests: list[Manifest]) -> list[str]:
    return violations(rule, stack_args([resource(m) for m in manifests])).messages


@pytest.mark.parametrize("policy", pipelines.POLICIES[1:], ids=lambda p: p.name)
def test_a_compliant_stack_with_a_pipeline_passes(policy: Any) -> None:
    assert run(policy.validate, with_pipeline()) == []


@pytest.mark.parametrize("policy", pipelines.POLICIES[1:], ids=lambda p: p.name)
def test_an_empty_stack_passes(policy: Any) -> None:
    assert run(policy.validate, []) == []


# cronjobs-keep-starting


@pytest.mark.parametrize("policy", ["Forbid", "Replace"])
def test_a_cronjob_with_a_deadline_and_no_overlap_passes(policy: str) -> None:
    manifest = cronjob(startingDeadlineSeconds=3600, concurrencyPolicy=policy)
    assert check(pipelines.cronjobs_keep_starting, CRONJOB, manifest) == []


@fails("cronjobs-keep-starting")
def test_a_cronjob_without_a_deadline_is_reported() -> None:
    manifest = cronjob(concurrencyPolicy="Forbid")
    (message,) = check(pipelines.cronjobs_keep_starting, CRONJOB, manifest)
    assert "CronJob language/pipeline-nightly has no startingDeadlineSeconds" in message
    assert "after 100 missed starts" in message
    assert "set spec.startingDeadlineSeconds" in message


@fails("cronjobs-keep-starting")
def test_a_cronjob_that_may_overlap_is_reported_with_the_default_spelled_out() -> None:
    (message,) = check(
        pipelines.cronjobs_keep_starting, CRONJOB, cronjob(startingDeadlineSeconds=60)
    )
    assert "concurrencyPolicy Allow" in message
    assert "set spec.concurrencyPolicy to Forbid (or Replace)" in message
    both = check(pipelines.cronjobs_keep_starting, CRONJOB, cronjob(concurrencyPolicy="Allow"))
    assert len(both) == 2


def test_the_cronjob_rule_ignores_other_kinds() -> None:
    job = workload("Job", namespace=NS)
    assert check(pipelines.cronjobs_keep_starting, "kubernetes:batch/v1:Job", job) == []


# pipeline-runner-rbac-scoped


@fails("pipeline-runner-rbac-scoped")
def test_a_cluster_role_binding_to_the_runner_is_reported() -> None:
    binding = obj(
        "ClusterRoleBinding",
        "runner-everywhere",
        roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        subjects=[{"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": NS}],
    )
    (message,) = run(pipelines.pipeline_runner_rbac_scoped, [*with_pipeline(), binding])
    assert "ClusterRoleBinding runner-everywhere binds the pipeline-runner" in message
    assert "bind it with a RoleBinding in its own namespace" in message


@pytest.mark.parametrize(
    ("rule", "granted"),
    [
        ({"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["*"]}, "verbs '*'"),
        ({"apiGroups": ["*"], "resources": ["jobs"], "verbs": ["get"]}, "apiGroups '*'"),
        ({"apiGroups": ["batch"], "resources": ["*"], "verbs": ["get"]}, "resources '*'"),
        ({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}, "apiGroups ''"),
        ({"apiGroups": ["batch"], "resources": ["cronjobs"], "verbs": ["get"]}, "cronjobs"),
        ({"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["patch"]}, "verbs patch"),
        ({"apiGroups": ["batch"], "resources": ["jobsets"], "verbs": ["get"]}, "jobsets"),
    ],
)
@fails("pipeline-runner-rbac-scoped")
def test_a_runner_role_granting_more_than_its_steps_need_is_reported(
    rule: dict[str, Any], granted: str
) -> None:
    (message,) = run(pipelines.pipeline_runner_rbac_scoped, [*lab(), *runner_rbac([rule])])
    assert message.startswith("Role language/pipeline-runner (bound to language/pipeline-runner)")
    assert granted in message
    assert "grant only create, get, list, watch and delete on jobs" in message


def test_a_runner_bound_to_a_cluster_role_in_its_namespace_is_checked_by_its_rules() -> None:
    manifests = [*lab(), *runner_rbac()]
    binding = manifests[-1]
    binding["roleRef"]["kind"] = "ClusterRole"
    binding["roleRef"]["name"] = "runner"
    ok = obj("ClusterRole", "runner", rules=RUNNER_RULES)
    assert run(pipelines.pipeline_runner_rbac_scoped, [*manifests, ok]) == []
    wide = obj(
        "ClusterRole",
        "runner",
        rules=[{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}],
    )
    (message,) = run(pipelines.pipeline_runner_rbac_scoped, [*manifests, wide])
    assert message.startswith("ClusterRole runner (bound to language/pipeline-runner)")


def test_roles_bound_to_other_accounts_are_not_the_runners() -> None:
    manifests = [
        *lab(),
        *runner_rbac([{"apiGroups": ["apps"], "resources": ["*"], "verbs": ["*"]}]),
    ]
    manifests[-1]["subjects"][0]["name"] = "workload"
    assert run(pipelines.pipeline_runner_rbac_scoped, manifests) == []


# team-jobs-name-their-queue


@pytest.mark.parametrize("kind", ["Job", "JobSet", "CronJob"])
@fails("team-jobs-name-their-queue")
def test_a_team_job_without_a_queue_label_is_reported(kind: str) -> None:
    unqueued = workload(kind, name="adhoc", namespace="vision", queue=None)
    (message,) = run(pipelines.team_jobs_name_their_queue, [*lab(), unqueued])
    assert f"{kind} vision/adhoc in team namespace 'vision' names no Kueue queue" in message
    where = "spec.jobTemplate.metadata.labels" if kind == "CronJob" else "its labels"
    assert f"add {QUEUE_LABEL}: default to {where}" in message


def test_jobs_outside_team_namespaces_are_not_this_rules() -> None:
    system = workload("Job", name="setup", namespace="mlstack-system", queue=None)
    assert run(pipelines.team_jobs_name_their_queue, [*lab(), system]) == []


@fails("team-jobs-name-their-queue")
def test_a_pipeline_step_without_a_queue_label_is_reported_on_its_configmap() -> None:
    configmap = pipeline_configmap(Step("data", "prepare", manifest=step_job(queue=None)))
    manifests = [
        m
        for m in with_pipeline()
        if m["kind"] != "ConfigMap" or m["metadata"]["name"] != "pipeline-nightly"
    ]
    found = violations(
        pipelines.team_jobs_name_their_queue,
        stack_args([resource(m) for m in [*manifests, configmap]]),
    )
    (message,) = found.messages
    assert message.startswith("ConfigMap language/pipeline-nightly: step 'data''s Job names no")
    assert f"add {QUEUE_LABEL}: default to the step manifest's labels" in message
    assert found.urns == [resource(configmap).urn]


@fails("team-jobs-name-their-queue")
def test_a_pipeline_step_naming_a_missing_queue_is_reported() -> None:
    configmap = pipeline_configmap(Step("data", "train", manifest=step_job("gpu", "JobSet")))
    (message,) = run(pipelines.team_jobs_name_their_queue, [*lab(), configmap])
    assert "step 'data''s JobSet names queue 'gpu', but namespace 'language' has no such" in message
    assert "use one of: default" in message


@fails("team-jobs-name-their-queue")
def test_an_unreadable_pipeline_configmap_is_reported() -> None:
    broken = obj("ConfigMap", "pipeline-nightly", NS, data={pipelines.PIPELINE_KEY: "{not json"})
    (message,) = run(pipelines.team_jobs_name_their_queue, [*lab(), broken])
    assert "pipeline.json is not a readable pipeline" in message


def test_other_configmaps_are_not_pipelines() -> None:
    other = obj("ConfigMap", "settings", NS, data={"a.json": "{}"})
    assert run(pipelines.team_jobs_name_their_queue, [*lab(), copy.deepcopy(other)]) == []


# --- on the shipped lab stack's own pipeline objects (the stack side's shapes) ------------


def test_the_lab_stacks_pipeline_objects_pass(lab_plan: Any) -> None:
    plan = PlanCopy.of(lab_plan)
    for policy in pipelines.POLICIES[1:]:
        assert plan.run(policy.validate) == []
    cronjob = plan.get(CRONJOB, "pipeline-language-nightly-runner").inputs
    assert check(pipelines.cronjobs_keep_starting, CRONJOB, cronjob) == []


@fails("cronjobs-keep-starting")
def test_the_lab_runner_cronjob_without_its_deadline_is_reported(lab_plan: Any) -> None:
    cronjob = PlanCopy.of(lab_plan).get(CRONJOB, "pipeline-language-nightly-runner").inputs
    del cronjob["spec"]["startingDeadlineSeconds"]
    (message,) = check(pipelines.cronjobs_keep_starting, CRONJOB, cronjob)
    assert "has no startingDeadlineSeconds" in message


@fails("pipeline-runner-rbac-scoped")
def test_the_lab_runner_role_reading_pods_is_reported(lab_plan: Any) -> None:
    plan = PlanCopy.of(lab_plan)
    role = plan.get(ALL_TYPES["Role"], "pipelines-language-role").inputs
    role["rules"].append({"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]})
    (found,) = plan.run(pipelines.pipeline_runner_rbac_scoped)
    assert "grants apiGroups ''; resources pods/log" in found[0]


@fails("team-jobs-name-their-queue")
def test_a_lab_pipeline_step_without_its_queue_label_is_reported(lab_plan: Any) -> None:
    plan = PlanCopy.of(lab_plan)
    configmap = plan.get(ALL_TYPES["ConfigMap"], "pipeline-language-nightly-spec").inputs
    spec = json.loads(configmap["data"][pipelines.PIPELINE_KEY])
    step = spec["steps"][1]
    del step["manifest"]["metadata"]["labels"][QUEUE_LABEL]
    configmap["data"][pipelines.PIPELINE_KEY] = json.dumps(spec)
    (found,) = plan.run(pipelines.team_jobs_name_their_queue)
    assert f"step {step['name']!r}'s {step['manifest']['kind']} names no Kueue queue" in found[0]
