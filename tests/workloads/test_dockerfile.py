"""workloads/Dockerfile, read as text (no Docker engine here): what can be checked offline is that
it agrees with the manifests and pyproject.toml, which is where it would silently drift."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mlstack.workloads.deploy import jobset, serving
from mlstack.workloads.deploy.pods import RUN_AS_USER, SCRATCH_DIR

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "workloads" / "Dockerfile"
#: The object-store clients the images need besides the `workloads` extra.
STORE_CLIENTS = ("boto3", "google-cloud-storage")
#: Each image target and the entry point it runs (the one its manifests run).
TARGETS = {
    "cpu": jobset.ENTRY_MODULE,
    "gpu": jobset.ENTRY_MODULE,
    "serve-cpu": serving.ENTRY_MODULE,
    "serve": serving.ENTRY_MODULE,
}
GPU_TARGETS = ("gpu", "serve")


@dataclass
class Stage:
    name: str
    base: str
    #: instruction -> its arguments, one entry per occurrence (continuations joined).
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, instruction: str) -> str | None:
        found = [args for name, args in self.instructions if name == instruction]
        return found[-1] if found else None

    def own_pip_requirements(self) -> list[str]:
        found = []
        for name, args in self.instructions:
            if name == "RUN" and args.startswith("pip install"):
                found += re.findall(r'"([^"]+)"', args)
        return found


def _stages() -> list[Stage]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        args = re.sub(r"\s+", " ", args.strip())
        if instruction == "FROM":
            base, _, name = args.partition(" AS ")
            stages.append(Stage(name=name, base=base))
        else:
            stages[-1].instructions.append((instruction, args))
    return stages


STAGES = {s.name: s for s in _stages()}


def _inherited(stage: Stage, instruction: str) -> str | None:
    """An instruction's last value in `stage` or the stages it is built on."""
    while True:
        value = stage.last(instruction)
        if value is not None or stage.base not in STAGES:
            return value
        stage = STAGES[stage.base]


def _pip_requirements(stage: Stage) -> list[str]:
    """What `pip install` puts into a stage's image, its base stages' included."""
    found = stage.own_pip_requirements()
    while stage.base in STAGES:
        stage = STAGES[stage.base]
        found = stage.own_pip_requirements() + found
    return found


def _name_and_range(spec: str) -> tuple[str, str]:
    name, rest = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?(.*)$", spec).groups()  # type: ignore[union-attr]
    return name.lower(), rest.strip()


def _pyproject() -> dict[str, list[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {
        "dependencies": project["dependencies"],
        "workloads": project["optional-dependencies"]["workloads"],
    }


def _pyproject_ranges() -> dict[str, str]:
    specs = _pyproject()
    return dict(_name_and_range(spec) for spec in [*specs["dependencies"], *specs["workloads"]])


def _runtime() -> set[str]:
    """What the images need at run time: the `workloads` extra and the object-store clients."""
    return {_name_and_range(spec)[0] for spec in _pyproject()["workloads"]} | set(STORE_CLIENTS)


def test_the_default_target_is_the_gpu_training_image_and_the_others_are_targets() -> None:
    names = [s.name for s in _stages()]
    assert names[-1] == "gpu", "`docker build` without --target builds the last stage"
    assert set(TARGETS) <= set(names)


@pytest.mark.parametrize(("train", "serve"), [("cpu", "serve-cpu"), ("gpu", "serve")])
def test_training_and_serving_share_one_runtime_per_device_kind(train: str, serve: str) -> None:
    """Both images of a device kind are built on one stage: the same packages and code, so a
    registry stores their layers once and the serving image runs the code that was trained."""
    assert STAGES[train].base == STAGES[serve].base
    runtime = STAGES[STAGES[train].base]
    assert runtime.own_pip_requirements() and runtime.last("COPY")


def test_base_images_are_pinned_by_version_tag() -> None:
    for stage in _stages():
        if stage.base in STAGES:
            continue
        image, _, tag = stage.base.rpartition(":")
        assert image and tag and tag != "latest", stage.base
        assert re.match(r"^\d+\.\d+\.\d+-", tag), f"{stage.base}: pin a patch version"


@pytest.mark.parametrize("target", TARGETS)
def test_each_image_runs_as_the_pods_user(target: str) -> None:
    assert _inherited(STAGES[target], "USER") == f"{RUN_AS_USER}:{RUN_AS_USER}"
    useradd = _inherited(STAGES[target], "RUN") or ""
    base_runs = " ".join(a for n, a in STAGES["base"].instructions if n == "RUN")
    assert f"--uid {RUN_AS_USER}" in base_runs and f"--gid {RUN_AS_USER}" in base_runs, useradd


@pytest.mark.parametrize("target", TARGETS)
def test_each_image_runs_the_entry_point_the_manifests_run(target: str) -> None:
    entry_module = TARGETS[target]
    entry = json.loads(_inherited(STAGES[target], "ENTRYPOINT") or "null")
    assert entry == ["python", "-m", entry_module]
    module = REPO / Path(*entry_module.removeprefix("mlstack.").split(".")).with_suffix(".py")
    assert module.is_file(), f"{module} is the entry point the image and its manifests run"
    copied = _inherited(STAGES[target], "COPY")
    assert copied == "workloads/ /app/mlstack/workloads/"
    env = " ".join(a for n, a in STAGES["base"].instructions if n == "ENV")
    assert "PYTHONPATH=/app" in env
    # Writable places under a read-only root filesystem: the pod's scratch emptyDir.
    assert f"HOME={SCRATCH_DIR}" in env


@pytest.mark.parametrize("target", TARGETS)
def test_gpu_images_have_cuda_jax_and_cpu_images_have_not(target: str) -> None:
    requirements = _pip_requirements(STAGES[target])
    if target in GPU_TARGETS:
        assert any(r.startswith("jax[cuda12]") for r in requirements)
    else:
        assert not any("cuda" in r for r in requirements)


@pytest.mark.parametrize("target", TARGETS)
def test_runtime_packages_have_pyprojects_version_ranges(target: str) -> None:
    """Every package of the `workloads` extra (the serving workload's too) is in every image,
    at pyproject's range: adding one to pyproject.toml means adding it here."""
    ranges = _pyproject_ranges()
    installed = dict(_name_and_range(r) for r in _pip_requirements(STAGES[target]))
    assert set(installed) == _runtime()
    for name, spec in installed.items():
        assert spec == ranges[name], f"{name}: Dockerfile {spec!r}, pyproject {ranges[name]!r}"


def test_the_build_context_sends_the_workloads_without_deploy() -> None:
    lines = [
        line
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[:2] == ["*", "!workloads/"], "only the workloads package goes in"
    assert "workloads/deploy/" in lines, "the deploy side (Pulumi) is not needed in the image"
