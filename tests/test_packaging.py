"""The installed package: everything under `mlstack.*`, no generic top-level import names.

pyproject.toml maps the name `mlstack` to the repository root and lists its subpackages; these
tests build the wheel `pip install .` would install and read what it holds.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: The folders that are the package's parts (the product's fixed top-level layout).
PARTS = ("stacks", "components", "workloads", "policies")


def _source_packages() -> set[str]:
    """Every folder of the parts holding Python modules, as a dotted `mlstack.` name."""
    return {
        "mlstack." + ".".join(path.parent.relative_to(REPO).parts)
        for part in PARTS
        for path in (REPO / part).rglob("*.py")
        if "__pycache__" not in path.parts and path.parent.name != "pack"
    }


def test_pyproject_lists_every_package_folder() -> None:
    """A folder missing from the list would be missing from every installed copy."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {"mlstack": "."}
    assert set(config["packages"]) == {"mlstack", *_source_packages()}
    for package in config["packages"]:
        folder = REPO.joinpath(*package.split(".")[1:])
        assert (folder / "__init__.py").is_file(), f"{folder} needs an __init__.py"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"),
            *("--disable-pip-version-check", "-w", str(out), str(REPO)),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("mlstack-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_claims_only_the_mlstack_name(wheel: zipfile.ZipFile) -> None:
    top = {name.split("/", 1)[0] for name in wheel.namelist()}
    assert {t for t in top if not t.endswith(".dist-info")} == {"mlstack"}


def test_the_wheel_holds_every_module_and_the_shipped_stacks(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    modules = {
        "mlstack/" + str(path.relative_to(REPO))
        for part in PARTS
        for path in (REPO / part).rglob("*.py")
        if "__pycache__" not in path.parts and path.parent.name != "pack"
    }
    assert modules <= names, sorted(modules - names)[:5]
    stacks = {f"mlstack/stacks/{p.name}" for p in (REPO / "stacks").glob("Pulumi.*.yaml")}
    assert stacks and stacks <= names


def test_the_console_script_names_the_package(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    assert "mlstack = mlstack.stacks.cli:main" in wheel.read(entry_points).decode()


def test_importing_mlstack_loads_no_provider_sdk() -> None:
    """The public API loads on first use: the workload images import `mlstack.workloads`
    without Pulumi's providers, and `mlstack.build_platform` is there when asked for."""
    code = (
        "import sys, mlstack\n"
        "assert not [m for m in sys.modules if m.startswith(('pulumi', 'jax'))]\n"
        "assert callable(mlstack.build_platform) and callable(mlstack.load_platform)\n"
        "assert 'pulumi' in sys.modules\n"
        "for generic in ('stacks', 'components', 'workloads', 'policies'):\n"
        "    assert generic not in sys.modules, generic\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd="/")


def test_python_m_mlstack_outside_the_engine_is_the_command_line() -> None:
    """The root __main__.py is the Pulumi program under the engine; run by hand it is the CLI."""
    proc = subprocess.run(
        [sys.executable, "-m", "mlstack", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Usage: python -m mlstack" in proc.stdout and "Traceback" not in proc.stderr


def test_pulumi_kubernetes_floor_has_the_helm_release_crd_scope_fix() -> None:
    """pulumi/pulumi-kubernetes PR 4417 (resolve a custom resource's scope from the CRDs of a
    Helm Release in the same program) shipped in 4.32.0 (PR 4419); below it, Kueue's objects
    may be previewed with the wrong scope on the first `pulumi up`."""
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in dependencies if d.startswith("pulumi-kubernetes")]
    floor, ceiling = spec.removeprefix("pulumi-kubernetes").split(",")
    assert floor.startswith(">=")
    assert tuple(int(p) for p in floor[2:].split(".")) >= (4, 32)
    assert ceiling == "<5"
