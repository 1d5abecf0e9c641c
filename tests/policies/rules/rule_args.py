"""Calling policy rules directly, with props shaped exactly as the policy engine hands them over.

Every manifest goes through `wire_props` (numbers become floats, secrets are unwrapped) and
`unknown_checking_proxy` (read-only Mappings/Sequences), so a rule that only works on plain dicts
or ints fails here as it would under `pulumi preview`.

`fails(policy_name)` marks a test as a failing case of that policy; `test_rule_catalog.py` checks
that every policy of the pack has at least one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pulumi_policy import (
    PolicyResource,
    ResourceValidationArgs,
    StackValidationArgs,
)
from pulumi_policy.proxy import unknown_checking_proxy

from policies.check import policy_options, wire_props

STACK = "test"
#: Attribute `fails` sets on a test function: the policy names it shows violated.
FAILS_ATTR = "violated_policies"

Test = Callable[..., None]


def fails(*policy_names: str) -> Callable[[Test], Test]:
    """Mark a test as a failing case (a reported violation) of each named policy."""

    def mark(test: Test) -> Test:
        setattr(test, FAILS_ATTR, (*getattr(test, FAILS_ATTR, ()), *policy_names))
        return test

    return mark


def urn_of(resource_type: str, name: str) -> str:
    return f"urn:pulumi:{STACK}::mlstack::{resource_type}::{name}"


def wire(manifest: Mapping[str, Any]) -> Mapping[str, Any]:
    """`manifest` as a rule sees it in production."""
    return unknown_checking_proxy(wire_props(dict(manifest)))


def _name_of(manifest: Mapping[str, Any]) -> str:
    metadata = manifest.get("metadata") or {}
    return str(metadata.get("name") or "unnamed")


def resource_args(
    resource_type: str,
    manifest: Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> ResourceValidationArgs:
    name = name or _name_of(manifest)
    return ResourceValidationArgs(
        resource_type,
        wire(manifest),
        urn_of(resource_type, name),
        name,
        policy_options(None),
        None,
        dict(config or {}),
    )


def policy_resource(
    resource_type: str, manifest: Mapping[str, Any], name: str | None = None
) -> PolicyResource:
    name = name or f"{_name_of(manifest)}-{resource_type.rsplit(':', 1)[-1].lower()}"
    return PolicyResource(
        resource_type,
        wire(manifest),
        urn_of(resource_type, name),
        name,
        policy_options(None),
        None,
        None,
        [],
        {},
    )


def stack_args(
    resources: list[PolicyResource], config: Mapping[str, Any] | None = None
) -> StackValidationArgs:
    return StackValidationArgs(resources, dict(config or {}))


class Violations:
    """A `report_violation` callback that keeps what it is given."""

    def __init__(self) -> None:
        self.reported: list[tuple[str, str | None]] = []

    def __call__(self, message: str, urn: str | None = None) -> None:
        self.reported.append((message, urn))

    @property
    def messages(self) -> list[str]:
        return [m for m, _ in self.reported]

    @property
    def urns(self) -> list[str | None]:
        return [u for _, u in self.reported]


RuleArgs = ResourceValidationArgs | StackValidationArgs


def violations(rule: Callable[[Any, Any], None], args: RuleArgs) -> Violations:
    """Run `rule` once on `args`; what it reported."""
    collected = Violations()
    rule(args, collected)
    return collected


def messages(rule: Callable[[Any, Any], None], args: RuleArgs) -> list[str]:
    return violations(rule, args).messages
