"""The Pulumi program's entry point, shared by `pulumi up` and the offline plan."""

from __future__ import annotations

import pulumi

from mlstack.components.backend import get_backend
from mlstack.stacks.errors import ConfigError
from mlstack.stacks.platform import build_platform
from mlstack.stacks.validate import load_platform

CONFIG_NAMESPACE = "mlstack"
PLATFORM_KEY = "platform"


class ConfigSecrets:
    """Secret config of the stack (`pulumi config set --secret mlstack:<key> ...`)."""

    def __init__(self, config: pulumi.Config) -> None:
        self._config = config

    def get(self, key: str) -> pulumi.Output[str] | None:
        return self._config.get_secret(key)


def missing_secrets(config: pulumi.Config, required: tuple[str, ...]) -> list[str]:
    return [
        f"mlstack:{key}: required secret is not set; fix: "
        f"pulumi config set --secret mlstack:{key} <value>"
        for key in required
        if config.get(key) is None
    ]


def main() -> None:
    """Read `mlstack:platform`, validate all of it, then declare the platform.

    A bad config stops here with one line per problem and nothing declared; RunError makes
    pulumi print just those lines, without a traceback.
    """
    config = pulumi.Config(CONFIG_NAMESPACE)
    try:
        platform = load_platform(config.get_object(PLATFORM_KEY))
    except ConfigError as exc:
        raise pulumi.RunError(str(exc)) from None
    missing = missing_secrets(config, get_backend(platform.cloud).required_secret_keys(platform))
    if missing:
        raise pulumi.RunError("\n".join(missing))
    for key, value in build_platform(platform, ConfigSecrets(config)).items():
        pulumi.export(key, value)
