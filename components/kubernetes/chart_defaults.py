"""What the add-on charts' default values do to pod placement, recorded as data.

A Helm release is one opaque resource in the plan: nothing renders its templates offline, so a
default in the chart's values.yaml (a required node affinity, a toleration list) never shows up
in `mlstack plan`. The defaults that decide where an add-on's pods may run are copied here, each
with the repository, tag and file they come from, so that the policy pack can merge a release's
values over them and check the effective placement (policies/rules/addons.py).

Keyed by (chart, version): bumping a chart in addons.py without recording its defaults at the
new version fails tests/components/kubernetes/test_chart_defaults.py and the
`addon-placement-recorded` rule, so this data cannot silently go stale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlstack.components.kubernetes.addons import (
    CLUSTER_AUTOSCALER,
    JOBSET,
    KUEUE,
    METRICS_SERVER,
    NVIDIA_DEVICE_PLUGIN,
    HelmChart,
)


@dataclass(frozen=True)
class Placement:
    """Where in a chart's values one workload's pod placement is set, and the chart defaults.

    `path` leads from the values root to the map holding `nodeSelector`, `affinity` and
    `tolerations` (empty when they sit at the root).
    """

    path: tuple[str, ...]
    node_selector: Mapping[str, str]
    affinity: Mapping[str, Any]
    tolerations: Sequence[Mapping[str, Any]]

    def defaults(self) -> dict[str, Any]:
        """The defaults as a values tree, for merging a release's values over."""
        leaf: dict[str, Any] = {
            "nodeSelector": dict(self.node_selector),
            "affinity": dict(self.affinity),
            "tolerations": list(self.tolerations),
        }
        for key in reversed(self.path):
            leaf = {key: leaf}
        return leaf


@dataclass(frozen=True)
class ChartDefaults:
    chart: str
    version: str
    #: Where the values were read: "<owner>/<repo>", the release tag and the values file.
    repository: str
    tag: str
    file: str
    #: The placement of the chart's pods that mlstack relies on.
    placement: Placement
    #: A node agent that must run on every GPU node (the device plugin): its effective placement
    #: must admit every GPU pool.
    runs_on_gpu_nodes: bool = False
    #: The Pod Security Standards level the chart's pods meet with mlstack's values
    #: (privileged, baseline or restricted), and what in the chart decides it: the namespace it
    #: installs into must enforce exactly this level (policies/rules/addons.py), or be a
    #: documented exemption (NAMESPACE_EXEMPTIONS).
    pod_security: str = "restricted"
    pod_security_why: str = ""
    # The levels were read from the charts' values.yaml and pod templates at stored main-branch
    # and near-tag commits (the exact tags were not stored offline); the settings that decide
    # them have not changed across those copies.


#: Helm's default-values rule for the placement keys: `nodeSelector: {}`, `affinity: {}`,
#: `tolerations: []` unless the chart says otherwise.
_NONE = Placement(path=(), node_selector={}, affinity={}, tolerations=())

RECORDED: tuple[ChartDefaults, ...] = (
    ChartDefaults(
        chart=NVIDIA_DEVICE_PLUGIN.chart,
        version="0.18.2",
        repository="NVIDIA/k8s-device-plugin",
        tag="v0.18.2",
        file="deployments/helm/nvidia-device-plugin/values.yaml",
        # The required affinity is on NFD's or the "force" label, none of which mlstack's pools
        # carry; templates/daemonset-device-plugin.yml renders it next to nodeSelector, so the
        # two are ANDed (NVIDIA/k8s-device-plugin#607: "Desired Number of Nodes Scheduled: 0").
        # The block is the default since v0.15.0 and unchanged in later main-branch copies
        # (read at commit 00f2a02c; the v0.18.2 tag's own copy was not reachable offline).
        placement=Placement(
            path=(),
            node_selector={},
            affinity={
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "feature.node.kubernetes.io/pci-10de.present",
                                        "operator": "In",
                                        "values": ["true"],
                                    }
                                ]
                            },
                            {
                                "matchExpressions": [
                                    {
                                        "key": "feature.node.kubernetes.io/cpu-model.vendor_id",
                                        "operator": "In",
                                        "values": ["NVIDIA"],
                                    }
                                ]
                            },
                            {
                                "matchExpressions": [
                                    {
                                        "key": "nvidia.com/gpu.present",
                                        "operator": "In",
                                        "values": ["true"],
                                    }
                                ]
                            },
                        ]
                    }
                }
            },
            tolerations=(
                {"key": "CriticalAddonsOnly", "operator": "Exists"},
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            ),
        ),
        runs_on_gpu_nodes=True,
        pod_security="privileged",
        pod_security_why="templates/daemonset-device-plugin.yml mounts hostPath "
        "/var/lib/kubelet/device-plugins (and /run/nvidia/mps, /var/run/cdi), which baseline "
        "forbids; the default MPS control daemon runs privileged: true",
    ),
    ChartDefaults(
        chart=KUEUE.chart,
        version="0.20.0",
        repository="kubernetes-sigs/kueue",
        tag="v0.20.0",
        file="charts/kueue/values.yaml",
        # controllerManager.nodeSelector {} and tolerations []; the chart has no affinity value
        # (read at a main-branch commit, 0324f7c7).
        placement=Placement(
            path=("controllerManager",), node_selector={}, affinity={}, tolerations=()
        ),
        pod_security="restricted",
        pod_security_why="values.yaml podSecurityContext runAsNonRoot and seccompProfile "
        "RuntimeDefault, containerSecurityContext allowPrivilegeEscalation false, drop ALL; "
        "secret, configMap and emptyDir volumes only (templates/manager/manager.yaml)",
    ),
    ChartDefaults(
        chart=JOBSET.chart,
        version="0.12.0",
        repository="kubernetes-sigs/jobset",
        tag="v0.12.0",
        file="charts/jobset/values.yaml",
        # controller.nodeSelector {}, affinity {}, tolerations [] (read at commit 0928ac5e).
        placement=Placement(path=("controller",), node_selector={}, affinity={}, tolerations=()),
        pod_security="restricted",
        pod_security_why="values.yaml controller.podSecurityContext runAsNonRoot and seccomp "
        "RuntimeDefault, controller.securityContext allowPrivilegeEscalation false, drop ALL; "
        "configMap and secret volumes only (templates/controller/deployment.yaml)",
    ),
    ChartDefaults(
        chart=CLUSTER_AUTOSCALER.chart,
        version="9.50.0",
        repository="kubernetes/autoscaler",
        tag="cluster-autoscaler-chart-9.50.0",
        file="charts/cluster-autoscaler/values.yaml",
        # Root affinity {}, nodeSelector {}, tolerations [] (an older stored copy, 028eaaf3; the
        # keys have kept these defaults across the chart's 9.x line).
        placement=_NONE,
        pod_security="baseline",
        pod_security_why="securityContext and containerSecurityContext default to {} (no "
        "runAsNonRoot, seccomp or drop ALL, so not restricted); no hostPath outside the Magnum "
        "provider, no host namespaces or ports (templates/deployment.yaml)",
    ),
    ChartDefaults(
        chart=METRICS_SERVER.chart,
        version="3.13.1",
        repository="kubernetes-sigs/metrics-server",
        tag="metrics-server-helm-chart-3.13.1",
        file="charts/metrics-server/values.yaml",
        # Root nodeSelector {}, tolerations [], affinity {} (read at commit 026af897; the keys
        # have had these defaults since the chart's first release, 3.5.0).
        placement=_NONE,
        pod_security="restricted",
        pod_security_why="values.yaml securityContext allowPrivilegeEscalation false, "
        "runAsNonRoot, runAsUser 1000, seccomp RuntimeDefault, drop ALL; one emptyDir "
        "(templates/deployment.yaml)",
    ),
)

