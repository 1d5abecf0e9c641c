"""policies/check.py: the offline policy run gives rules what the engine's analyzer would, and
handles config, unknown values and not-applicable rules the way the engine does."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2
from pulumi_policy import (
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from mlstack.policies.check import (
    CheckReport,
    PolicyConfigError,
    check_plan,
    load_policy_config,
    wire_props,
)
from mlstack.stacks.plan import SECRET_SIG, SECRET_VALUE, Plan, PlannedResource, is_secret
from mlstack.stacks.validate import load_platform

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
NAMESPACE = "kubernetes:core/v1:Namespace"
LEVELS = "advisory, disabled, mandatory, remediate"


def analyzer_props(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """What the analyzer's rules get: the inputs as a protobuf Struct, deserialized."""
    struct = struct_pb2.Struct()
    struct.update(json.loads(json.dumps(inputs)))
    return deserialize_properties(json_format.MessageToDict(struct))


def typed(value: Any) -> Any:
    """`value` with each scalar paired with its type, so 8 and 8.0 compare unequal."""
    if isinstance(value, Mapping):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [typed(v) for v in value]
    return (type(value).__name__, value)


def holds_secret(value: Any) -> bool:
    if is_secret(value):
        return True
    if isinstance(value, Mapping):
        return any(holds_secret(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(holds_secret(v) for v in value)
    return False


def secret(value: Any) -> dict[str, Any]:
    return {SECRET_SIG: SECRET_VALUE, "value": value}


# wire_props


def test_wire_props_matches_the_analyzer_for_every_lab_resource(lab_plan: Plan) -> None:
    assert any(holds_secret(dict(r.inputs)) for r in lab_plan.resources)
    for r in lab_plan.resources:
        inputs = dict(r.inputs)
        assert typed(wire_props(inputs)) == typed(analyzer_props(inputs)), r.urn


def test_wire_props_matches_the_analyzer_on_ints_tuples_and_nested_secrets() -> None:
    inputs = {
        "replicas": 3,
        "ratio": 0.5,
        "enabled": True,
        "suspend": False,
        "unset": None,
        "big": 2**60,
        "ports": ({"containerPort": 8080, "name": "http"},),
        "env": [{"name": "TOKEN", "value": secret({"n": 1, "inner": secret([2, "x"])})}],
        "whole": secret(7),
    }
    props = wire_props(inputs)
    assert typed(props) == typed(analyzer_props(inputs))
    assert props["replicas"] == 3.0
    assert type(props["replicas"]) is float
    assert props["enabled"] is True
    assert props["env"][0]["value"] == {"n": 1.0, "inner": [2.0, "x"]}
    assert props["whole"] == 7.0


# check_plan


def test_the_lab_stack_passes_every_rule(lab_plan: Plan) -> None:
    report = check_plan(lab_plan)
    assert report.stack == "onprem-lab"
    assert report.resources == len(lab_plan.resources)
    assert (report.violations, report.diagnostics, report.not_applicable) == ([], [], [])


def urn(type_: str, name: str) -> str:
    return f"urn:pulumi:test::mlstack::{type_}::{name}"


def deployment(name: str = "serve", image: str = "python:latest") -> PlannedResource:
    """A Deployment whose only faults are its image tag and its missing memory limit."""
    container = {
        "name": "serve",
        "image": image,
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True},
        "resources": {"requests": {"cpu": 1, "memory": "1Gi"}},
    }
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "vision"},
        "spec": {
            "replicas": 2,
            "template": {"spec": {"containers": [container]}},
        },
    }
    return PlannedResource(DEPLOYMENT, name, urn(DEPLOYMENT, name), None, True, None, manifest)


@pytest.fixture
def small_plan(lab_config: dict[str, Any]) -> Plan:
    return Plan("test", load_platform(lab_config), [deployment()])


def levels(report: CheckReport) -> list[tuple[str, str]]:
    return [(v.policy, v.enforcement) for v in report.violations]


def test_violations_name_the_rule_level_resource_and_fix(small_plan: Plan) -> None:
    report = check_plan(small_plan)
    assert levels(report) == [
        ("containers-set-requests-and-limits", "mandatory"),
        ("no-latest-image-tag", "mandatory"),
    ]
    assert {v.urn for v in report.violations} == {urn(DEPLOYMENT, "serve")}
    assert {v.resource for v in report.violations} == {"serve"}
    assert "sets no limits.memory" in report.violations[0].message
    assert "uses 'python:latest'" in report.violations[1].message
    assert report.mandatory == report.violations
    assert report.to_json()["violations"][1]["policy"] == "no-latest-image-tag"


