"""The Pulumi program's entry point, shared by `pulumi up` and the offline plan."""

from __future__ import annotations

import pulumi

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


def main() -> None:
    """Read `mlstack:platform`, validate all of it, then declare the platform.

    A bad config, or a secret it needs that is not set, stops here with one line per problem
    and nothing declared; RunError makes pulumi print just those lines, without a traceback.
    """
    config = pulumi.Config(CONFIG_NAMESPACE)
    try:
        platform = load_platform(config.get_object(PLATFORM_KEY))
        outputs = build_platform(platform, ConfigSecrets(config))
    except ConfigError as exc:
        raise pulumi.RunError(str(exc)) from None
    for key, value in outputs.items():
        pulumi.export(key, value)
