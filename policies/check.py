"""Run the policy pack on an offline plan, the way the Pulumi engine's analyzer would.

Each recorded resource becomes the props the analyzer hands a rule: inputs as they cross the
wire (numbers as floats, secrets unwrapped), wrapped in pulumi_policy's unknown-value-checking
proxy. Resource rules get a `ResourceValidationArgs` per resource, stack rules one
`StackValidationArgs` with every resource (parents linked), and each rule its config with the
schema's defaults filled in, the pack's default enforcement mandatory.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator
from jsonschema.exceptions import best_match
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.policy import _NotApplicableError  # pyright: ignore[reportPrivateUsage]
from pulumi_policy.proxy import UnknownValueError, unknown_checking_proxy

from mlstack.policies.rules import ALL_POLICIES
from mlstack.stacks.plan import Plan, PlannedResource, is_secret

Policy = ResourceValidationPolicy | StackValidationPolicy
#: The pack's default level (policies/pack/__main__.py passes the same).
PACK_ENFORCEMENT = EnforcementLevel.MANDATORY


class PolicyConfigError(ValueError):
    """A policy config file that names no rule or sets a level that does not exist."""


@dataclass(frozen=True)
class Violation:
    stack: str
    policy: str
    enforcement: str  # "mandatory" or "advisory"
    message: str
    urn: str | None = None
    resource: str | None = None  # the resource's logical name

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckReport:
    stack: str
    resources: int
    violations: list[Violation] = field(default_factory=list)
    not_applicable: list[str] = field(default_factory=list)
    diagnostics: list[str] = field(default_factory=list)
    rule_seconds: float = 0.0

    @property
    def mandatory(self) -> list[Violation]:
        return [v for v in self.violations if v.enforcement == EnforcementLevel.MANDATORY.value]

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "resources": self.resources,
            "violations": [v.to_json() for v in self.violations],
            "not_applicable": self.not_applicable,
            "diagnostics": self.diagnostics,
            "rule_seconds": round(self.rule_seconds, 4),
        }


def wire_props(value: Any) -> Any:
    """Inputs as the analyzer receives them: JSON through a protobuf Struct (every number a
    float) and secrets unwrapped to their values."""
    if is_secret(value):
        return wire_props(value["value"])
    if isinstance(value, Mapping):
        return {k: wire_props(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [wire_props(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def load_policy_config(path: Path, policies: Sequence[Policy] = ALL_POLICIES) -> dict[str, Any]:
    """A `--policy-pack-config` style JSON file: {rule: level} or {rule: {enforcementLevel,
    ...settings}}, each rule's settings checked against its config schema."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PolicyConfigError(f"{path}: cannot read policy config ({exc})") from None
    if not isinstance(raw, dict):
        raise PolicyConfigError(f"{path}: must be a JSON object of rule names")
    by_name = {p.name: p for p in policies}
    levels = sorted(e.value for e in EnforcementLevel)
    for name, given in raw.items():
        if name != "all" and name not in by_name:
            raise PolicyConfigError(
                f"{path}: {name!r} is not a rule of the pack; see mlstack check --list"
            )
        value = {"enforcementLevel": given} if isinstance(given, str) else given
        if not isinstance(value, dict):
            raise PolicyConfigError(
                f"{path}: {name}: give an enforcement level ({', '.join(levels)}) or an object "
                "of settings"
            )
        level = value.get("enforcementLevel")
        if "enforcementLevel" in value and level not in levels:
            raise PolicyConfigError(
                f"{path}: {name}: enforcement level {level!r} is not one of {', '.join(levels)}"
            )
        settings = {k: v for k, v in value.items() if k != "enforcementLevel"}
        policy = by_name.get(name)
        schema = policy.config_schema if policy is not None else None
        _check_settings(path, name, settings, schema.properties if schema else {})
    return raw


def _check_settings(
    path: Path, name: str, settings: Mapping[str, Any], properties: Mapping[str, Any]
) -> None:
    schema = {"type": "object", "properties": dict(properties), "additionalProperties": False}
    error = best_match(Draft7Validator(schema).iter_errors(dict(settings)))
    if error is None:
        return
    where = ".".join(str(p) for p in error.absolute_path) or "settings"
    allowed = ", ".join(properties) or "none"
    raise PolicyConfigError(
        f"{path}: {name}: {where}: {error.message} (settings of this rule: {allowed})"
    )


def _settings(policy: Policy, config: Mapping[str, Any]) -> tuple[EnforcementLevel, dict[str, Any]]:
    """A rule's enforcement level and its settings, schema defaults filled in."""
    level = policy.enforcement_level or PACK_ENFORCEMENT
    settings: dict[str, Any] = {}
    if policy.config_schema is not None:
        for key, prop in policy.config_schema.properties.items():
            if "default" in prop:
                settings[key] = prop["default"]
    for name in ("all", policy.name):
        given = config.get(name)
        if isinstance(given, str):
            level = EnforcementLevel(given)
        elif isinstance(given, Mapping):
            if "enforcementLevel" in given:
                level = EnforcementLevel(given["enforcementLevel"])
            settings.update({k: v for k, v in given.items() if k != "enforcementLevel"})
    return level, settings


