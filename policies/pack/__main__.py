"""The policy pack entry point: only constructs the PolicyPack (which serves the engine and
blocks). Rules live in `mlstack.policies.rules`, importable and testable without this server;
the engine runs this file with the project's .venv (PulumiPolicy.yaml), where mlstack is
installed."""

from pulumi_policy import EnforcementLevel, PolicyPack

from mlstack.policies.rules import ALL_POLICIES

PolicyPack(
    name="mlstack",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=list(ALL_POLICIES),
)
