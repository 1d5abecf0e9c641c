"""Property-based: whatever config arrives, the only failure is a ConfigError of one-line problems.

Two generators: arbitrary JSON-like trees (mostly nonsense), and a shipped stack's config
(onprem-lab, aws-prod or gcp-prod) with random fields replaced, removed or added (mostly
almost-right, which reaches the cross-field and cloud checks). Either way load_platform
returns a Platform or raises ConfigError; nothing else escapes. A config that loads must also
plan.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mlstack.stacks.cli import app
from mlstack.stacks.errors import ConfigError
from mlstack.stacks.offline import run_plan
from mlstack.stacks.schema import Platform
from mlstack.stacks.stackfile import StackFile
from mlstack.stacks.validate import load_platform

REPO = Path(__file__).resolve().parents[2]
BASES = {
    stack: yaml.safe_load((REPO / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"][
        "mlstack:platform"
    ]
    for stack in ("onprem-lab", "aws-prod", "gcp-prod")
}
KEYS = sorted({k for base in BASES.values() for k in base})

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["onprem", "aws", "gcp", "gpu", "cpu", "spot", "h100-80gb", "l4", "1.33"]),
)
json_trees = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=12), st.sampled_from(KEYS)), inner, max_size=5),
    ),
    max_leaves=25,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


PATHS = {stack: [p for p in _paths(base) if p] for stack, base in BASES.items()}


@st.composite
def mutated_config(draw: st.DrawFn) -> dict[str, Any]:
    stack = draw(st.sampled_from(sorted(BASES)))
    cfg = copy.deepcopy(BASES[stack])
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path = draw(st.sampled_from(PATHS[stack]))
        parent: Any = cfg
        try:
            for part in path[:-1]:
                parent = parent[part]
            key = path[-1]
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                parent[key] = draw(json_trees)
            elif action == "delete":
                del parent[key]
            elif isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=10))] = draw(json_trees)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or reshaped this path
    return cfg


def _assert_clean(raw: Any) -> Platform | None:
    try:
        return load_platform(raw)
    except ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:
            line = str(problem)
            assert "\n" not in line
            assert line.startswith("platform") and "fix: " in line
        return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_trees)
def test_arbitrary_trees_never_escape(raw: Any) -> None:
    _assert_clean(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_config())
def test_mutated_shipped_configs_never_escape(raw: dict[str, Any]) -> None:
    _assert_clean(raw)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_config())
def test_a_config_that_loads_also_plans(raw: dict[str, Any]) -> None:
    if _assert_clean(raw) is None:
        return
    plan = run_plan(StackFile("fuzz", Path("Pulumi.fuzz.yaml"), {"mlstack:platform": raw}))
    assert plan.resources


runner = CliRunner()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_cli_on_arbitrary_file_text_exits_0_or_2(tmp_path_factory: Any, text: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "Pulumi.fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    result = runner.invoke(app, ["plan", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "internal error" not in result.output