async def _awaited(result: Awaitable[Any]) -> None:
    await result


def policy_options(parent: str | None) -> PolicyResourceOptions:
    """Resource options as the analyzer passes them for a resource declared with defaults."""
    return PolicyResourceOptions(
        protect=False,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
        parent=parent,
    )


def _stack_resources(
    plan: Plan,
    props: Mapping[str, Any],
    opts: Mapping[str, PolicyResourceOptions],
    providers: Mapping[str, PolicyProviderResource | None],
) -> list[PolicyResource]:
    """The stack's resources as StackValidationArgs carries them, parents linked."""
    resources = {
        r.urn: PolicyResource(
            r.type, props[r.urn], r.urn, r.name, opts[r.urn], providers[r.urn], None, [], {}
        )
        for r in plan.resources
    }
    for r in plan.resources:
        if r.parent in resources:
            resources[r.urn].parent = resources[r.parent]
    return list(resources.values())


def check_plan(
    plan: Plan, policies: Sequence[Policy] = ALL_POLICIES, config: Mapping[str, Any] | None = None
) -> CheckReport:
    """Every rule on every resource of `plan`; violations in a stable order."""
    config = config or {}
    # As during a plan (stacks.offline.run_program): the proxies allocate many small objects,
    # and the default thresholds would walk the whole plan's heap again and again.
    thresholds = gc.get_threshold()
    gc.set_threshold(50_000, 20, 20)
    try:
        return _check(plan, policies, config)
    finally:
        gc.set_threshold(*thresholds)


def _check(plan: Plan, policies: Sequence[Policy], config: Mapping[str, Any]) -> CheckReport:
    started = time.perf_counter()
    report = CheckReport(plan.stack, len(plan.resources))
    by_urn = {r.urn: r for r in plan.resources}
    props = {r.urn: unknown_checking_proxy(wire_props(dict(r.inputs))) for r in plan.resources}

    def provider(r: PlannedResource) -> PolicyProviderResource | None:
        if not r.provider:
            return None
        p = by_urn.get(r.provider.rpartition("::")[0])  # a provider reference is "<urn>::<id>"
        return PolicyProviderResource(p.type, props[p.urn], p.urn, p.name) if p else None

    def collector(policy: Policy, level: EnforcementLevel, resource_urn: str | None):
        def report_violation(message: str, urn: str | None = None) -> None:
            # As in the analyzer: a resource rule's violation is always its resource's; a
            # stack rule names the resource, or none for the stack itself.
            target = resource_urn or urn
            name = by_urn[target].name if target in by_urn else None
            report.violations.append(
                Violation(plan.stack, policy.name, level.value, message, target, name)
            )

        return report_violation

    def run(policy: Policy, action: Callable[[], Any]) -> None:
        try:
            result = action()
            if inspect.isawaitable(result):
                # Like the analyzer: a loop of its own, closed after, leaving the thread's loop
                # (which the next offline plan uses) alone.
                loop = asyncio.new_event_loop()
                try:
                    loop.run_until_complete(_awaited(result))
                finally:
                    loop.close()
        except UnknownValueError as exc:
            report.diagnostics.append(f"{policy.name}: can't run during preview: {exc.message}")
        except _NotApplicableError as exc:
            report.not_applicable.append(f"{policy.name}: {exc.reason or 'not applicable'}")

    # Built once and shared: rules only read props, and the analyzer's per-policy copies
    # would cost time without changing any result.
    opts = {r.urn: policy_options(r.parent) for r in plan.resources}
    providers = {r.urn: provider(r) for r in plan.resources}
    stack_resources: list[PolicyResource] = []
    resource_rules = []
    for policy in policies:
        level, settings = _settings(policy, config)
        if level is EnforcementLevel.DISABLED:
            continue
        if level is EnforcementLevel.REMEDIATE:
            level = EnforcementLevel.MANDATORY
        if isinstance(policy, ResourceValidationPolicy):
            resource_rules.append((policy, level, settings))
            continue
        if not stack_resources:
            stack_resources = _stack_resources(plan, props, opts, providers)
        args = StackValidationArgs(stack_resources, settings)
        run(policy, lambda p=policy, a=args, lv=level: p.validate(a, collector(p, lv, None)))
    for r in plan.resources:
        for policy, level, settings in resource_rules:
            args = ResourceValidationArgs(
                r.type, props[r.urn], r.urn, r.name, opts[r.urn], providers[r.urn], settings
            )
            run(
                policy,
                lambda p=policy, a=args, lv=level, u=r.urn: p.validate(a, collector(p, lv, u)),
            )
    report.violations.sort(key=lambda v: (v.policy, v.urn or "", v.message))
    report.rule_seconds = time.perf_counter() - started
    return report
