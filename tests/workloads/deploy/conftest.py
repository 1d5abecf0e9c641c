"""The shipped on-prem lab stack's offline plan, with resource options, for the deploy
component tests."""

from __future__ import annotations

import pytest
from tests_support import PlanWithOptions, plan_with_options


@pytest.fixture(scope="module")
def lab() -> PlanWithOptions:
    plan, options = plan_with_options("onprem-lab")
    return PlanWithOptions("onprem-lab", plan, options)
