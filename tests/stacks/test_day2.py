"""Day-2 changes: a config change applied to a shipped stack's plan takes an update path the
provider accepts.

Each test plans a shipped stack, changes one thing (raise an EKS pool's `min_nodes`, bump a
chart, add a taint to an on-prem pool), plans again and diffs the two plans: no resource may be
added or removed (a changed URN is a replacement), exactly the expected fields may change, and
each change must be one the provider applies in place. Each check is also run against a planted
wrong path (the code as it was before issue 16) and must fail there.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests_support import PlanWithOptions, plan_with_options

from mlstack.components.aws import nodegroups
from mlstack.components.aws.backend import AwsBackend
from mlstack.components.kubernetes import jobset
from mlstack.components.kubernetes.addons import JOBSET, HelmChart
from mlstack.components.onprem import pools
from mlstack.stacks.names import POOL_TAINTS_ANNOTATION

REPO = Path(__file__).resolve().parents[2]
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
RELEASE = "kubernetes:helm.sh/v3:Release"
CONFIG_FILE = "kubernetes:yaml/v2:ConfigFile"
NODE_PATCH = "kubernetes:core/v1:NodePatch"
FLAVOR = "kubernetes:kueue.x-k8s.io/v1beta2:ResourceFlavor"
DESIRED = "scalingConfig.desiredSize"

Key = tuple[str, str]


def _flat(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(dotted path, JSON of the leaf) for every leaf of an inputs tree."""
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            yield from _flat(item, f"{path}.{key}" if path else str(key))
    else:
        yield path, json.dumps(value, sort_keys=True, default=str)


@dataclass(frozen=True)
class PlanDiff:
    added: frozenset[Key]
    removed: frozenset[Key]
    #: (type, name) -> the input paths whose change the engine sends (ignore_changes left out).
    changed: Mapping[Key, frozenset[str]]


def plan_diff(before: PlanWithOptions, after: PlanWithOptions) -> PlanDiff:
    old = {r.urn: r for r in before.plan.resources}
    new = {r.urn: r for r in after.plan.resources}
    changed: dict[Key, frozenset[str]] = {}
    for urn in old.keys() & new.keys():
        a, b = dict(_flat(dict(old[urn].inputs))), dict(_flat(dict(new[urn].inputs)))
        ignored = after.options[urn].ignore_changes
        paths = frozenset(
            p
            for p in a.keys() | b.keys()
            if a.get(p) != b.get(p) and not any(p == i or p.startswith(f"{i}.") for i in ignored)
        )
        if paths:
            changed[(new[urn].type, new[urn].name)] = paths
    return PlanDiff(
        added=frozenset((new[u].type, new[u].name) for u in new.keys() - old.keys()),
        removed=frozenset((old[u].type, old[u].name) for u in old.keys() - new.keys()),
        changed=changed,
    )


def assert_in_place(diff: PlanDiff, expected: Mapping[Key, set[str]]) -> None:
    """Nothing replaced, and exactly `expected` changed."""
    assert not diff.added and not diff.removed, f"replaced: +{diff.added} -{diff.removed}"
    assert {k: set(v) for k, v in diff.changed.items()} == expected


def _stack(tmp_path: Path, name: str, edit: Callable[[dict[str, Any]], None] | None = None) -> str:
    raw = yaml.safe_load((REPO / "stacks" / f"Pulumi.{name}.yaml").read_text())
    if edit is not None:
        edit(raw["config"]["mlstack:platform"])
    path = tmp_path / f"Pulumi.{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _plan(
    tmp_path: Path, name: str, edit: Callable[[dict[str, Any]], None] | None = None
) -> PlanWithOptions:
    plan, options = plan_with_options(_stack(tmp_path, name, edit))
    return PlanWithOptions(name, plan, options)


def _pool(platform: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in platform["node_pools"] if p["name"] == name)


# --- raise an EKS pool's min_nodes -------------------------------------------------------------

#: aws-dev as `pulumi up` created it and the autoscaler left it: every group idle at its minimum.
LIVE = {"l4": (0, 4, 0), "cpu": (0, 4, 0), "system": (1, 2, 1)}


