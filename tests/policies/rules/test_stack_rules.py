"""Stack rules (policies/rules/tenancy.py): relations between objects, on small stacks.

`lab()` is a compliant stack (a CPU pool, an on-demand and a spot GPU pool, two teams with their
guardrails and queues, the platform ConfigMap and a queued training Job); each failing case
breaks one thing in it.
"""

from __future__ import annotations

from typing import Any

import pytest
from pulumi_policy import PolicyResource
from rule_args import fails, policy_resource, stack_args, violations

from mlstack.components.kubernetes.system import REGISTRY_ENV
from mlstack.policies.rules import tenancy
from mlstack.stacks.names import (
    ALLOW_OVERCOMMIT_ANNOTATION,
    CAPACITY_LABEL,
    CHECKPOINTS_ANNOTATION,
    GPU_RESOURCE,
    GPU_TAINT_KEY,
    MAX_GPUS_ANNOTATION,
    PLATFORM_CONFIGMAP,
    POOL_KIND_LABEL,
    POOL_LABEL,
    POOL_TAINTS_ANNOTATION,
    QUEUE_LABEL,
    TEAM_LABEL,
)
from mlstack.stacks.names import SYSTEM_NAMESPACE as NAMESPACE

REGISTRY = "harbor.lab.internal/ml"
IMAGE = f"{REGISTRY}/train:1.4.2"
KUEUE = "kubernetes:kueue.x-k8s.io/v1beta2"
TYPES = {
    "Namespace": "kubernetes:core/v1:Namespace",
    "ResourceQuota": "kubernetes:core/v1:ResourceQuota",
    "LimitRange": "kubernetes:core/v1:LimitRange",
    "ConfigMap": "kubernetes:core/v1:ConfigMap",
    "NodePatch": "kubernetes:core/v1:NodePatch",
    "Pod": "kubernetes:core/v1:Pod",
    "Service": "kubernetes:core/v1:Service",
    "NetworkPolicy": "kubernetes:networking.k8s.io/v1:NetworkPolicy",
    "ResourceFlavor": f"{KUEUE}:ResourceFlavor",
    "ClusterQueue": f"{KUEUE}:ClusterQueue",
    "LocalQueue": f"{KUEUE}:LocalQueue",
    "Deployment": "kubernetes:apps/v1:Deployment",
    "Job": "kubernetes:batch/v1:Job",
    "CronJob": "kubernetes:batch/v1:CronJob",
    "JobSet": "kubernetes:jobset.x-k8s.io/v1alpha2:JobSet",
}
GPU_TAINT = {"key": GPU_TAINT_KEY, "value": "present", "effect": "NoSchedule"}

Manifest = dict[str, Any]


def obj(
    kind: str,
    name: str,
    namespace: str | None = None,
    labels: dict | None = None,
    annotations: dict | None = None,
    **body: Any,
) -> Manifest:
    metadata: dict[str, Any] = {"name": name, "labels": dict(labels or {})}
    if namespace:
        metadata["namespace"] = namespace
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"apiVersion": "v1", "kind": kind, "metadata": metadata, **body}


def pool_node(node: str, pool: str, kind: str = "gpu", capacity: str = "on-demand") -> Manifest:
    labels = {POOL_LABEL: pool, POOL_KIND_LABEL: kind, CAPACITY_LABEL: capacity}
    taints = {POOL_TAINTS_ANNOTATION: "{key}={value}:{effect}".format(**GPU_TAINT)}
    return obj("NodePatch", node, labels=labels, annotations=taints if kind == "gpu" else None)


def flavor(pool: str, max_gpus: int | None = None, capacity: str = "on-demand") -> Manifest:
    annotations = {MAX_GPUS_ANNOTATION: str(max_gpus)} if max_gpus is not None else None
    node_labels = {POOL_LABEL: pool, CAPACITY_LABEL: capacity}
    return obj("ResourceFlavor", pool, annotations=annotations, spec={"nodeLabels": node_labels})


