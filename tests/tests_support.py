"""Helpers shared by test modules in different folders (tests/ is on sys.path via conftest)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from stacks import offline
from stacks.errors import ConfigError, Problem
from stacks.offline import Plan, PlannedResource
from stacks.stackfile import read_stack
from stacks.validate import load_platform


def problems(config: Any) -> list[Problem]:
    """Every problem of a config that must not load."""
    with pytest.raises(ConfigError) as exc:
        load_platform(config)
    return list(exc.value.problems)


def only_problem(config: Any) -> Problem:
    """The config's single problem, checked to read as one line with a fix."""
    found = problems(config)
    assert len(found) == 1, [str(p) for p in found]
    p = found[0]
    line = str(p)
    assert "\n" not in line and line.startswith(f"{p.path}: ") and "; fix: " in line, line
    assert p.fix.strip()
    return p


@dataclass(frozen=True)
class Options:
    """Resource options of one registration (not part of PlannedResource)."""

    protect: bool
    retain_on_delete: bool
    ignore_changes: tuple[str, ...]
    dependencies: frozenset[str]


@dataclass(frozen=True)
class PlanWithOptions:
    """A shipped stack's offline plan with each resource's options, by URN."""

    stack: str
    plan: Plan
    options: Mapping[str, Options]

    def get(self, type_: str, name: str) -> PlannedResource:
        return self.plan.get(type_, name)

    def of_type(self, type_: str) -> list[PlannedResource]:
        return self.plan.of_type(type_)

    def opts(self, resource: PlannedResource) -> Options:
        return self.options[resource.urn]

    def children(self, parent: PlannedResource, type_: str) -> list[PlannedResource]:
        return [r for r in self.of_type(type_) if r.parent == parent.urn]


def plan_with_options(stack: str) -> tuple[Plan, dict[str, Options]]:
    """Plan a shipped stack with a RecordingMonitor that also keeps each registration's
    protect, retainOnDelete, ignoreChanges and dependencies."""
    options: dict[str, Options] = {}

    class OptionsMonitor(offline.RecordingMonitor):
        def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
            response = super().RegisterResource(request)
            options[response.urn] = Options(
                protect=bool(request.protect),
                retain_on_delete=bool(request.retainOnDelete),
                ignore_changes=tuple(request.ignoreChanges),
                dependencies=frozenset(request.dependencies),
            )
            return response

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(offline, "RecordingMonitor", OptionsMonitor)
        plan = offline.run_plan(read_stack(stack))
    return plan, options


def bad_extra_manifests() -> list[dict[str, Any]]:
    """Extra objects for the lab stack that break several rules at once: a privileged GPU Job
    with a :latest image from Docker Hub, no queue label and no GPU toleration, and a wildcard
    ClusterRole bound to a group as cluster-admin."""
    return [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "rogue", "namespace": "vision"},
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "train",
                                "image": "docker.io/library/python:latest",
                                "securityContext": {"privileged": True},
                                "resources": {"limits": {"nvidia.com/gpu": 8}},
                            }
                        ],
                    }
                }
            },
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "everything"},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "vision-admins"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "lab-vision"}
            ],
        },
    ]