CHART_DEFAULTS: dict[tuple[str, str], ChartDefaults] = {(d.chart, d.version): d for d in RECORDED}


def recorded(chart: HelmChart) -> ChartDefaults | None:
    return CHART_DEFAULTS.get((chart.chart, chart.version))


def pod_security_level(chart: HelmChart) -> str:
    """The Pod Security level `chart`'s pods meet at its pinned version (recorded above). A
    version not recorded yet (a bump in progress, which `addon-placement-recorded` reports) gets
    the level of the chart's other recorded versions, none of which has changed it."""
    found = recorded(chart)
    if found is not None:
        return found.pod_security
    others = [d for d in RECORDED if d.chart == chart.chart]
    if not others:
        raise LookupError(f"no recorded defaults for chart {chart.chart}")
    return others[-1].pod_security


#: Namespaces add-ons install into that mlstack does not declare, and why their Pod Security is
#: left as it is: an exemption has to be written down here, never silence.
NAMESPACE_EXEMPTIONS: Mapping[str, str] = {
    "kube-system": "the cluster's own namespace: its CNI and kube-proxy (EKS's aws-node and "
    "kube-proxy DaemonSets, GKE's own agents) run privileged there, so mlstack neither labels it "
    "nor could enforce a stricter level; add-ons that need host access (the NVIDIA device "
    "plugin's hostPath) are installed there for that reason and no other",
}


def helm_merge(defaults: Any, values: Any) -> Any:
    """`values` over `defaults` as Helm coalesces them: maps merge key by key, anything else
    (lists included) is replaced, and a null deletes the default key.

    helm/helm pkg/chartutil/coalesce.go merges only where both sides are tables; lists are never
    merged (helm/helm#3486). A Python None never reaches Helm through Pulumi
    (pulumi/pulumi-kubernetes#3811), which is why mlstack overrides rather than nulls defaults.
    """
    if not isinstance(defaults, Mapping) or not isinstance(values, Mapping):
        return values
    merged = dict(defaults)
    for key, value in values.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = helm_merge(defaults.get(key), value)
    return merged


@dataclass(frozen=True)
class EffectivePlacement:
    node_selector: Mapping[str, Any]
    affinity: Mapping[str, Any]
    tolerations: Sequence[Any]


def effective_placement(defaults: ChartDefaults, values: Mapping[str, Any]) -> EffectivePlacement:
    """The placement the chart renders for `values` (a release's values)."""
    tree: Any = helm_merge(defaults.placement.defaults(), values)
    for key in defaults.placement.path:
        tree = tree.get(key) if isinstance(tree, Mapping) else None
    if not isinstance(tree, Mapping):
        tree = {}
    selector, affinity, tolerations = (
        tree.get("nodeSelector"),
        tree.get("affinity"),
        tree.get("tolerations"),
    )
    return EffectivePlacement(
        node_selector=selector if isinstance(selector, Mapping) else {},
        affinity=affinity if isinstance(affinity, Mapping) else {},
        tolerations=tolerations if isinstance(tolerations, Sequence) else (),
    )
