"""The JobSet controller: its CRD applied by mlstack from the pinned tag, its chart without
`crds/` (Helm installs a chart's `crds/` once and never upgrades them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pytest
from tests_support import PlanWithOptions, plan_with_options

from mlstack.components.kubernetes.addons import JOBSET
from mlstack.components.kubernetes.jobset import (
    CRD_KIND,
    PATCH_FORCE,
    crd_url,
    force_crd_apply,
)

HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
CONFIG_FILE = "kubernetes:yaml/v2:ConfigFile"
SOURCE = Path(__file__).resolve().parents[2] / "data" / "crds" / "jobset" / "SOURCE.md"


@pytest.fixture(scope="module")
def lab() -> PlanWithOptions:
    plan, options = plan_with_options("onprem-lab")
    return PlanWithOptions("onprem-lab", plan, options)


def test_the_crd_comes_from_the_pinned_tag_and_the_release_skips_crds(
    lab: PlanWithOptions,
) -> None:
    crd = lab.get(CONFIG_FILE, "jobset-crd")
    release = lab.get(HELM_RELEASE, "jobset-release")
    controller = lab.get("mlstack:kubernetes:JobSetController", "jobset")
    assert crd.parent == release.parent == controller.urn
    assert crd.inputs["file"] == crd_url(JOBSET.version)
    assert f"/v{JOBSET.version}/charts/jobset/crds/" in crd.inputs["file"]
    assert release.inputs["skipCrds"] is True
    # The controller of a new version starts only once its schema is applied.
    assert crd.urn in lab.opts(release).dependencies


def _args(type_: str, props: dict) -> pulumi.ResourceTransformArgs:
    return pulumi.ResourceTransformArgs(
        custom=True, type_=type_, name="x", props=props, opts=pulumi.ResourceOptions()
    )


def test_the_crd_apply_takes_over_fields_a_helm_install_created() -> None:
    props = {"metadata": {"name": "jobsets.jobset.x-k8s.io", "annotations": {"a": "b"}}}
    result = force_crd_apply(_args(CRD_KIND, props))
    assert result is not None
    metadata: Any = result.props["metadata"]
    assert metadata["annotations"] == {"a": "b", PATCH_FORCE: "true"}
    assert props["metadata"]["annotations"] == {"a": "b"}, "the input is not mutated"
    assert force_crd_apply(_args("kubernetes:core/v1:Namespace", {"metadata": {}})) is None


def test_the_vendored_jobset_schema_names_the_pinned_release() -> None:
    """tests/jobset_schema.py validates JobSets against the vendored schema; a chart bump (which
    now changes the CRD on the cluster) must re-vendor it or say how it differs."""
    assert f"JobSet v{JOBSET.version}" in SOURCE.read_text()