def cluster_queue(
    team: str, gpus: dict[str, Any], overcommit: bool = False, cohort: str | None = None
) -> Manifest:
    flavors = [
        {
            "name": pool,
            "resources": [
                {"name": "cpu", "nominalQuota": "64"},
                {"name": "memory", "nominalQuota": "512Gi"},
                {"name": GPU_RESOURCE, "nominalQuota": n},
            ],
        }
        for pool, n in gpus.items()
    ]
    annotations = {ALLOW_OVERCOMMIT_ANNOTATION: "true"} if overcommit else None
    spec: dict[str, Any] = {
        "resourceGroups": [
            {"coveredResources": ["cpu", "memory", GPU_RESOURCE], "flavors": flavors}
        ]
    }
    if cohort:
        spec["cohortName"] = cohort
    return obj("ClusterQueue", team, labels={TEAM_LABEL: team}, annotations=annotations, spec=spec)


def team(name: str, gpus: dict[str, Any], overcommit: bool = False) -> list[Manifest]:
    """A team namespace with its quota, limit range, default-deny policy and queues."""
    hard = {"requests.cpu": "64", "requests.memory": "512Gi", f"requests.{GPU_RESOURCE}": "16"}
    limits = [
        {"type": "Container", "default": {"cpu": "2"}, "defaultRequest": {"cpu": "250m"}},
    ]
    deny = {"podSelector": {}, "policyTypes": ["Ingress"]}
    return [
        obj("Namespace", name, labels={TEAM_LABEL: name}),
        obj("ResourceQuota", "quota", name, spec={"hard": hard}),
        obj("LimitRange", "defaults", name, spec={"limits": limits}),
        obj("NetworkPolicy", "default-deny-ingress", name, spec=deny),
        obj("LocalQueue", "default", name, spec={"clusterQueue": name}),
        cluster_queue(name, gpus, overcommit),
    ]


def workload(
    kind: str = "Job",
    *,
    name: str = "train",
    namespace: str = "vision",
    queue: str | None = "default",
    annotations: dict | None = None,
    image: str = IMAGE,
    **spec_fields: Any,
) -> Manifest:
    spec = {
        "containers": [{"name": "train", "image": image}],
        "tolerations": [{"key": GPU_TAINT_KEY, "operator": "Exists"}],
        **spec_fields,
    }
    labels = {QUEUE_LABEL: queue} if queue else {}
    template = {"spec": spec}
    if kind == "JobSet":
        body: dict[str, Any] = {
            "spec": {
                "replicatedJobs": [
                    {"name": "workers", "template": {"spec": {"template": template}}}
                ]
            }
        }
    elif kind == "CronJob":
        job = {"spec": {"template": template}}
        body = {"spec": {"schedule": "@daily", "jobTemplate": job}}
    elif kind == "Pod":
        body = {"spec": spec}
    else:
        body = {"spec": {"template": template}}
    return obj(kind, name, namespace, labels=labels, annotations=annotations, **body)


def platform_configmap(registry: str = REGISTRY) -> Manifest:
    return obj("ConfigMap", PLATFORM_CONFIGMAP, NAMESPACE, data={REGISTRY_ENV: registry})


def lab() -> list[Manifest]:
    return [
        pool_node("cpu-01", "cpu", "cpu"),
        pool_node("dgx-01", "a100"),
        pool_node("dgx-02", "a100"),
        pool_node("spot-01", "a100-spot", capacity="spot"),
        flavor("cpu"),
        flavor("a100", max_gpus=16),
        flavor("a100-spot", max_gpus=8, capacity="spot"),
        *team("vision", {"cpu": 0, "a100": 8}),
        *team("language", {"cpu": 0, "a100": 8}),
        *team("spot", {"a100-spot": 8}),
        platform_configmap(),
        workload(),
    ]


def resource(manifest: Manifest) -> PolicyResource:
    kind = manifest["kind"]
    metadata = manifest["metadata"]
    name = "-".join(filter(None, [metadata.get("namespace"), metadata["name"], kind.lower()]))
    return policy_resource(TYPES[kind], manifest, name)


