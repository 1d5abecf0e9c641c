"""The README stays true: every config field is in its reference, and CI runs its test command."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from mlstack.stacks import schema

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
