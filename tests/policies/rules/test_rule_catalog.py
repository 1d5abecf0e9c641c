"""The pack's catalog: names and descriptions as the style asks, and a failing case per rule."""

from __future__ import annotations

import importlib
import inspect
import re
from types import ModuleType

import pytest
from rule_args import FAILS_ATTR

from mlstack.policies.rules import (
    ALL_POLICIES,
    access,
    addons,
    aws,
    gcp,
    ordering,
    pipelines,
    pods,
    pools,
    scheduling,
    tenancy,
)

RULE_MODULES = [pods, access, pools, addons, scheduling, tenancy, ordering, pipelines, aws, gcp]
#: The test modules whose `fails(...)` marks count as failing cases.
TEST_MODULES = (
    "test_pod_rules",
    "test_access_rules",
    "test_pool_rules",
    "test_addon_rules",
    "test_scheduling_rules",
    "test_stack_rules",
    "test_ordering_rules",
    "test_pipeline_rules",
    "test_aws_rules",
    "test_gcp_rules",
)
KEBAB_CASE = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)+")

#: Each rule module's policies, in the order the pack runs them.
MODULE_RULES: dict[ModuleType, list[str]] = {
    pods: [
        "no-privileged-containers",
        "no-privilege-escalation",
        "no-added-capabilities",
        "no-host-ports",
        "no-host-namespaces",
        "no-host-path-volumes",
        "run-as-non-root",
        "containers-set-requests-and-limits",
        "no-latest-image-tag",
        "gpu-pods-tolerate-gpu-taint",
        "gpu-pods-use-a-queue",
    ],
    addons: [
        "gpu-addons-reach-gpu-pools",
        "addon-namespaces-enforce-their-level",
        "addon-placement-recorded",
    ],
    scheduling: ["pods-fit-a-pool"],
    access: [
        "no-wildcard-rbac",
        "no-cluster-admin-bindings",
        "no-node-port-services",
        "no-rbac-escalation-verbs",
        "no-cluster-wide-secret-reads",
        "rolebindings-stay-in-their-team",
        "namespaces-enforce-pod-security",
        "load-balancers-internal-only",
    ],
    pools: [
        "gpu-pools-tainted",
        "node-patches-leave-taints",
    ],
    tenancy: [
        "team-namespaces-have-quotas",
        "team-namespaces-have-limit-ranges",
        "team-namespaces-deny-ingress-by-default",
        "team-ingress-not-open-to-all",
        "services-within-namespace-quota",
        "gpu-pools-have-flavors",
        "workloads-use-existing-queues",
        "spot-capacity-only-for-checkpointing-jobs",
        "spot-pods-stop-within-the-notice",
        "gpu-quota-within-pool-capacity",
        "images-from-platform-registry",
    ],
    ordering: ["first-deploy-ordering"],
    pipelines: [
        "cronjobs-keep-starting",
        "pipeline-runner-rbac-scoped",
        "team-jobs-name-their-queue",
    ],
    aws: [
        "aws-s3-encrypted-with-kms",
        "aws-s3-public-access-blocked",
        "aws-s3-versioned",
        "aws-s3-tls-only",
        "aws-s3-owner-enforced",
        "aws-ecr-immutable-scanned",
        "aws-eks-endpoint-private",
        "aws-eks-secrets-encrypted",
        "aws-eks-audit-logging",
        "aws-eks-access-entries-only",
        "aws-iam-no-admin-statements",
        "aws-pod-identity-trust-by-session-tags",
        "aws-iam-no-access-keys",
        "aws-kms-key-rotation",
    ],
    gcp: [
        "gcp-gcs-uniform-access",
        "gcp-gcs-public-access-prevented",
        "gcp-gcs-versioned",
        "gcp-artifact-registry-immutable-tags",
        "gcp-gke-private-nodes",
        "gcp-gke-endpoint-restricted",
        "gcp-gke-workload-identity",
        "gcp-gke-no-legacy-auth",
        "gcp-gke-live-vulnerability-mode",
        "gcp-gke-node-auto-repair-upgrade",
        "gcp-iam-no-primitive-roles",
        "gcp-iam-no-service-account-keys",
        "gcp-firewall-no-open-ingress",
    ],
}


@pytest.mark.parametrize("module", RULE_MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_policies_have_kebab_case_names_and_one_sentence_descriptions(module: ModuleType) -> None:
    assert module.POLICIES
    for policy in module.POLICIES:
        assert KEBAB_CASE.fullmatch(policy.name), policy.name
        description = policy.description
        assert description[:1].isupper(), description
        assert description.endswith("."), description
        assert "\n" not in description, description
        # One sentence: no sentence end before the final full stop.
        assert not re.search(r"[.!?]\s", description[:-1]), description


def test_all_policies_are_the_modules_policies_with_unique_names() -> None:
    assert [p for m in RULE_MODULES for p in m.POLICIES] == ALL_POLICIES
    names = [p.name for p in ALL_POLICIES]
    assert len(names) == 67
    assert sorted(set(names)) == sorted(names)


def test_every_policy_has_a_failing_case() -> None:
    covered: set[str] = set()
    for name in TEST_MODULES:
        for _, test in inspect.getmembers(importlib.import_module(name), inspect.isfunction):
            if test.__name__.startswith("test_"):
                covered.update(getattr(test, FAILS_ATTR, ()))
    names = {p.name for p in ALL_POLICIES}
    assert sorted(names - covered) == [], "rules without a test that shows them failing"
    assert sorted(covered - names) == [], "fails(...) names that are no rule of the pack"


@pytest.mark.parametrize("module", RULE_MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_policies_are_the_module_rules(module: ModuleType) -> None:
    assert [p.name for p in module.POLICIES] == MODULE_RULES[module]
