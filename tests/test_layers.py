"""The layer rule: no module imports from a layer above its own.

The code is built in layers (LAYERS, lowest first). A module may import from its own layer or
a lower one, never from a higher one, so that each layer can be read, tested and changed without
what is built on top of it. The orchestrators at the top assemble and drive the program (the
platform assembly, config validation, the `mlstack` CLI, the offline plan, its rendering and
report); nothing imports them but each other.

Decisions the table records:
- The workload runtime (the code in the containers and `mlstack local`) is the bottom layer: it
  imports nothing of the Pulumi side, which may import its contract (environment variable names,
  training configs, the S3 endpoint variables), since the runtime is what the deploy layer deploys.
- `stacks.plan` (the plan record) is a foundation module: `policies.check` runs the policy pack on
  a plan, and the offline runner that fills plans sits at the top.
- `policies.check` is not an orchestrator: it evaluates the pack on the plan it is given; reading
  stack files, running the program and printing are `stacks.cli`'s and `stacks.report`'s. It
  stays in the policies layer.
- Every import statement counts, including those inside functions and under
  `if TYPE_CHECKING:`: a type a module names is part of its design even when it is not loaded at
  run time. A module loaded by name (components.backend's registry of cloud backends) is not seen;
  the registry loads only components/<cloud>/backend.py, in its own layer.
- The package `__init__` of stacks/ and of workloads/ holds modules of several layers; it must
  import nothing.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP_PACKAGES = ("stacks", "components", "policies", "workloads")
#: Packages whose modules sit in several layers; their `__init__` must import nothing.
MIXED_PACKAGES = frozenset({"mlstack.stacks", "mlstack.workloads"})

#: The layers, lowest first: (layer, module prefixes). A prefix covers the module of that name
#: and everything under it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "runtime",
        (
            "mlstack.workloads.train",
            "mlstack.workloads.serve",
            "mlstack.workloads.storage",
            "mlstack.workloads.contract",
            "mlstack.workloads.local",
            "mlstack.workloads.pipeline",
            "mlstack.workloads.registry",
        ),
    ),
    (
        "L0 foundation",
        (
            "mlstack.stacks.errors",
            "mlstack.stacks.schema",
            "mlstack.stacks.parse",
            "mlstack.stacks.prefixes",
            "mlstack.stacks.catalog",
            "mlstack.stacks.names",
            "mlstack.stacks.plan",
            "mlstack.stacks.versions",
            "mlstack.stacks.cron",
            # The stack config's pipelines in their runtime form: the deploy layer renders
            # them into the runner's ConfigMap, and the CLI runs them locally.
            "mlstack.stacks.pipelines",
        ),
    ),
    ("L1 components", ("mlstack.components",)),
    ("L2 policies", ("mlstack.policies",)),
    ("L3 deploy", ("mlstack.workloads.deploy",)),
    (
        "top: orchestrators",
        (
            "mlstack.stacks.platform",
            "mlstack.stacks.validate",
            "mlstack.stacks.cli",
            "mlstack.stacks.program",
            "mlstack.stacks.offline",
            "mlstack.stacks.render",
            "mlstack.stacks.report",
            "mlstack.stacks.capacity",
            "mlstack.stacks.stackfile",
        ),
    ),
)

#: Imports that break the rule today, by importing module: they sit in code another change is
#: restructuring, and go when it lands. Every entry must still be a violation
#: (test_known_violations_are_current), so the list cannot outlive the fixes.
KNOWN_VIOLATIONS: dict[str, frozenset[str]] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("mlstack", *parts))


def modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for top in TOP_PACKAGES
        for path in sorted((ROOT / top).rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def layer_of(module: str) -> int | None:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(f"{p}.") for p in prefixes):
            return rank
    return None


def imports(module: str, path: Path, known: set[str]) -> Iterator[str]:
    """The mlstack modules `module` imports: `from package import submodule` names the
    submodule, `from module import name` the module."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "mlstack")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            if base.split(".")[0] != "mlstack":
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield submodule if submodule in known else base


def violations() -> set[tuple[str, str]]:
    """(importer, imported) for every import of a higher layer."""
    found = modules()
    known = set(found)
    result = set()
    for module, path in found.items():
        rank = layer_of(module)
        if rank is None:
            continue
        for target in imports(module, path, known):
            target_rank = layer_of(target)
            if target_rank is not None and target_rank > rank:
                result.add((module, target))
    return result


def describe(module: str) -> str:
    rank = layer_of(module)
    return f"{module} ({LAYERS[rank][0] if rank is not None else 'no layer'})"


def test_every_module_has_a_layer() -> None:
    found = modules()
    known = set(found)
    unplaced = sorted(m for m in found if layer_of(m) is None and m not in MIXED_PACKAGES)
    assert not unplaced, f"add these modules to a layer in LAYERS: {', '.join(unplaced)}"
    importing = {m: sorted(imports(m, found[m], known)) for m in MIXED_PACKAGES}
    assert not any(importing.values()), f"mixed-layer packages import modules: {importing}"
    targets = {t for m, p in found.items() for t in imports(m, p, known)}
    strays = sorted(t for t in targets if layer_of(t) is None and t not in MIXED_PACKAGES)
    assert not strays, f"imports of modules outside every layer: {', '.join(strays)}"


def test_no_module_imports_a_layer_above_its_own() -> None:
    allowed = {(m, t) for m, targets in KNOWN_VIOLATIONS.items() for t in targets}
    upward = sorted(violations() - allowed)
    assert not upward, "imports of a higher layer (move the shared piece down instead):\n" + (
        "\n".join(f"{describe(m)} imports {describe(t)}" for m, t in upward)
    )


def test_known_violations_are_current() -> None:
    allowed = {(m, t) for m, targets in KNOWN_VIOLATIONS.items() for t in targets}
    stale = sorted(allowed - violations())
    assert not stale, "no longer violations; delete them from KNOWN_VIOLATIONS:\n" + "\n".join(
        f"{m} -> {t}" for m, t in stale
    )
