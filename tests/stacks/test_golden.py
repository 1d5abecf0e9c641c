"""Golden plans: every shipped stack's resources and rendered manifests, checked in.

Each stack has three files under tests/data/golden/<stack>/: `resources.txt`, one line per
resource (type, logical name, parent) sorted; `manifests.yaml`, what `mlstack render` writes; and
`inputs.yaml`, the inputs of every other resource the engine would get (cloud resources, Helm
releases and their values, providers), secrets masked.
A change to the program shows its whole effect on every stack as a diff of these files: a
renamed resource (which `pulumi up` would replace) is a changed line, not a silent pass.
Regenerate after a deliberate change with `UPDATE_SNAPSHOT=1 bash tests/run.sh tests/stacks`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
from pathlib import Path

import pytest
import yaml

from mlstack.stacks.offline import run_plan
from mlstack.stacks.plan import Plan, mask_secrets
from mlstack.stacks.render import canonical, is_manifest, render_yaml
from mlstack.stacks.stackfile import read_stack, shipped_stacks

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"
UPDATE = os.environ.get("UPDATE_SNAPSHOT") == "1"


def resource_lines(plan: Plan) -> str:
    """`type name parent` per resource, sorted; the parent as `type name`, `-` for the stack."""
    by_urn = {r.urn: r for r in plan.resources}
    lines = []
    for r in plan.resources:
        parent = by_urn.get(r.parent) if r.parent else None
        where = f"{parent.type} {parent.name}" if parent is not None else "-"
        lines.append(f"{r.type} {r.name} {where}")
    return "\n".join(sorted(lines)) + "\n"


def other_inputs(plan: Plan) -> str:
    """Inputs of every custom resource that is not a rendered manifest, keyed `type name`."""
    entries = {
        f"{r.type} {r.name}": canonical(mask_secrets(r.inputs))
        for r in plan.resources
        if r.custom and not is_manifest(r)
    }
    return yaml.safe_dump(dict(sorted(entries.items())), sort_keys=False, width=100)


def _compare(path: Path, actual: str, *, update: bool = UPDATE) -> None:
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return
    assert path.exists(), f"{path} is missing: run with UPDATE_SNAPSHOT=1 to write it"
    expected = path.read_text()
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                str(path),
                "plan",
                n=1,
            )
        )
        pytest.fail(
            f"the plan differs from {path.name} (UPDATE_SNAPSHOT=1 accepts a deliberate "
            f"change):\n{diff[:6000]}",
            pytrace=False,
        )


@pytest.fixture(scope="module", params=shipped_stacks())
def plan(request: pytest.FixtureRequest) -> Plan:
    return run_plan(read_stack(request.param))


def test_resources_match_the_golden_file(plan: Plan) -> None:
    _compare(GOLDEN / plan.stack / "resources.txt", resource_lines(plan))


def test_manifests_match_the_golden_file(plan: Plan) -> None:
    _compare(GOLDEN / plan.stack / "manifests.yaml", render_yaml(plan))


def test_other_inputs_match_the_golden_file(plan: Plan) -> None:
    _compare(GOLDEN / plan.stack / "inputs.yaml", other_inputs(plan))


def test_a_renamed_resource_shows_up_in_the_golden_file(lab_plan: Plan) -> None:
    """A rename (which `pulumi up` carries out as a replacement) fails the comparison."""
    renamed = copy.copy(lab_plan)
    first = lab_plan.resources[0]
    renamed.resources = [
        dataclasses.replace(first, name=first.name + "-renamed"),
        *lab_plan.resources[1:],
    ]
    with pytest.raises(pytest.fail.Exception, match=rf"\+.* {first.name}-renamed "):
        _compare(GOLDEN / "onprem-lab" / "resources.txt", resource_lines(renamed), update=False)


def test_every_shipped_stack_has_golden_files() -> None:
    on_disk = {p.name for p in GOLDEN.iterdir() if p.is_dir()}
    assert on_disk == set(shipped_stacks()), "golden folders and shipped stacks differ"
