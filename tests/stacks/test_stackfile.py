"""Finding and reading stack files, by name or path, with one-line errors that point at the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlstack.stacks.errors import ConfigError
from mlstack.stacks.stackfile import find_stack, project_root, read_stack, shipped_stacks
from mlstack.stacks.validate import load_platform

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_project_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLSTACK_PROJECT_DIR", raising=False)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _error(ref: str) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        read_stack(ref)
    assert len(exc.value.problems) == 1
    return exc.value


def test_a_stack_name_finds_the_shipped_file() -> None:
    assert find_stack("onprem-lab") == REPO / "stacks" / "Pulumi.onprem-lab.yaml"
    stack = read_stack("onprem-lab")
    assert stack.name == "onprem-lab"
    assert stack.platform["cloud"] == "onprem"


@pytest.mark.parametrize("filename", ["Pulumi.mine.yaml", "Pulumi.mine.yml"])
def test_a_path_reads_that_file_and_names_the_stack_after_it(tmp_path: Path, filename: str) -> None:
    path = _write(tmp_path / filename, "config:\n  mlstack:platform: {cloud: onprem}\n")
    stack = read_stack(str(path))
    assert stack.path == path
    assert stack.name == "mine"
    assert stack.platform == {"cloud": "onprem"}


def test_a_missing_stack_name_lists_the_shipped_stacks() -> None:
    err = _error("no-such-stack")
    assert "'no-such-stack'" in err.problems[0].path
    assert "onprem-lab" in err.problems[0].fix


def test_a_missing_stack_path_says_so(tmp_path: Path) -> None:
    err = _error(str(tmp_path / "Pulumi.gone.yaml"))
    assert err.problems[0].path == str(tmp_path / "Pulumi.gone.yaml")
    assert "no such stack file" in err.problems[0].message


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("config:\n\tmlstack:platform: x\n", 2, 1),
        ("config:\n  a: b\n c: d\n", 3, 2),
    ],
)
def test_malformed_yaml_points_at_file_line_and_column(
    tmp_path: Path, text: str, line: int, column: int
) -> None:
    path = _write(tmp_path / "Pulumi.broken.yaml", text)
    err = _error(str(path))
    assert err.problems[0].path == f"{path}:{line}:{column}"
    assert "invalid YAML" in err.problems[0].message
    assert "\n" not in str(err)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "config: [1, 2]\n"])
def test_a_file_that_is_not_a_config_mapping_is_one_problem(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path / "Pulumi.odd.yaml", text)
    err = _error(str(path))
    assert err.problems[0].path == str(path)
    assert "config:" in err.problems[0].message


def test_an_empty_file_has_no_platform(tmp_path: Path) -> None:
    stack = read_stack(str(_write(tmp_path / "Pulumi.empty.yaml", "")))
    assert stack.platform is None
    with pytest.raises(ConfigError) as exc:
        load_platform(stack.platform)
    assert "mlstack:platform" in str(exc.value)


def test_project_dir_override_reads_stacks_from_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path / "stacks" / "Pulumi.elsewhere.yaml", "config:\n  mlstack:platform: {}\n")
    monkeypatch.setenv("MLSTACK_PROJECT_DIR", str(tmp_path))
    assert project_root() == tmp_path
    assert shipped_stacks() == ["elsewhere"]
    assert read_stack("elsewhere").path == tmp_path / "stacks" / "Pulumi.elsewhere.yaml"
    err = _error("onprem-lab")
    assert "elsewhere" in err.problems[0].fix


def test_project_root_is_found_from_a_subdirectory(tmp_path: Path) -> None:
    _write(tmp_path / "Pulumi.yaml", yaml.safe_dump({"name": "mlstack", "runtime": "python"}))
    _write(tmp_path / "sub" / "Pulumi.yaml", yaml.safe_dump({"name": "other-project"}))
    start = tmp_path / "sub" / "deeper"
    start.mkdir()
    assert project_root(start) == tmp_path.resolve()


def test_project_root_defaults_to_this_checkout(tmp_path: Path) -> None:
    assert project_root(tmp_path) == REPO


def _laughs(levels: int) -> str:
    """A "billion laughs" stack file: each anchor holds nine aliases of the one before."""
    lines = ["config:", "  mlstack:platform:", "    cloud: onprem", "    x0: &a0 [lol, lol, lol]"]
    for i in range(1, levels + 1):
        lines.append(f"    x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_aliases_that_expand_exponentially_are_refused_at_once(tmp_path: Path) -> None:
    path = _write(tmp_path / "Pulumi.laughs.yaml", _laughs(9))
    assert len(path.read_bytes()) < 1024
    problem = _error(str(path)).problems[0]
    assert problem.path == str(path)
    assert "expands to more than 100,000 values through YAML aliases" in problem.message
    assert "anchors and aliases" in problem.fix


def test_a_few_aliases_still_work(tmp_path: Path) -> None:
    path = _write(tmp_path / "Pulumi.few.yaml", _laughs(2))
    platform = read_stack(str(path)).platform
    assert len(platform["x2"]) == 9 and platform["x2"][0][0] == ["lol", "lol", "lol"]


def test_an_alias_inside_its_own_value_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "Pulumi.loop.yaml", "config:\n  mlstack:platform: &p\n    me: *p\n")
    assert "alias (*name) inside the value it refers to" in _error(str(path)).problems[0].message


def test_deep_nesting_is_one_problem_not_a_recursion_error(tmp_path: Path) -> None:
    deep = "[" * 20_000 + "]" * 20_000
    path = _write(tmp_path / "Pulumi.deep.yaml", f"config:\n  mlstack:platform: {deep}\n")
    assert "nested too deeply" in _error(str(path)).problems[0].message


def test_an_oversized_stack_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = _write(tmp_path / "Pulumi.big.yaml", "config: {}\n" + "#" * 1_000_001 + "\n")
    assert "a stack file is at most 1,000,000" in _error(str(path)).problems[0].message
