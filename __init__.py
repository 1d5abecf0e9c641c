"""mlstack: a typed, testable ML platform on AWS, GCP or on-prem Kubernetes, as a Pulumi project.

The repository root is this package (pyproject.toml maps `mlstack` to it), so installed, every
module lives under `mlstack.*`: `mlstack.stacks`, `mlstack.components.<cloud>`,
`mlstack.components.kubernetes`, `mlstack.policies`, `mlstack.workloads`. The names below are
the public API for a Pulumi program of your own; they load on first use, so
`import mlstack.workloads.train` pays for neither Pulumi's providers nor the config schema.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlstack.stacks.errors import ConfigError, Problem
    from mlstack.stacks.platform import build_platform
    from mlstack.stacks.program import ConfigSecrets
    from mlstack.stacks.schema import Platform
    from mlstack.stacks.validate import load_platform

#: Public name -> the module that defines it.
_EXPORTS = {
    "build_platform": "mlstack.stacks.platform",
    "load_platform": "mlstack.stacks.validate",
    "Platform": "mlstack.stacks.schema",
    "ConfigSecrets": "mlstack.stacks.program",
    "ConfigError": "mlstack.stacks.errors",
    "Problem": "mlstack.stacks.errors",
}

__all__ = [
    "ConfigError",
    "ConfigSecrets",
    "Platform",
    "Problem",
    "build_platform",
    "load_platform",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mlstack' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
