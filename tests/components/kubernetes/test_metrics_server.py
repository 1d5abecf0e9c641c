"""metrics-server, which `autoscale_on: cpu` needs: installed where the cloud runs none
(EKS, a cluster mlstack did not build), never beside GKE's managed one (issue 16, item 14)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from mlstack.components.backend import get_backend
from mlstack.components.kubernetes.addons import METRICS_SERVER
from mlstack.stacks.offline import run_plan
from mlstack.stacks.plan import Plan
from mlstack.stacks.stackfile import StackFile, read_stack
from mlstack.stacks.validate import load_platform

RELEASE = "kubernetes:helm.sh/v3:Release"


def _metrics_servers(plan: Plan) -> list[Any]:
    return [r for r in plan.of_type(RELEASE) if r.inputs["chart"] == METRICS_SERVER.chart]


def test_a_cluster_mlstack_did_not_build_gets_a_pinned_metrics_server(lab_plan: Plan) -> None:
    [release] = _metrics_servers(lab_plan)
    assert release.inputs["version"] == METRICS_SERVER.version
    assert release.inputs["namespace"] == "kube-system"
    assert release.inputs["repositoryOpts"]["repo"] == METRICS_SERVER.repo


def test_an_operator_that_has_one_already_gets_none(
    lab_config: dict[str, Any], make_stack: Callable[..., StackFile]
) -> None:
    config = copy.deepcopy(lab_config)
    config["onprem"]["metrics_server_installed"] = True
    assert _metrics_servers(run_plan(make_stack(config, name="has-metrics"))) == []


@pytest.mark.parametrize(("stack", "installs"), [("aws-dev", True), ("gcp-dev", False)])
def test_eks_gets_one_and_gke_keeps_its_own(stack: str, installs: bool) -> None:
    platform = load_platform(read_stack(stack).platform)
    assert get_backend(platform.cloud).needs_metrics_server(platform) is installs