def run(rule: Any, manifests: list[Manifest], config: dict | None = None) -> list[str]:
    return violations(rule, stack_args([resource(m) for m in manifests], config)).messages


def without(manifests: list[Manifest], kind: str, namespace: str | None = None) -> list[Manifest]:
    return [
        m
        for m in manifests
        if not (m["kind"] == kind and m["metadata"].get("namespace") == namespace)
    ]


@pytest.mark.parametrize("policy", tenancy.POLICIES, ids=lambda p: p.name)
def test_a_compliant_stack_passes(policy: Any) -> None:
    assert run(policy.validate, lab()) == []


@pytest.mark.parametrize("policy", tenancy.POLICIES, ids=lambda p: p.name)
def test_an_empty_stack_passes(policy: Any) -> None:
    assert run(policy.validate, []) == []


# team-namespaces-have-quotas


@fails("team-namespaces-have-quotas")
def test_a_team_namespace_without_a_quota_is_reported_on_the_namespace() -> None:
    manifests = without(lab(), "ResourceQuota", "vision")
    found = violations(
        tenancy.team_namespaces_have_quotas, stack_args([resource(m) for m in manifests])
    )
    [message] = found.messages
    assert message.startswith(
        "team namespace 'vision' has no ResourceQuota on requests.cpu, requests.memory, "
        f"requests.{GPU_RESOURCE}, so one team can take the whole cluster"
    )
    assert "declare the team in platform.teams" in message
    assert found.urns == [
        "urn:pulumi:test::mlstack::kubernetes:core/v1:Namespace::vision-namespace"
    ]


@fails("team-namespaces-have-quotas")
def test_a_quota_without_gpus_or_in_another_namespace_does_not_count() -> None:
    manifests = [
        *without(lab(), "ResourceQuota", "vision"),
        obj("ResourceQuota", "cpu", "vision", spec={"hard": {"requests.cpu": "8"}}),
        obj("ResourceQuota", "mem", "vision", spec={"hard": {"requests.memory": "8Gi"}}),
        obj("ResourceQuota", "gpu", "other", spec={"hard": {f"requests.{GPU_RESOURCE}": "8"}}),
    ]
    [message] = run(tenancy.team_namespaces_have_quotas, manifests)
    assert f"'vision' has no ResourceQuota on requests.{GPU_RESOURCE}," in message


def test_namespaces_without_a_team_label_need_no_quota() -> None:
    manifests = [*lab(), obj("Namespace", "monitoring")]
    assert run(tenancy.team_namespaces_have_quotas, manifests) == []


# team-namespaces-have-limit-ranges


@fails("team-namespaces-have-limit-ranges")
@pytest.mark.parametrize(
    "limits",
    [
        None,
        [{"type": "Pod", "max": {"cpu": "8"}}],
        [{"type": "Container", "default": {"cpu": "2"}}],
        [{"type": "Container", "defaultRequest": {"cpu": "1"}, "default": {}}],
    ],
)
def test_a_team_namespace_without_container_defaults_is_reported(limits: list | None) -> None:
    manifests = without(lab(), "LimitRange", "language")
    if limits is not None:
        manifests.append(obj("LimitRange", "partial", "language", spec={"limits": limits}))
    [message] = run(tenancy.team_namespaces_have_limit_ranges, manifests)
    assert message.startswith("team namespace 'language' has no LimitRange with container defaults")
    assert "pods without requests escape the quota" in message


# team-namespaces-deny-ingress-by-default


