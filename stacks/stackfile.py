"""Find and read stack config files (`stacks/Pulumi.<stack>.yaml`) the way the Pulumi CLI does."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlstack.stacks.errors import ConfigError, Problem

PROJECT = "mlstack"


@dataclass(frozen=True)
class StackFile:
    name: str
    path: Path
    #: The file's `config:` map, keys as written ("mlstack:platform", ...).
    config: Mapping[str, Any]

    @property
    def platform(self) -> Any:
        return self.config.get(f"{PROJECT}:platform")


def project_root(start: Path | None = None) -> Path:
    """The directory holding mlstack's Pulumi.yaml: from `start` (default cwd) upwards, else
    the checkout this package was loaded from."""
    env = os.environ.get("MLSTACK_PROJECT_DIR")
    if env:
        return Path(env)
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        marker = folder / "Pulumi.yaml"
        if marker.is_file() and _is_mlstack_project(marker):
            return folder
    return Path(__file__).resolve().parent.parent


def _is_mlstack_project(path: Path) -> bool:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, Mapping) and data.get("name") == PROJECT


def stacks_dir(root: Path | None = None) -> Path:
    return (root or project_root()) / "stacks"


def shipped_stacks(root: Path | None = None) -> list[str]:
    return sorted(
        p.name.removeprefix("Pulumi.").removesuffix(".yaml")
        for p in stacks_dir(root).glob("Pulumi.*.yaml")
    )


def find_stack(ref: str, root: Path | None = None) -> Path:
    """A stack name in stacks/ or a path to a stack file; a miss lists the shipped stacks."""
    candidate = Path(ref)
    if candidate.suffix in (".yaml", ".yml") or os.sep in ref:
        if candidate.is_file():
            return candidate
        raise ConfigError([Problem(ref, "no such stack file", "check the path")])
    path = stacks_dir(root) / f"Pulumi.{ref}.yaml"
    if path.is_file():
        return path
    known = ", ".join(shipped_stacks(root)) or "none"
    raise ConfigError(
        [Problem(f"stack {ref!r}", f"not found: no {path}", f"use one of: {known}, or a path")]
    )


def read_stack(ref: str, root: Path | None = None) -> StackFile:
    """Read a stack file; unreadable or malformed YAML is one ConfigError line with its place."""
    path = find_stack(ref, root)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            [Problem(str(path), "cannot be read", f"check the file ({exc})")]
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise ConfigError([Problem(where, f"invalid YAML: {problem}", "fix the syntax")]) from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping) or not isinstance(data.get("config", {}), Mapping):
        raise ConfigError(
            [Problem(str(path), "a stack file is a mapping with a config: section", "fix it")]
        )
    name = path.name.removeprefix("Pulumi.").removesuffix(".yaml").removesuffix(".yml")
    return StackFile(name=name, path=path, config=dict(data.get("config") or {}))
