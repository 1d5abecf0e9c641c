"""The policy pack entry point: only constructs the PolicyPack (which serves the engine and
blocks). Rules live in `policies.rules`, importable and testable without this server."""

import sys
from pathlib import Path

# The engine runs this file from policies/pack/; the rules import the project's packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pulumi_policy import EnforcementLevel, PolicyPack

from policies.rules import ALL_POLICIES

PolicyPack(
    name="mlstack",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=list(ALL_POLICIES),
)