@fails("team-namespaces-deny-ingress-by-default")
@pytest.mark.parametrize(
    "spec",
    [
        None,
        {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"]},
        {
            "podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists"}]},
            "policyTypes": ["Ingress"],
        },
        {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": []}]},
        {"podSelector": {}, "policyTypes": ["Egress"]},
    ],
)
def test_a_team_namespace_without_default_deny_ingress_is_reported(spec: dict | None) -> None:
    manifests = without(lab(), "NetworkPolicy", "vision")
    if spec is not None:
        manifests.append(obj("NetworkPolicy", "partial", "vision", spec=spec))
    [message] = run(tenancy.team_namespaces_deny_ingress_by_default, manifests)
    assert message.startswith("team namespace 'vision' has no default-deny ingress NetworkPolicy")
    assert "podSelector: {}, policyTypes: [Ingress], no ingress rules" in message


def test_default_deny_with_egress_too_passes() -> None:
    deny = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": []}
    manifests = [*without(lab(), "NetworkPolicy", "vision")]
    manifests.append(obj("NetworkPolicy", "deny-all", "vision", spec=deny))
    assert run(tenancy.team_namespaces_deny_ingress_by_default, manifests) == []


# team-ingress-not-open-to-all

_EVERY_NAMESPACE = {
    "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "Exists"}]
}


@fails("team-ingress-not-open-to-all")
@pytest.mark.parametrize(
    ("ingress", "how"),
    [
        ([{}], "without `from`"),
        ([{"from": [], "ports": [{"port": 8080}]}], "without `from`"),
        ([{"from": [{"namespaceSelector": {}}]}], "matches every namespace"),
        (
            [{"from": [{"namespaceSelector": _EVERY_NAMESPACE, "podSelector": {}}]}],
            "every namespace",
        ),
        ([{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}], "ipBlock 0.0.0.0/0"),
        (
            [{"from": [{"podSelector": {}}]}, {"from": [{"ipBlock": {"cidr": "::/0"}}]}],
            "ingress[1]",
        ),
    ],
)
def test_a_policy_opening_a_team_namespace_to_everyone_is_reported(
    ingress: list[dict], how: str
) -> None:
    manifests = lab()
    spec = {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": ingress}
    manifests.append(obj("NetworkPolicy", "allow-all", "vision", spec=spec))
    [message] = run(tenancy.team_ingress_not_open_to_all, manifests)
    assert message.startswith("NetworkPolicy vision/allow-all opens every pod of team namespace")
    assert how in message
    assert "undoing its default deny" in message


@pytest.mark.parametrize(
    "spec",
    [
        # Named pods from anywhere: a served port behind an internal load balancer.
        {"podSelector": {"matchLabels": {"app": "chat"}}, "ingress": [{"from": []}]},
        # Every pod, but from named namespaces or pods.
        {
            "podSelector": {},
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                            }
                        }
                    ]
                },
                {"from": [{"podSelector": {}}]},
                {
                    "from": [
                        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "probe"}}}
                    ]
                },
                {"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]},
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchExpressions": [{"key": "team", "operator": "Exists"}]
                            }
                        }
                    ]
                },
            ],
        },
        # Egress only.
        {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]},
    ],
)
def test_policies_that_name_their_sources_pass(spec: dict) -> None:
    manifests = [*lab(), obj("NetworkPolicy", "narrow", "vision", spec=spec)]
    assert run(tenancy.team_ingress_not_open_to_all, manifests) == []


def test_a_wide_policy_outside_team_namespaces_is_not_this_rules_concern() -> None:
    spec = {"podSelector": {}, "ingress": [{}]}
    manifests = [*lab(), obj("NetworkPolicy", "open", NAMESPACE, spec=spec)]
    assert run(tenancy.team_ingress_not_open_to_all, manifests) == []


# services-within-namespace-quota


def _svc(kind: str, name: str = "demo", namespace: str = "vision", **spec: Any) -> Manifest:
    return obj("Service", name, namespace, spec={"type": kind, "ports": [{"port": 80}], **spec})


def _closed_quota(namespace: str = "vision") -> Manifest:
    hard = {"services.loadbalancers": "0", "services.nodeports": "0", "requests.cpu": "64"}
    return obj("ResourceQuota", "closed", namespace, spec={"hard": hard})


