"""The record of a plan: every resource the program registered, as the engine would see it.

`stacks.offline` fills it by running the program under the SDK's mock runtime; `mlstack plan
--json` writes it, `stacks.render` turns it into manifests and `policies.check` runs the policy
pack on it. Inputs are kept in wire form, so a secret is an envelope (`is_secret`) that callers
unwrap, mask or map.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pulumi.runtime import rpc

from mlstack.stacks.schema import Platform

SECRET_SIG = rpc._special_sig_key  # pyright: ignore[reportPrivateUsage]
SECRET_VALUE = rpc._special_secret_sig  # pyright: ignore[reportPrivateUsage]


@dataclass(frozen=True)
class PlannedResource:
    """One registration, as the engine would have seen it."""

    type: str
    name: str
    urn: str
    parent: str | None
    custom: bool
    provider: str | None
    inputs: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "name": self.name,
            "urn": self.urn,
            "parent": self.parent,
            "custom": self.custom,
            "provider": self.provider,
            "inputs": mask_secrets(self.inputs),
        }


@dataclass
class Plan:
    stack: str
    platform: Platform
    resources: list[PlannedResource]
    outputs: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def get(self, type_: str, name: str) -> PlannedResource:
        """The resource with this type token and logical name (registration order is random)."""
        for r in self.resources:
            if r.type == type_ and r.name == name:
                return r
        raise KeyError(f"no {type_} named {name!r} in the plan of {self.stack}")

    def of_type(self, type_: str) -> list[PlannedResource]:
        return [r for r in self.resources if r.type == type_]

    def by_parent(self) -> dict[str | None, list[PlannedResource]]:
        """Resources by parent URN; None holds the top level (children of the root stack)."""
        urns = {r.urn for r in self.resources}
        groups: dict[str | None, list[PlannedResource]] = {}
        for r in self.resources:
            groups.setdefault(r.parent if r.parent in urns else None, []).append(r)
        return groups

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "cloud": self.platform.cloud,
            "resources": [r.to_json() for r in sorted(self.resources, key=lambda r: r.urn)],
            "outputs": mask_secrets(self.outputs),
            "notes": self.notes,
        }


def is_secret(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get(SECRET_SIG) == SECRET_VALUE


def map_secrets(value: Any, fn: Callable[[Mapping[str, Any]], Any]) -> Any:
    """A copy of `value` with every wire-form secret envelope replaced by `fn(envelope)`."""
    if is_secret(value):
        return fn(value)
    if isinstance(value, Mapping):
        return {k: map_secrets(v, fn) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [map_secrets(v, fn) for v in value]
    return value


def mask_secrets(value: Any) -> Any:
    """A copy with each secret's envelope kept and its value hidden."""
    return map_secrets(value, lambda _: {SECRET_SIG: SECRET_VALUE, "value": "[secret]"})
