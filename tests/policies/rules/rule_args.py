"""Calling policy rules directly, with props shaped exactly as the policy engine hands them over.

Every manifest goes through `wire_props` (numbers become floats, secrets are unwrapped) and
`unknown_checking_proxy` (read-only Mappings/Sequences), so a rule that only works on plain dicts
or ints fails here as it would under `pulumi preview`.

`PlanCopy` holds a plan's resources as deep copies, to break one thing in and run a stack rule
on the whole; `check` runs a resource rule on one resource.

`fails(policy_name)` marks a test as a failing case of that policy; `test_rule_catalog.py` checks
that every policy of the pack has at least one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from pulumi_policy import (
    PolicyResource,
    ResourceValidationArgs,
    StackValidationArgs,
)
from pulumi_policy.proxy import unknown_checking_proxy

from mlstack.policies.check import policy_options, wire_props

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


def check(rule: Callable[[Any, Any], None], type_: str, inputs: dict, **config: Any) -> list[str]:
    """`rule` run as a resource rule on one resource."""
    return messages(rule, resource_args(type_, inputs, config, name="res"))


@dataclass
class Item:
    type: str
    name: str
    inputs: dict[str, Any]
    urn: str = ""
    parent: str | None = None

    def __post_init__(self) -> None:
        self.urn = self.urn or urn_of(self.type, self.name)


@dataclass
class PlanCopy:
    """The resources of a plan as deep copies of their inputs, to break one thing in."""

    items: list[Item] = field(default_factory=list)

    @classmethod
    def of(cls, plan: Any) -> Self:
        """From a stacks.plan.Plan."""
        return cls(
            [
                Item(r.type, r.name, copy.deepcopy(dict(r.inputs)), r.urn, r.parent)
                for r in plan.resources
            ]
        )

    def get(self, type_: str, name: str) -> Item:
        return next(i for i in self.items if i.type == type_ and i.name == name)

    def find(self, type_: str, **props: Any) -> Item:
        """The one resource of `type_` whose props have these values (`name="l4"`)."""
        [found] = [
            i
            for i in self.items
            if i.type == type_ and all(i.inputs.get(k) == v for k, v in props.items())
        ]
        return found

    def inputs(self, type_: str, name: str) -> dict[str, Any]:
        return self.get(type_, name).inputs

    def drop(self, type_: str, name: str) -> None:
        self.items.remove(self.get(type_, name))

    def add(self, type_: str, name: str, inputs: dict[str, Any], parent: str | None = None) -> Item:
        item = Item(type_, name, inputs, parent=parent)
        self.items.append(item)
        return item

    def resources(self) -> list[PolicyResource]:
        """As StackValidationArgs carries them: wire-form props, parents linked."""
        found = {
            i.urn: PolicyResource(
                i.type, wire(i.inputs), i.urn, i.name, policy_options(i.parent), None, None, [], {}
            )
            for i in self.items
        }
        for i in self.items:
            if i.parent in found:
                found[i.urn].parent = found[i.parent]
        return list(found.values())

    def run(self, rule: Callable[[Any, Any], None]) -> list[tuple[str, str | None]]:
        """(message, urn) of every violation `rule` reports on the whole stack."""
        return violations(rule, stack_args(self.resources())).reported