@fails("services-within-namespace-quota")
@pytest.mark.parametrize(
    ("service", "key"),
    [
        (_svc("LoadBalancer"), "services.loadbalancers"),
        (_svc("NodePort"), "services.nodeports"),
        (_svc("LoadBalancer", allocateLoadBalancerNodePorts=False), "services.loadbalancers"),
    ],
)
def test_a_service_the_quota_would_refuse_is_reported(service: Manifest, key: str) -> None:
    [message] = run(tenancy.services_within_namespace_quota, [*lab(), _closed_quota(), service])
    assert f"namespace vision's ResourceQuota allows 0 {key}" in message
    assert "refuse it at apply" in message
    assert "allow_load_balancers: true on team vision" in message


def test_services_within_the_quota_pass() -> None:
    open_quota = obj(
        "ResourceQuota", "q", "language", spec={"hard": {"services.loadbalancers": "1"}}
    )
    manifests = [
        *lab(),
        _closed_quota(),
        _svc("ClusterIP"),
        open_quota,
        _svc("LoadBalancer", namespace="language"),
        _svc("LoadBalancer", name="other", namespace=NAMESPACE),  # no quota there
    ]
    assert run(tenancy.services_within_namespace_quota, manifests) == []


def test_the_second_load_balancer_over_a_quota_of_one_is_reported() -> None:
    quota = obj("ResourceQuota", "q", "vision", spec={"hard": {"services.loadbalancers": "1"}})
    manifests = [*lab(), quota, _svc("LoadBalancer", "a"), _svc("LoadBalancer", "b")]
    [message] = run(tenancy.services_within_namespace_quota, manifests)
    assert message.startswith("Service vision/b is a LoadBalancer Service")


# gpu-pools-have-flavors


@fails("gpu-pools-have-flavors")
def test_a_gpu_pool_without_a_flavor_is_reported_once() -> None:
    manifests = [*lab(), pool_node("l40s-01", "l40s"), pool_node("l40s-02", "l40s")]
    found = violations(tenancy.gpu_pools_have_flavors, stack_args([resource(m) for m in manifests]))
    [message] = found.messages
    assert message.startswith("GPU pool 'l40s' has no Kueue ResourceFlavor")
    assert f"add a flavor with nodeLabels {{{POOL_LABEL}: l40s}}" in message
    assert found.urns == [
        "urn:pulumi:test::mlstack::kubernetes:core/v1:NodePatch::l40s-01-nodepatch"
    ]


def test_cpu_pools_need_no_flavor() -> None:
    manifests = [*lab(), pool_node("cpu-99", "batch-cpu", "cpu")]
    assert run(tenancy.gpu_pools_have_flavors, manifests) == []


# workloads-use-existing-queues


@fails("workloads-use-existing-queues")
def test_a_workload_naming_a_missing_local_queue_lists_the_existing_ones() -> None:
    manifests = [
        *lab(),
        obj("LocalQueue", "batch", "vision", spec={"clusterQueue": "vision"}),
        workload(name="eval", queue="gpu"),
    ]
    [message] = run(tenancy.workloads_use_existing_queues, manifests)
    assert message == (
        "Job vision/eval names queue 'gpu', but namespace 'vision' has no such LocalQueue, so "
        "it would wait forever; use one of: batch, default"
    )


@fails("workloads-use-existing-queues")
def test_a_queue_in_a_namespace_without_queues_says_to_declare_the_team() -> None:
    manifests = [*lab(), workload("JobSet", namespace="scratch")]
    [message] = run(tenancy.workloads_use_existing_queues, manifests)
    assert "JobSet scratch/train names queue 'default', but namespace 'scratch'" in message
    assert message.endswith("use one of: none (declare the team)")


