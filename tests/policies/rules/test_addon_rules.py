"""Add-on rules (policies/rules/addons.py): a GPU node agent's effective placement, chart
defaults included, admits every GPU pool; add-on charts are pinned where defaults are recorded."""

from __future__ import annotations

from typing import Any

import pytest
from rule_args import PlanCopy, check, fails, messages, stack_args

from mlstack.components.kubernetes.addons import NVIDIA_DEVICE_PLUGIN
from mlstack.components.kubernetes.chart_defaults import CHART_DEFAULTS, effective_placement
from mlstack.policies.rules import addons
from mlstack.policies.rules.pools import PoolNodes
from mlstack.stacks.names import GPU_TAINT_KEY, POOL_KIND_LABEL
from mlstack.stacks.offline import run_plan
from mlstack.stacks.plan import Plan
from mlstack.stacks.stackfile import read_stack

RELEASE = addons.HELM_RELEASE
#: What mlstack gave the device plugin before issue 16: a nodeSelector and no affinity, so the
#: chart's default affinity (NFD labels or nvidia.com/gpu.present) stayed and was ANDed with it.
OLD_VALUES = {
    "nodeSelector": {POOL_KIND_LABEL: "gpu"},
    "tolerations": [{"key": GPU_TAINT_KEY, "operator": "Exists"}],
    "priorityClassName": "system-node-critical",
    "failOnInitError": True,
}


def _device_plugin(plan: PlanCopy) -> dict[str, Any]:
    return plan.find(RELEASE, chart=NVIDIA_DEVICE_PLUGIN.chart).inputs


def _run(plan: PlanCopy) -> list[str]:
    return messages(addons.gpu_addons_reach_gpu_pools, stack_args(plan.resources()))


@pytest.fixture(scope="module")
def aws_plan() -> Plan:
    return run_plan(read_stack("aws-dev"))


def test_the_lab_device_plugin_reaches_every_gpu_pool(lab_plan: Plan) -> None:
    assert _run(PlanCopy.of(lab_plan)) == []


def test_the_aws_device_plugin_reaches_every_gpu_pool(aws_plan: Plan) -> None:
    assert _run(PlanCopy.of(aws_plan)) == []


@fails("gpu-addons-reach-gpu-pools")
@pytest.mark.parametrize("stack", ["lab", "aws"])
def test_a_selector_without_an_affinity_keeps_the_chart_affinity(
    stack: str, lab_plan: Plan, aws_plan: Plan
) -> None:
    plan = PlanCopy.of(lab_plan if stack == "lab" else aws_plan)
    _device_plugin(plan)["values"] = dict(OLD_VALUES)
    found = _run(plan)
    gpu_pools = {"lab": ["a100", "l40s"], "aws": ["l4"]}[stack]
    assert len(found) == len(gpu_pools)
    for pool, message in zip(gpu_pools, found, strict=True):
        assert f"GPU pool {pool!r}" in message
        assert "nvidia.com/gpu.present" in message
        assert "NVIDIA/k8s-device-plugin v0.18.2" in message


@fails("gpu-addons-reach-gpu-pools")
def test_an_untolerated_pool_taint_is_reported(lab_plan: Plan) -> None:
    plan = PlanCopy.of(lab_plan)
    _device_plugin(plan)["values"]["tolerations"] = []
    found = _run(plan)
    assert len(found) == 2
    assert all("nothing tolerates the taint nvidia.com/gpu=present:NoSchedule" in m for m in found)


def test_a_release_of_an_unrecorded_chart_is_not_checked(lab_plan: Plan) -> None:
    plan = PlanCopy.of(lab_plan)
    _device_plugin(plan)["chart"] = "someone-elses-chart"
    assert _run(plan) == []


def _pool(labels: dict[str, str], taints: tuple[tuple[str, str, str], ...] = ()) -> PoolNodes:
    return PoolNodes("p", "gpu", "on-demand", taints, labels=tuple(sorted(labels.items())))


def _affinity(*expressions: dict[str, Any]) -> dict[str, Any]:
    terms = [{"matchExpressions": list(expressions)}]
    return {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
            }
        }
    }


@pytest.mark.parametrize(
    ("expression", "admitted"),
    [
        ({"key": "a", "operator": "In", "values": ["1"]}, True),
        ({"key": "a", "operator": "NotIn", "values": ["1"]}, False),
        ({"key": "b", "operator": "NotIn", "values": ["1"]}, True),
        ({"key": "a", "operator": "Exists"}, True),
        ({"key": "a", "operator": "DoesNotExist"}, False),
        ({"key": "a", "operator": "Gt", "values": ["0"]}, True),
        ({"key": "a", "operator": "Lt", "values": ["1"]}, False),
    ],
)
def test_node_affinity_operators(expression: dict[str, Any], admitted: bool) -> None:
    defaults = CHART_DEFAULTS[(NVIDIA_DEVICE_PLUGIN.chart, NVIDIA_DEVICE_PLUGIN.version)]
    placement = effective_placement(defaults, _affinity(expression))
    assert (addons.placement_refusal(placement, _pool({"a": "1"})) is None) is admitted


