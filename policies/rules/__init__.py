"""The policy pack's rules: plain functions, one per rule, importable without a policy server.

`ALL_POLICIES` is what `policies/pack/__main__.py` hands to `PolicyPack` and what `mlstack
check` runs offline. Each module keeps its own `POLICIES`; a cloud backend's rules module is
added here when the backend lands.
"""

from __future__ import annotations

from pulumi_policy import ResourceValidationPolicy, StackValidationPolicy

from mlstack.policies.rules import (
    access,
    addons,
    aws,
    gcp,
    ordering,
    pipelines,
    pods,
    pools,
    scheduling,
    tenancy,
)

ALL_POLICIES: list[ResourceValidationPolicy | StackValidationPolicy] = [
    *pods.POLICIES,
    *access.POLICIES,
    *pools.POLICIES,
    *addons.POLICIES,
    *scheduling.POLICIES,
    *tenancy.POLICIES,
    *ordering.POLICIES,
    *pipelines.POLICIES,
    *aws.POLICIES,
    *gcp.POLICIES,
]