@fails("workloads-use-existing-queues")
def test_a_local_queue_bound_to_a_missing_cluster_queue_is_reported() -> None:
    manifests = [
        *without(lab(), "LocalQueue", "vision"),
        obj("LocalQueue", "default", "vision", spec={"clusterQueue": "vision-old"}),
    ]
    [message] = run(tenancy.workloads_use_existing_queues, manifests)
    assert message.startswith(
        "Job vision/train uses LocalQueue vision/default, whose ClusterQueue 'vision-old' does "
        "not exist"
    )


def test_unqueued_workloads_pass_and_pod_template_labels_are_not_queues() -> None:
    # Kueue does not read a queue name from pod template labels, so neither does the rule.
    templated = workload("Deployment", name="serve", queue=None)
    templated["spec"]["template"]["metadata"] = {"labels": {QUEUE_LABEL: "missing"}}
    manifests = [*lab(), workload(name="adhoc", queue=None), templated]
    assert run(tenancy.workloads_use_existing_queues, manifests) == []


@fails("workloads-use-existing-queues")
def test_a_cronjob_naming_a_missing_queue_in_its_job_template_is_reported() -> None:
    cron = workload("CronJob", name="nightly", queue=None)
    cron["spec"]["jobTemplate"]["metadata"] = {"labels": {QUEUE_LABEL: "missing"}}
    [message] = run(tenancy.workloads_use_existing_queues, [*lab(), cron])
    assert message.startswith("CronJob vision/nightly names queue 'missing'")
    cron["spec"]["jobTemplate"]["metadata"]["labels"][QUEUE_LABEL] = "default"
    assert run(tenancy.workloads_use_existing_queues, [*lab(), cron]) == []


# spot-capacity-only-for-checkpointing-jobs


@fails("spot-capacity-only-for-checkpointing-jobs")
@pytest.mark.parametrize("kind", ["Job", "JobSet", "Pod"])
def test_batch_work_queued_to_a_spot_flavor_without_checkpoints_is_reported(kind: str) -> None:
    manifests = [*lab(), workload(kind, namespace="spot")]
    found = violations(
        tenancy.spot_capacity_only_for_checkpointing_jobs,
        stack_args([resource(m) for m in manifests]),
    )
    [message] = found.messages
    assert message.startswith(
        f"{kind} spot/train may run on spot capacity (its queue admits to spot flavors "
        "a100-spot) but does not checkpoint"
    )
    assert f"annotate it {CHECKPOINTS_ANNOTATION}: 'true'" in message
    assert found.urns == [f"urn:pulumi:test::mlstack::{TYPES[kind]}::spot-train-{kind.lower()}"]


@fails("spot-capacity-only-for-checkpointing-jobs")
@pytest.mark.parametrize(
    "selector", [{CAPACITY_LABEL: "spot"}, {POOL_LABEL: "a100-spot"}], ids=["capacity", "pool"]
)
def test_batch_work_pinned_to_spot_nodes_by_node_selector_is_reported(selector: dict) -> None:
    job = workload(name="pinned", queue=None, nodeSelector=selector)
    [message] = run(tenancy.spot_capacity_only_for_checkpointing_jobs, [*lab(), job])
    assert "Job vision/pinned may run on spot capacity (its nodeSelector picks spot nodes)" in (
        message
    )


@fails("spot-capacity-only-for-checkpointing-jobs")
def test_a_flavor_labelled_spot_is_spot_even_without_nodes_in_the_plan() -> None:
    manifests = [
        *lab(),
        flavor("preemptible", capacity="spot"),
        *team("research", {"preemptible": 4}),
        workload(namespace="research"),
    ]
    [message] = run(tenancy.spot_capacity_only_for_checkpointing_jobs, manifests)
    assert "its queue admits to spot flavors preemptible" in message


def test_checkpointing_jobs_may_use_spot() -> None:
    marked = {CHECKPOINTS_ANNOTATION: "true"}
    manifests = [
        *lab(),
        workload("JobSet", namespace="spot", annotations=marked),
        workload(name="pinned", annotations=marked, nodeSelector={CAPACITY_LABEL: "spot"}),
    ]
    assert run(tenancy.spot_capacity_only_for_checkpointing_jobs, manifests) == []