@pytest.mark.parametrize(
    ("toleration", "admitted"),
    [
        ({"operator": "Exists"}, True),
        ({"key": "k", "operator": "Exists", "effect": "NoSchedule"}, True),
        ({"key": "k", "operator": "Exists", "effect": "NoExecute"}, False),
        ({"key": "k", "value": "v"}, True),
        ({"key": "k", "value": "w"}, False),
    ],
)
def test_tolerations(toleration: dict[str, Any], admitted: bool) -> None:
    defaults = CHART_DEFAULTS[(NVIDIA_DEVICE_PLUGIN.chart, NVIDIA_DEVICE_PLUGIN.version)]
    values = _affinity({"key": "a", "operator": "Exists"}) | {"tolerations": [toleration]}
    placement = effective_placement(defaults, values)
    pool = _pool({"a": "1"}, taints=(("k", "v", "NoSchedule"),))
    assert (addons.placement_refusal(placement, pool) is None) is admitted


def _release(chart: str, version: str) -> dict[str, Any]:
    return {"name": "r", "chart": chart, "version": version}


def test_releases_at_recorded_versions_and_other_charts_pass() -> None:
    for chart, version in CHART_DEFAULTS:
        assert check(addons.addon_placement_recorded, RELEASE, _release(chart, version)) == []
    assert check(addons.addon_placement_recorded, RELEASE, _release("other", "1.0.0")) == []


@fails("addon-placement-recorded")
def test_a_chart_bump_without_recorded_defaults_is_reported() -> None:
    [message] = check(
        addons.addon_placement_recorded, RELEASE, _release(NVIDIA_DEVICE_PLUGIN.chart, "0.20.0")
    )
    assert "nvidia-device-plugin 0.20.0 has no recorded placement defaults" in message
    assert "chart_defaults.py" in message


# --- addon-namespaces-enforce-their-level ---------------------------------------------------

NAMESPACE = "kubernetes:core/v1:Namespace"


def _levels(plan: PlanCopy) -> list[str]:
    return messages(addons.addon_namespaces_enforce_their_level, stack_args(plan.resources()))


def _namespace(plan: PlanCopy, name: str) -> Any:
    return next(
        i for i in plan.items if i.type == NAMESPACE and i.inputs["metadata"]["name"] == name
    )


def test_the_shipped_add_on_namespaces_enforce_their_charts_levels(
    lab_plan: Plan, aws_plan: Plan
) -> None:
    for plan in (lab_plan, aws_plan):
        copy = PlanCopy.of(plan)
        assert _levels(copy) == []
        for name in ("kueue-system", "jobset-system"):
            labels = _namespace(copy, name).inputs["metadata"]["labels"]
            assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


@fails("addon-namespaces-enforce-their-level")
def test_a_release_into_a_namespace_helm_creates_is_reported(aws_plan: Plan) -> None:
    """What mlstack did before: Helm's createNamespace, so kueue-system had no level at all."""
    plan = PlanCopy.of(aws_plan)
    plan.items.remove(_namespace(plan, "kueue-system"))
    plan.find(RELEASE, name="kueue").inputs["createNamespace"] = True
    [message] = _levels(plan)
    assert message.startswith("Helm release 'kueue-release' (oci://registry.k8s.io/kueue/")
    assert "runs pods that meet Pod Security 'restricted'" in message
    assert "namespace 'kueue-system', which Helm's createNamespace creates without" in message
    assert "pod-security.kubernetes.io/enforce: restricted" in message


@fails("addon-namespaces-enforce-their-level")
@pytest.mark.parametrize(
    ("level", "effect"),
    [("privileged", "it admits more than they need"), (None, "it admits more than they need")],
)
def test_an_add_on_namespace_looser_than_its_chart_is_reported(
    aws_plan: Plan, level: str | None, effect: str
) -> None:
    plan = PlanCopy.of(aws_plan)
    labels = _namespace(plan, "jobset-system").inputs["metadata"]["labels"]
    if level is None:
        del labels["pod-security.kubernetes.io/enforce"]
    else:
        labels["pod-security.kubernetes.io/enforce"] = level
    [message] = _levels(plan)
    assert f"which enforces {level or 'no level'}: {effect}" in message


@fails("addon-namespaces-enforce-their-level")
def test_a_privileged_chart_outside_an_exempt_namespace_is_reported(lab_plan: Plan) -> None:
    """The device plugin needs hostPath: in a declared restricted namespace admission refuses
    it; in an undeclared one nothing records that it runs privileged."""
    plan = PlanCopy.of(lab_plan)
    _device_plugin(plan)["namespace"] = "kueue-system"
    [message] = _levels(plan)
    assert "meet Pod Security 'privileged' (templates/daemonset-device-plugin.yml" in message
    assert "which enforces restricted: admission would refuse them" in message
    _device_plugin(plan)["namespace"] = "gpu-operators"
    [message] = _levels(plan)
    assert "in namespace 'gpu-operators', which the plan does not declare" in message
