"""The tenancy layer's config checks, called directly on the schema's view of a config."""

from __future__ import annotations

from typing import Any

import pytest

from mlstack.policies.tenancy_checks import gpu_quota_problems, tenancy_problems
from mlstack.stacks.errors import Problem
from mlstack.stacks.schema import Platform

#: The lab's GPU pools as the pool checks pass them on: index and GPUs per node.
LAB_SOUND = {"a100": (1, 8), "l40s": (2, 4)}


def test_the_lab_stack_passes(lab_config: dict[str, Any]) -> None:
    platform = Platform.model_validate(lab_config)
    assert gpu_quota_problems(platform, LAB_SOUND) == []
    assert tenancy_problems(platform) == []


def test_a_quota_above_the_pool_names_the_pools_size(lab_config: dict[str, Any]) -> None:
    lab_config["teams"][0]["quota"]["gpus"]["a100"] = 17
    (p,) = gpu_quota_problems(Platform.model_validate(lab_config), LAB_SOUND)
    assert p.path == "platform.teams[0].quota.gpus.a100"
    assert p.message == "quota exceeds pool 'a100' maximum of 16 GPUs (2 nodes x 8 GPUs)"
    assert p.fix == "lower it to at most 16 or raise platform.node_pools[1].max_nodes"


def test_a_quota_in_a_pool_that_failed_its_own_checks_is_not_sized(
    lab_config: dict[str, Any],
) -> None:
    lab_config["teams"][0]["quota"]["gpus"]["a100"] = 17
    assert gpu_quota_problems(Platform.model_validate(lab_config), {}) == []


def test_borrowing_needs_a_cohort(lab_config: dict[str, Any]) -> None:
    lab_config["teams"][1]["quota"]["borrowing_limit_gpus"] = {"a100": 4}
    (p,) = tenancy_problems(Platform.model_validate(lab_config))
    assert p.path == "platform.teams[1].quota.borrowing_limit_gpus.a100"
    assert p.fix == "set platform.teams[1].cohort, or remove the limit"


def test_a_team_may_not_take_a_namespace_in_use(lab_config: dict[str, Any]) -> None:
    lab_config["teams"][2]["name"] = "kueue-system"
    (p,) = tenancy_problems(Platform.model_validate(lab_config))
    assert (p.path, p.value) == ("platform.teams[2].name", "kueue-system")


def _extra_rule_problem(lab_config: dict[str, Any], **rule: Any) -> Problem:
    lab_config["teams"][0]["extra_rules"] = [
        {"api_groups": [""], "resources": ["pods"], "verbs": ["get"]},
        rule,
    ]
    (p,) = tenancy_problems(Platform.model_validate(lab_config))
    return p


@pytest.mark.parametrize(
    ("rule", "at", "words"),
    [
        ({"resources": ["pods"], "verbs": ["*"]}, "verbs", "'*' also grants"),
        ({"api_groups": ["*"], "resources": ["jobs"], "verbs": ["get"]}, "api_groups", "'*'"),
        (
            {
                "api_groups": ["rbac.authorization.k8s.io"],
                "resources": ["roles"],
                "verbs": ["escalate"],
            },
            "verbs",
            "escalate lets the team grant itself more",
        ),
        ({"resources": ["users"], "verbs": ["impersonate"]}, "verbs", "impersonate"),
        (
            {
                "api_groups": ["rbac.authorization.k8s.io"],
                "resources": ["rolebindings"],
                "verbs": ["create"],
            },
            "resources",
            "writing rolebindings (rbac.authorization.k8s.io group) lets team vision undo",
        ),
        ({"resources": ["resourcequotas"], "verbs": ["patch"]}, "resources", "resourcequotas"),
        (
            {
                "api_groups": ["networking.k8s.io"],
                "resources": ["networkpolicies"],
                "verbs": ["delete"],
            },
            "resources",
            "networkpolicies",
        ),
        (
            {"api_groups": ["kueue.x-k8s.io"], "resources": ["localqueues"], "verbs": ["update"]},
            "resources",
            "localqueues",
        ),
        ({"resources": ["serviceaccounts/token"], "verbs": ["create"]}, "resources", "token"),
    ],
)
def test_extra_rules_are_as_strict_as_the_generated_roles(
    lab_config: dict[str, Any], rule: dict[str, Any], at: str, words: str
) -> None:
    p = _extra_rule_problem(lab_config, **rule)
    assert p.path == f"platform.teams[0].extra_rules[1].{at}"
    assert words in p.message


@pytest.mark.parametrize(
    "rule",
    [
        {"resources": ["resourcequotas", "networkpolicies"], "verbs": ["get", "list", "watch"]},
        {"api_groups": ["apps"], "resources": ["deployments"], "verbs": ["create", "patch"]},
        {"resources": ["pods/exec"], "verbs": ["create"]},
    ],
)
def test_extra_rules_that_leave_the_guardrails_alone_pass(
    lab_config: dict[str, Any], rule: dict[str, Any]
) -> None:
    lab_config["teams"][0]["extra_rules"] = [rule]
    assert tenancy_problems(Platform.model_validate(lab_config)) == []