def test_serving_on_spot_and_on_demand_batch_work_pass() -> None:
    manifests = [
        *lab(),
        workload("Deployment", name="serve", namespace="spot"),
        workload(name="pinned", queue=None, nodeSelector={POOL_LABEL: "a100"}),
    ]
    assert run(tenancy.spot_capacity_only_for_checkpointing_jobs, manifests) == []


@fails("spot-capacity-only-for-checkpointing-jobs")
def test_the_checkpoint_annotation_comes_from_config() -> None:
    config = {"checkpointAnnotation": "lab.internal/resumable"}
    ours = workload(namespace="spot", annotations={"lab.internal/resumable": "true"})
    assert run(tenancy.spot_capacity_only_for_checkpointing_jobs, [*lab(), ours], config) == []
    default = workload(namespace="spot", annotations={CHECKPOINTS_ANNOTATION: "true"})
    [message] = run(tenancy.spot_capacity_only_for_checkpointing_jobs, [*lab(), default], config)
    assert "annotate it lab.internal/resumable: 'true'" in message


# gpu-quota-within-pool-capacity


@fails("gpu-quota-within-pool-capacity")
def test_quotas_above_a_pools_capacity_are_reported_on_its_flavor() -> None:
    manifests = [
        *without(lab(), "ClusterQueue"),
        cluster_queue("vision", {"cpu": 0, "a100": 8}),
        cluster_queue("language", {"a100": "12"}),
        cluster_queue("spot", {"a100-spot": 8}),
    ]
    found = violations(
        tenancy.gpu_quota_within_pool_capacity, stack_args([resource(m) for m in manifests])
    )
    assert found.messages == [
        "GPU quotas on pool 'a100' add up to 20 (language 12, vision 8) but the pool has at most "
        "16 GPUs, so admitted jobs would wait for nodes that never come; lower the quotas by 4, "
        "raise the pool's max_nodes, or put these teams in one cohort with allow_overcommit: true"
    ]
    assert found.urns == [
        f"urn:pulumi:test::mlstack::{TYPES['ResourceFlavor']}::a100-resourceflavor"
    ]


def over(vision: dict[str, Any], language: dict[str, Any]) -> list[Manifest]:
    """The lab with vision and language holding 10 GPUs each on the 16-GPU a100 pool."""
    return [
        *without(lab(), "ClusterQueue"),
        cluster_queue("vision", {"a100": 10}, **vision),
        cluster_queue("language", {"a100": 10}, **language),
        cluster_queue("spot", {"a100-spot": 8}),
    ]


@fails("gpu-quota-within-pool-capacity")
@pytest.mark.parametrize(
    ("vision", "language"),
    [
        ({"overcommit": True, "cohort": "lab"}, {"cohort": "lab"}),
        ({"overcommit": True}, {"overcommit": True}),
        ({"overcommit": True, "cohort": "lab"}, {"overcommit": True, "cohort": "other"}),
    ],
    ids=["one-queue-does-not-allow", "no-cohort", "two-cohorts"],
)
def test_overcommit_needs_every_queue_to_allow_it_in_one_cohort(
    vision: dict[str, Any], language: dict[str, Any]
) -> None:
    [message] = run(tenancy.gpu_quota_within_pool_capacity, over(vision, language))
    assert "GPU quotas on pool 'a100' add up to 20 (language 10, vision 10)" in message


def test_overcommit_allowed_by_every_queue_of_one_cohort_passes() -> None:
    allowed = {"overcommit": True, "cohort": "lab"}
    manifests = [*over(allowed, allowed), cluster_queue("idle", {"a100": 0})]
    assert run(tenancy.gpu_quota_within_pool_capacity, manifests) == []


def test_flavors_without_a_known_capacity_are_not_checked() -> None:
    manifests = [
        *without(lab(), "ClusterQueue"),
        flavor("byo"),
        cluster_queue("vision", {"byo": 1000}),
    ]
    assert run(tenancy.gpu_quota_within_pool_capacity, manifests) == []


