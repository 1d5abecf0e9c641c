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


#: Larger than any real stack file by far (the shipped ones are under 10 KB); bounds parse time.
MAX_STACK_FILE_CHARS = 1_000_000
#: How many values the document may hold once YAML aliases are expanded. Aliases cost nothing
#: to parse, but every later walk of the config (validation, JSON for the engine, the plan)
#: visits the expanded tree: nine nested aliases of nine make a 1 KB file with 387 million
#: values ("billion laughs"), which used to hang `mlstack plan` for minutes.
MAX_EXPANDED_VALUES = 100_000


class _RecursiveAliasError(Exception):
    pass


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Values in `node` with every alias expanded; shared nodes are counted once per use
    but computed once, so this is linear in the file, not in the expansion."""
    key = id(node)
    if key in memo:
        if memo[key] < 0:  # still being counted: the node contains an alias to itself
            raise _RecursiveAliasError
        return memo[key]
    memo[key] = -1
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    memo[key] = size
    return size


def _load_bounded(text: str, path: Path) -> Any:
    """`yaml.safe_load`, refusing a document whose aliases expand past MAX_EXPANDED_VALUES."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:  # PyYAML composes recursively: thousands of `[` exhaust it
            raise ConfigError(
                [Problem(str(path), "is nested too deeply to read", "flatten the YAML")]
            ) from None
        if node is None:
            return None
        try:
            size = _expanded_size(node, {})
        except RecursionError:
            raise ConfigError(
                [Problem(str(path), "is nested too deeply to read", "flatten the YAML")]
            ) from None
        except _RecursiveAliasError:
            raise ConfigError(
                [
                    Problem(
                        str(path),
                        "has a YAML alias (*name) inside the value it refers to",
                        "write the value out; a config cannot contain itself",
                    )
                ]
            ) from None
        if size > MAX_EXPANDED_VALUES:
            raise ConfigError(
                [
                    Problem(
                        str(path),
                        f"expands to more than {MAX_EXPANDED_VALUES:,} values through YAML "
                        "aliases (*name)",
                        "write the values out, or use fewer nested anchors and aliases",
                    )
                ]
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_stack(ref: str, root: Path | None = None) -> StackFile:
    """Read a stack file; unreadable or malformed YAML is one ConfigError line with its place."""
    path = find_stack(ref, root)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            [Problem(str(path), "cannot be read", f"check the file ({exc})")]
        ) from None
    if len(text) > MAX_STACK_FILE_CHARS:
        raise ConfigError(
            [
                Problem(
                    str(path),
                    f"is {len(text):,} characters; a stack file is at most "
                    f"{MAX_STACK_FILE_CHARS:,}",
                    "move bulky data (manifests, datasets) out of the stack file",
                )
            ]
        )
    try:
        data = _load_bounded(text, path)
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