def test_violations_are_sorted_by_rule_then_resource(lab_config: dict[str, Any]) -> None:
    plan = Plan("test", load_platform(lab_config), [deployment("b"), deployment("a")])
    assert [(v.policy, v.resource) for v in check_plan(plan).violations] == [
        ("containers-set-requests-and-limits", "a"),
        ("containers-set-requests-and-limits", "b"),
        ("no-latest-image-tag", "a"),
        ("no-latest-image-tag", "b"),
    ]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {"no-latest-image-tag": "advisory"},
            [
                ("containers-set-requests-and-limits", "mandatory"),
                ("no-latest-image-tag", "advisory"),
            ],
        ),
        ({"all": "disabled"}, []),
        (
            {"all": "disabled", "no-latest-image-tag": "advisory"},
            [("no-latest-image-tag", "advisory")],
        ),
        (
            {"no-latest-image-tag": {"enforcementLevel": "disabled"}},
            [("containers-set-requests-and-limits", "mandatory")],
        ),
        (
            {"all": {"enforcementLevel": "advisory"}, "no-latest-image-tag": "remediate"},
            [
                ("containers-set-requests-and-limits", "advisory"),
                ("no-latest-image-tag", "mandatory"),
            ],
        ),
    ],
    ids=["one-advisory", "all-disabled", "all-disabled-one-on", "object-disabled", "remediate"],
)
def test_config_sets_enforcement_levels(
    small_plan: Plan, config: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    report = check_plan(small_plan, config=config)
    assert levels(report) == expected
    assert [v.policy for v in report.mandatory] == [p for p, lv in expected if lv == "mandatory"]


def test_config_settings_reach_the_rule_next_to_schema_defaults(small_plan: Plan) -> None:
    config = {"containers-set-requests-and-limits": {"requireCpuLimit": True}}
    [requests] = [
        v for v in check_plan(small_plan, config=config).violations if "requests" in v.policy
    ]
    assert "sets no limits.memory, limits.cpu" in requests.message
    assert requests.enforcement == "mandatory"

    seen: list[dict[str, Any]] = []
    policy = ResourceValidationPolicy(
        name="sees-config",
        description="Records its config.",
        validate=lambda args, report: seen.append(dict(args.get_config())) or None,
    )
    check_plan(small_plan, policies=[policy], config={"sees-config": {"x": 1}})
    assert seen == [{"x": 1}]


def test_an_unknown_value_becomes_a_diagnostic_and_the_other_rules_still_run(
    lab_config: dict[str, Any],
) -> None:
    plan = Plan("test", load_platform(lab_config), [deployment(image=UNKNOWN_STRING_VALUE)])
    report = check_plan(plan)
    assert report.diagnostics == [
        "no-latest-image-tag: can't run during preview: string value at "
        ".spec.template.spec.containers.0.image can't be known during preview"
    ]
    assert levels(report) == [("containers-set-requests-and-limits", "mandatory")]


def test_an_unknown_value_in_a_stack_rule_becomes_a_diagnostic(small_plan: Plan) -> None:
    def read_names(args: StackValidationArgs, report: ReportViolation) -> None:
        for r in args.resources:
            report(str(r.props["metadata"]["name"]), r.urn)

    unknown = PlannedResource(
        NAMESPACE,
        "later",
        urn(NAMESPACE, "later"),
        None,
        True,
        None,
        {"metadata": {"name": UNKNOWN_STRING_VALUE}},
    )
    plan = Plan(small_plan.stack, small_plan.platform, [*small_plan.resources, unknown])
    policy = StackValidationPolicy(name="read-names", description="Reads.", validate=read_names)
    report = check_plan(plan, policies=[policy])
    assert report.diagnostics == [
        "read-names: can't run during preview: string value at .metadata.name can't be known "
        "during preview"
    ]


def test_not_applicable_rules_are_listed_with_their_reason(small_plan: Plan) -> None:
    def skip_resource(args: ResourceValidationArgs, report: ReportViolation) -> None:
        args.not_applicable("no GPUs in this stack")

    def skip_stack(args: StackValidationArgs, report: ReportViolation) -> None:
        args.not_applicable()

    report = check_plan(
        small_plan,
        policies=[
            ResourceValidationPolicy(name="skip-one", description="Skips.", validate=skip_resource),
            StackValidationPolicy(name="skip-all", description="Skips.", validate=skip_stack),
        ],
    )
    assert report.not_applicable == ["skip-all: not applicable", "skip-one: no GPUs in this stack"]
    assert report.violations == []


def test_stack_rules_see_parents_and_report_on_any_resource(small_plan: Plan) -> None:
    child_urn = urn(DEPLOYMENT, "child")
    parent = small_plan.resources[0]
    child = PlannedResource(
        DEPLOYMENT, "child", child_urn, parent.urn, True, None, dict(deployment("child").inputs)
    )
    plan = Plan(small_plan.stack, small_plan.platform, [parent, child])

    def report_parents(args: StackValidationArgs, report: ReportViolation) -> None:
        for r in args.resources:
            if r.parent is not None:
                report(f"{r.name} under {r.parent.name}", r.urn)
        report("about the stack", None)

    policy = StackValidationPolicy(name="parents", description="Parents.", validate=report_parents)
    report = check_plan(plan, policies=[policy])
    assert [(v.message, v.urn, v.resource) for v in report.violations] == [
        ("about the stack", None, None),
        ("child under serve", child_urn, "child"),
    ]


@pytest.fixture
def keep_event_loop() -> Iterator[None]:
    """Put back the thread's event loop, which the Pulumi mock runtime of later plans needs."""
    policy = asyncio.get_event_loop_policy()
    loop = policy.get_event_loop()
    yield
    policy.set_event_loop(loop)


async def _later(args: ResourceValidationArgs, report: ReportViolation) -> None:
    report(f"checked {args.name}", None)


ASYNC_POLICY = ResourceValidationPolicy(name="later", description="Async.", validate=_later)


@pytest.mark.usefixtures("keep_event_loop")
def test_async_rules_are_awaited(small_plan: Plan) -> None:
    [violation] = check_plan(small_plan, policies=[ASYNC_POLICY]).violations
    assert (violation.message, violation.resource) == ("checked serve", "serve")


@pytest.mark.usefixtures("keep_event_loop")
def test_an_async_rule_leaves_the_event_loop_for_the_next_plan(small_plan: Plan) -> None:
    check_plan(small_plan, policies=[ASYNC_POLICY])
    asyncio.get_event_loop_policy().get_event_loop()


# load_policy_config


def config_file(tmp_path: Path, content: Any) -> Path:
    path = tmp_path / "policy-config.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_a_valid_config_is_returned_as_given(tmp_path: Path) -> None:
    content = {
        "all": "advisory",
        "no-latest-image-tag": {"enforcementLevel": "mandatory"},
        "containers-set-requests-and-limits": {"requireCpuLimit": True},
        "gpu-pools-tainted": "remediate",
    }
    assert load_policy_config(config_file(tmp_path, content)) == content


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (
            {"no-such-rule": "advisory"},
            "'no-such-rule' is not a rule of the pack; see mlstack check --list",
        ),
        (
            {"no-latest-image-tag": "warn"},
            f"no-latest-image-tag: enforcement level 'warn' is not one of {LEVELS}",
        ),
        (
            {"all": {"enforcementLevel": "Mandatory"}},
            f"all: enforcement level 'Mandatory' is not one of {LEVELS}",
        ),
        ("{not json", "cannot read policy config"),
        (["no-latest-image-tag"], "must be a JSON object of rule names"),
        (
            {"containers-set-requests-and-limits": {"requireCpuLimit": "yes"}},
            "containers-set-requests-and-limits: requireCpuLimit: 'yes' is not of type 'boolean'",
        ),
        ({"no-latest-image-tag": {"maxAge": 3}}, "'maxAge' was unexpected"),
    ],
    ids=[
        "unknown-rule",
        "bad-level",
        "bad-level-in-object",
        "bad-json",
        "not-an-object",
        "bad-setting-type",
        "unknown-setting",
    ],
)
def test_a_bad_config_is_one_line_naming_the_file_and_the_problem(
    tmp_path: Path, content: Any, says: str
) -> None:
    path = config_file(tmp_path, content)
    with pytest.raises(PolicyConfigError) as caught:
        load_policy_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert says in message
    assert "\n" not in message


def test_a_missing_config_file_is_a_policy_config_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyConfigError, match="cannot read policy config"):
        load_policy_config(tmp_path / "absent.json")


@pytest.mark.parametrize(
    "value",
    [3, True, ["advisory"], {"enforcementLevel": ["advisory"]}, {"enforcementLevel": 1}],
    ids=["number", "boolean", "list", "list-level", "number-level"],
)
def test_a_rule_value_of_the_wrong_type_is_a_policy_config_error(
    tmp_path: Path, value: Any
) -> None:
    with pytest.raises(PolicyConfigError, match="no-latest-image-tag") as caught:
        load_policy_config(config_file(tmp_path, {"no-latest-image-tag": value}))
    assert "\n" not in str(caught.value)


def test_a_config_that_loads_can_be_run(tmp_path: Path, small_plan: Plan) -> None:
    path = config_file(tmp_path, {"no-latest-image-tag": {"enforcementLevel": None}})
    try:
        config = load_policy_config(path)
    except PolicyConfigError:
        return
    check_plan(small_plan, config=config)