# images-from-platform-registry


@fails("images-from-platform-registry")
@pytest.mark.parametrize(
    "image", ["docker.io/library/python:3.11", "python:3.11", "harbor.lab.internal/ml-evil/x:1"]
)
def test_an_image_from_elsewhere_is_reported(image: str) -> None:
    manifests = [*lab(), workload(name="eval", image=image)]
    found = violations(
        tenancy.images_from_platform_registry, stack_args([resource(m) for m in manifests])
    )
    [message] = found.messages
    assert message.startswith(
        f"Job vision/eval: container 'train' pulls {image!r} from outside the platform registry "
        f"{REGISTRY}"
    )
    assert "add its registry to allowedRegistries" in message
    assert found.urns == ["urn:pulumi:test::mlstack::kubernetes:batch/v1:Job::vision-eval-job"]


@fails("images-from-platform-registry")
def test_an_init_container_of_a_jobset_is_checked() -> None:
    jobset = workload("JobSet", name="dist")
    pod = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    pod["initContainers"] = [{"name": "fetch", "image": "busybox:1.36"}]
    [message] = run(tenancy.images_from_platform_registry, [*lab(), jobset])
    assert message.startswith(
        "JobSet vision/dist, replicatedJob workers: container 'fetch' pulls 'busybox:1.36'"
    )


def test_allowed_registries_config_adds_prefixes() -> None:
    manifests = [*lab(), workload(name="eval", image="docker.io/library/python:3.11")]
    config = {"allowedRegistries": ["docker.io/library/"]}
    assert run(tenancy.images_from_platform_registry, manifests, config) == []


def test_without_the_platform_configmap_there_is_no_registry_to_enforce() -> None:
    manifests = [*without(lab(), "ConfigMap", NAMESPACE), workload(image="python:3.11")]
    assert run(tenancy.images_from_platform_registry, manifests) == []
    elsewhere = obj("ConfigMap", PLATFORM_CONFIGMAP, "default", data={REGISTRY_ENV: REGISTRY})
    assert run(tenancy.images_from_platform_registry, [*manifests, elsewhere]) == []


# Kubernetes' own shorthands and defaults count as what they mean.


def test_a_bare_cpu_and_memory_quota_counts_as_the_requests_quota() -> None:
    quota = obj(
        "ResourceQuota",
        "short",
        "vision",
        spec={"hard": {"cpu": "8", "memory": "32Gi", f"requests.{GPU_RESOURCE}": "8"}},
    )
    manifests = [*without(lab(), "ResourceQuota", "vision"), quota]
    assert run(tenancy.team_namespaces_have_quotas, manifests) == []


def test_default_deny_without_policy_types_is_an_ingress_policy() -> None:
    manifests = [
        *without(lab(), "NetworkPolicy", "vision"),
        obj("NetworkPolicy", "deny", "vision", spec={"podSelector": {}}),
    ]
    assert run(tenancy.team_namespaces_deny_ingress_by_default, manifests) == []


@pytest.mark.parametrize(
    ("ref", "spelled_out"),
    [
        ("python:3.11", "docker.io/library/python:3.11"),
        ("bitnami/redis:7", "docker.io/bitnami/redis:7"),
        ("localhost/img:1", "localhost/img:1"),
        ("registry:5000/img:1", "registry:5000/img:1"),
        ("harbor.lab.internal/ml/train:1", "harbor.lab.internal/ml/train:1"),
    ],
)
def test_image_references_are_spelled_out_as_the_runtime_does(ref: str, spelled_out: str) -> None:
    assert tenancy.image_repository(ref) == spelled_out


def test_an_allowed_docker_hub_covers_short_image_names() -> None:
    manifests = [*lab(), workload(name="eval", image="python:3.11")]
    assert (
        run(tenancy.images_from_platform_registry, manifests, {"allowedRegistries": ["docker.io"]})
        == []
    )