def _live_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    def call(platform: Any, token: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        if token == "aws:eks/getClusters:getClusters":
            return {"names": ["ml-dev"]}
        if token == "aws:eks/getNodeGroups:getNodeGroups":
            return {"names": [f"aws-nodes-{g}-0a1b2c3" for g in LIVE]}
        if token == "aws:eks/getNodeGroup:getNodeGroup":
            low, high, desired = LIVE[args["nodeGroupName"].removeprefix("aws-nodes-")[:-8]]
            return {"scalingConfigs": [{"minSize": low, "maxSize": high, "desiredSize": desired}]}
        return {}

    monkeypatch.setattr(AwsBackend, "offline_call", staticmethod(call))


def _raise_min_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _live_cluster(monkeypatch)
    before = _plan(tmp_path, "aws-dev")
    after = _plan(tmp_path, "aws-dev", lambda p: _pool(p, "l4").update(min_nodes=2))
    group = (NODE_GROUP, "aws-nodes-l4")
    assert_in_place(plan_diff(before, after), {group: {"scalingConfig.minSize", DESIRED}})
    # What the provider sends EKS (UpdateNodegroupConfig, in place): an ignored desiredSize is
    # sent as the old input, and EKS refuses a minimum above it ("Minimum capacity X can't be
    # greater than desired size Y", terraform-aws-modules/terraform-aws-eks#748).
    resource = after.get(*group)
    sent = dict(resource.inputs["scalingConfig"])
    if DESIRED in after.opts(resource).ignore_changes:
        sent["desiredSize"] = before.get(*group).inputs["scalingConfig"]["desiredSize"]
    assert sent["minSize"] == 2
    assert sent["minSize"] <= sent["desiredSize"] <= sent["maxSize"], sent


def test_raising_min_nodes_on_eks_updates_only_the_scaling_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _raise_min_nodes(tmp_path, monkeypatch)


def test_raising_min_nodes_fails_on_a_stale_desired_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: desiredSize always left to the autoscaler (ignored), as before issue 16."""
    monkeypatch.setattr(
        nodegroups,
        "desired_size",
        lambda low, high, live: (low if live is None else live.desired_size, True),
    )
    with pytest.raises(AssertionError):
        _raise_min_nodes(tmp_path, monkeypatch)


# --- bump a chart ------------------------------------------------------------------------------

#: A JobSet release after the pinned one, for the test only (no such release is claimed).
BUMPED = HelmChart(chart=JOBSET.chart, version="0.13.0", repo=JOBSET.repo)


def _bump_jobset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _plan(tmp_path, "onprem-lab")
    with monkeypatch.context() as patch:
        patch.setattr(jobset, "JOBSET", BUMPED)
        after = _plan(tmp_path, "onprem-lab")
    assert_in_place(
        plan_diff(before, after),
        # The CRD is re-applied from the new tag (server-side apply of the same object: an
        # update), then Helm upgrades the release; nothing stateful is replaced.
        {(CONFIG_FILE, "jobset-crd"): {"file"}, (RELEASE, "jobset-release"): {"version"}},
    )
    assert after.get(CONFIG_FILE, "jobset-crd").inputs["file"] == jobset.crd_url("0.13.0")
    release = after.get(RELEASE, "jobset-release")
    assert release.inputs["skipCrds"] is True
    assert after.get(CONFIG_FILE, "jobset-crd").urn in after.opts(release).dependencies


def test_bumping_a_chart_updates_its_crd_and_its_release_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _bump_jobset(tmp_path, monkeypatch)


def test_bumping_a_chart_fails_when_the_crd_stays_at_the_old_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: the CRD left where the first install put it (Helm's `crds/`, before issue 16)."""
    pinned = jobset.crd_url(JOBSET.version)
    monkeypatch.setattr(jobset, "crd_url", lambda version: pinned)
    with pytest.raises(AssertionError):
        _bump_jobset(tmp_path, monkeypatch)


# --- add a taint to an on-prem pool ------------------------------------------------------------

MAINTENANCE = {"key": "lab.internal/maintenance", "value": "r7", "effect": "NoSchedule"}
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
L40S_NODES = ("l40s-01", "l40s-02", "l40s-03")


def _add_taint(tmp_path: Path) -> None:
    before = _plan(tmp_path, "onprem-lab")
    after = _plan(
        tmp_path, "onprem-lab", lambda p: _pool(p, "l40s").update(taints=[GPU_TAINT, MAINTENANCE])
    )
    annotation = f"metadata.annotations.{POOL_TAINTS_ANNOTATION}"
    assert_in_place(
        plan_diff(before, after),
        {
            **{(NODE_PATCH, f"onprem-pool-l40s_{node}"): {annotation} for node in L40S_NODES},
            # Kueue's flavor learns the taint (a mutable spec field); the device plugin's
            # release tolerates it (a Helm upgrade) so it still runs on every GPU node.
            (FLAVOR, "tenancy-flavor-l40s"): {"spec.nodeTaints"},
            (RELEASE, "nvidia-device-plugin-release"): {"values.tolerations"},
        },
    )
    for patch in after.of_type(NODE_PATCH):
        # Node.spec.taints is atomic under server-side apply: owning it conflicts with (or,
        # forced, drops) every other manager's taints.
        assert "taints" not in patch.inputs.get("spec", {}), patch.name
    patched = after.get(NODE_PATCH, "onprem-pool-l40s_l40s-01").inputs["metadata"]
    assert (
        "lab.internal/maintenance=r7:NoSchedule" in patched["annotations"][POOL_TAINTS_ANNOTATION]
    )


def test_adding_an_onprem_taint_changes_only_the_recorded_annotation(tmp_path: Path) -> None:
    _add_taint(tmp_path)


def test_adding_an_onprem_taint_fails_when_the_patch_owns_spec_taints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: node patches that apply the pool's taints, as before issue 16."""
    declared = pools.node_patch_manifest

    def with_taints(node: str, pool: Any) -> dict[str, Any]:
        manifest = declared(node, pool)
        taints = [t.model_dump(mode="json") for t in pool.effective_taints]
        return {**manifest, "spec": {"taints": taints}} if taints else manifest

    monkeypatch.setattr(pools, "node_patch_manifest", with_taints)
    with pytest.raises(AssertionError):
        _add_taint(tmp_path)
