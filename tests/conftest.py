"""Shared fixtures: the shipped lab stack's config, stack files built from dicts, the lab plan,
and a way to run a small program under the same mock runtime as the offline plan."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

# Imported here, not at session end by its pytest plugin: after many plans in one process,
# CPython 3.11's AST constructor check fails ("recursion depth mismatch") when pytest rewrites
# a module that late, which crashed runs of a subset of the tests.
import hypothesis  # noqa: F401
import pytest
import yaml

from mlstack.stacks import offline
from mlstack.stacks.offline import run_plan
from mlstack.stacks.plan import Plan, PlannedResource
from mlstack.stacks.stackfile import PROJECT, StackFile, read_stack

REPO = Path(__file__).resolve().parents[1]
LAB_STACK_FILE = REPO / "stacks" / "Pulumi.onprem-lab.yaml"
_LAB_PLATFORM: dict[str, Any] = yaml.safe_load(LAB_STACK_FILE.read_text())["config"][
    f"{PROJECT}:platform"
]


#: make_stack(platform, name="test", **config): a StackFile with `platform` under
#: mlstack:platform and each keyword as `mlstack:<key>`.
MakeStack = Callable[..., StackFile]
#: run_mocked(program): the resources `program` declares under the offline mock runtime.
RunMocked = Callable[[Callable[[], object]], list[PlannedResource]]


@pytest.fixture
def lab_config() -> dict[str, Any]:
    """A fresh, mutable copy of the `mlstack:platform` map of stacks/Pulumi.onprem-lab.yaml."""
    return copy.deepcopy(_LAB_PLATFORM)


@pytest.fixture
def make_stack(tmp_path: Path) -> MakeStack:
    def make(platform: Any, name: str = "test", **config: Any) -> StackFile:
        entries = {f"{PROJECT}:platform": platform}
        entries.update({f"{PROJECT}:{key}": value for key, value in config.items()})
        return StackFile(name, tmp_path / f"Pulumi.{name}.yaml", entries)

    return make


@pytest.fixture(scope="session")
def lab_plan() -> Plan:
    """The offline plan of the shipped onprem-lab stack, run once per session."""
    return run_plan(read_stack("onprem-lab"))


@pytest.fixture
def run_mocked(monkeypatch: pytest.MonkeyPatch) -> RunMocked:
    """Run `program` instead of stacks.program.main under the offline plan's mock runtime."""

    def run(program: Callable[[], object]) -> list[PlannedResource]:
        monkeypatch.setattr(offline, "program", SimpleNamespace(main=program))
        resources, _ = offline.run_program("test", {}, [])
        return resources

    return run
