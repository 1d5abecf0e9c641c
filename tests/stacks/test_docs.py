"""The README stays true: every config field is in its reference, and CI runs its test command."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel

from mlstack.stacks import offline, schema
from mlstack.stacks.plan import PlannedResource

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def _models() -> list[type[BaseModel]]:
    return [
        obj
        for obj in vars(schema).values()
        if isinstance(obj, type) and issubclass(obj, schema.Model) and obj is not schema.Model
    ]


def test_every_config_field_is_documented_with_its_description() -> None:
    reference = README[README.index("## Config reference") :]
    missing = [
        f"{model.__name__}.{name}"
        for model in _models()
        for name, field in model.model_fields.items()
        if f"| `{name}` |" not in reference or (field.description or "") not in reference
    ]
    assert not missing, f"README config reference lacks: {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    commands = re.findall(r"```\n(.+?)\n```", README, flags=re.S)
    assert "bash tests/run.sh" in commands
    assert "bash tests/run.sh" in (REPO / ".ci" / "run").read_text()


def _readme_section(heading: str) -> str:
    start = README.index(heading)
    end = README.find("\n## ", start + len(heading))
    return README[start : end if end > 0 else None]


def _run_readme_program(
    monkeypatch: pytest.MonkeyPatch, code: str, config: dict[str, str]
) -> tuple[list[PlannedResource], dict[str, Any]]:
    monkeypatch.setattr(
        offline, "program", SimpleNamespace(main=lambda: exec(code, {"__name__": "__main__"}))
    )
    return offline.run_program("own", config, [])


def test_the_readme_own_program_examples_run_as_written(
    monkeypatch: pytest.MonkeyPatch, lab_config: dict[str, Any]
) -> None:
    """The README's two Pulumi programs of one's own (the whole platform; two add-ons on a
    cluster of one's own), run as written under the offline plan's mock runtime."""
    whole, addons = re.findall(
        r"```python\n(.+?)\n```", _readme_section("## Using mlstack in your own"), flags=re.S
    )
    secrets = {f"mlstack:{key}": "placeholder" for key in ("s3AccessKeyId", "s3SecretAccessKey")}
    resources, outputs = _run_readme_program(
        monkeypatch, whole, {"mlstack:platform": json.dumps(lab_config), **secrets}
    )
    assert {"mlstack:policies:Tenancy", "mlstack:kubernetes:Kueue"} <= {r.type for r in resources}
    assert outputs["namespaces"] == [t["name"] for t in lab_config["teams"]]

    resources, _ = _run_readme_program(monkeypatch, addons, {})
    components = {(r.type, r.name) for r in resources if r.type.startswith("mlstack:")}
    assert components == {
        ("mlstack:kubernetes:JobSetController", "jobset"),
        ("mlstack:kubernetes:Kueue", "kueue"),
    }
    release = next(r for r in resources if r.name == "kueue-release")
    assert release.provider is not None and "::lab::" in release.provider
