"""The platform assembly as a library call: a secret the platform needs and that is not set
stops it before anything is declared, in `mlstack.build_platform` as in the Pulumi program."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pulumi
import pytest

from mlstack.stacks import offline
from mlstack.stacks.errors import ConfigError
from mlstack.stacks.plan import PlannedResource
from mlstack.stacks.platform import build_platform
from mlstack.stacks.validate import load_platform

RunMocked = Callable[[Callable[[], object]], list[PlannedResource]]
MISSING = [
    "mlstack:s3AccessKeyId: required secret is not set; fix: "
    "pulumi config set --secret mlstack:s3AccessKeyId <value>",
    "mlstack:s3SecretAccessKey: required secret is not set; fix: "
    "pulumi config set --secret mlstack:s3SecretAccessKey <value>",
]


class NoSecrets:
    def get(self, key: str) -> pulumi.Output[str] | None:
        return None


def test_build_platform_without_a_required_secret_declares_nothing(
    lab_config: dict[str, Any], run_mocked: RunMocked
) -> None:
    platform = load_platform(lab_config)
    raised: list[ConfigError] = []

    def program() -> None:
        try:
            build_platform(platform, NoSecrets())
        except ConfigError as exc:
            raised.append(exc)

    assert run_mocked(program) == []
    (error,) = raised
    assert str(error).splitlines() == MISSING


def test_the_program_stops_with_one_line_per_missing_secret(lab_config: dict[str, Any]) -> None:
    with pytest.raises(pulumi.RunError) as exc:
        offline.run_program("lab", {"mlstack:platform": json.dumps(lab_config)}, [])
    assert str(exc.value).splitlines() == MISSING
