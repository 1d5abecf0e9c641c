"""workloads/Dockerfile, read as text (no Docker engine here): what can be checked offline is that
it agrees with the manifests and pyproject.toml, which is where it would silently drift."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from workloads.deploy.jobset import ENTRY_MODULE, RUN_AS_USER, SCRATCH_DIR

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "workloads" / "Dockerfile"
#: What the image needs at run time: the `workloads` extra and the object-store clients.
RUNTIME = ("jax", "flax", "optax", "orbax-checkpoint", "numpy", "boto3", "google-cloud-storage")


@dataclass
class Stage:
    name: str
    base: str
    #: instruction -> its arguments, one entry per occurrence (continuations joined).
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, instruction: str) -> str | None:
        found = [args for name, args in self.instructions if name == instruction]
        return found[-1] if found else None

    def pip_requirements(self) -> list[str]:
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


def _pyproject_ranges() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = [*project["dependencies"], *project["optional-dependencies"]["workloads"]]
    ranges = {}
    for spec in specs:
        name, rest = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?(.*)$", spec).groups()  # type: ignore[union-attr]
        ranges[name.lower()] = rest.strip()
    return ranges


def test_the_default_target_is_the_gpu_image_and_cpu_is_a_target() -> None:
    names = [s.name for s in _stages()]
    assert names[-1] == "gpu", "`docker build` without --target builds the last stage"
    assert "cpu" in names


def test_base_images_are_pinned_by_version_tag() -> None:
    for stage in _stages():
        if stage.base in STAGES:
            continue
        image, _, tag = stage.base.rpartition(":")
        assert image and tag and tag != "latest", stage.base
        assert re.match(r"^\d+\.\d+\.\d+-", tag), f"{stage.base}: pin a patch version"


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_each_image_runs_as_the_pods_user(target: str) -> None:
    assert _inherited(STAGES[target], "USER") == f"{RUN_AS_USER}:{RUN_AS_USER}"
    useradd = _inherited(STAGES[target], "RUN") or ""
    base_runs = " ".join(a for n, a in STAGES["base"].instructions if n == "RUN")
    assert f"--uid {RUN_AS_USER}" in base_runs and f"--gid {RUN_AS_USER}" in base_runs, useradd


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_each_image_runs_the_entry_point_the_manifests_run(target: str) -> None:
    entry = json.loads(_inherited(STAGES[target], "ENTRYPOINT") or "null")
    assert entry == ["python", "-m", ENTRY_MODULE]
    module = REPO / Path(*ENTRY_MODULE.split(".")).with_suffix(".py")
    assert module.is_file(), f"{module} is the entry point the image and the JobSet run"
    copied = STAGES[target].last("COPY")
    assert copied == "workloads/ /app/workloads/"
    env = " ".join(a for n, a in STAGES["base"].instructions if n == "ENV")
    assert "PYTHONPATH=/app" in env
    # Writable places under a read-only root filesystem: the pod's scratch emptyDir.
    assert f"HOME={SCRATCH_DIR}" in env


def test_the_gpu_image_has_cuda_jax_and_the_cpu_image_has_not() -> None:
    gpu = STAGES["gpu"].pip_requirements()
    cpu = STAGES["cpu"].pip_requirements()
    assert any(r.startswith("jax[cuda12]") for r in gpu)
    assert not any("cuda" in r for r in cpu)


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_runtime_packages_have_pyprojects_version_ranges(target: str) -> None:
    ranges = _pyproject_ranges()
    installed = {}
    for requirement in STAGES[target].pip_requirements():
        name, rest = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?(.*)$", requirement).groups()  # type: ignore[union-attr]
        installed[name.lower()] = rest
    assert set(installed) == set(RUNTIME)
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
