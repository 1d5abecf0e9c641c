"""Every version mlstack pins, in one place: per Kubernetes minor the tested set of add-on charts
and autoscaler image, and per cloud the support window of each minor.

A stack's `cluster.kubernetes_version` must be a minor with a tested set here (config validation
refuses any other); `mlstack plan` warns when that minor is in extended support or past its end
of life on the stack's cloud. Bumping a chart here is a reviewed change: its placement defaults
must be recorded at the new version (components/kubernetes/chart_defaults.py, the
`addon-placement-recorded` rule) and the JobSet CRD manifest is taken from the new tag.

Sources, as of 2026-12-03:
- Kueue 0.20.0: kubernetes-sigs/kueue CHANGELOG/CHANGELOG-0.20.md ("## v0.20.0", commit
  144402ad, with RELEASE_VERSION=v0.20.0 in its Makefile); tests/data/crds/kueue vendors its
  v1beta2 schemas (0.20.0 no longer serves v1beta1). Its registry.k8s.io chart promotion PR
  was not in the stored material (the newest seen is 0.19.4, kubernetes/k8s.io PR 9917);
  0.19.4 is the fallback if `helm show chart ... --version 0.20.0` fails.
- JobSet 0.12.0: the newest release (kubernetes-sigs/jobset#1213, 2026-05-08).
- NVIDIA device plugin 0.18.2: newer charts exist (0.20.0, NVIDIA/deepops PR 1382) but their
  values.yaml placement defaults have not been re-read at their tags; it stays until they are.
- cluster-autoscaler chart 9.50.0 with the image overridden per minor (the chart's appVersion is
  not used); image patches: aws-ia/terraform-aws-eks-blueprints-addons PR 516 (v1.33.5, v1.34.4,
  v1.35.1), kubernetes/autoscaler PR 9193 (1.35). The autoscaler's minor must match the
  cluster's (kubernetes/autoscaler README, "Releases").
- EKS windows: the EKS user guide's release calendar
  (https://docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html; 1.29-1.32 as
  endoflife.date/amazon-eks records it, 1.33-1.34 from awsdocs/amazon-eks-user-guide
  kubernetes-versions.adoc, 1.35 from endoflife.date). Standard support is 14 months, extended
  12 more, billed from the first day past standard.
- GKE and on-prem: no per-version dates could be verified (GKE's release schedule page was not
  reachable), so the plan says nothing there rather than guess.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class ChartPin:
    chart: str
    version: str
    #: The chart repository URL; empty for charts addressed as oci:// references.
    repo: str = ""


@dataclass(frozen=True)
class AddonCharts:
    device_plugin: ChartPin
    kueue: ChartPin
    jobset: ChartPin
    cluster_autoscaler: ChartPin
    metrics_server: ChartPin


@dataclass(frozen=True)
class VersionSet:
    """What mlstack installs on a cluster of one Kubernetes minor, tested together."""

    kubernetes: str
    charts: AddonCharts
    #: registry.k8s.io/autoscaling/cluster-autoscaler tag; its minor matches `kubernetes`.
    cluster_autoscaler_image: str


#: The add-on charts. Every tested minor installs these today; the components read them from
#: here (components/kubernetes/addons.py), so a minor that needs other charts gets its own
#: AddonCharts and the components take them from `version_set(version)`.
CHARTS = AddonCharts(
    device_plugin=ChartPin(
        "nvidia-device-plugin", "0.18.2", "https://nvidia.github.io/k8s-device-plugin"
    ),
    kueue=ChartPin("oci://registry.k8s.io/kueue/charts/kueue", "0.20.0"),
    jobset=ChartPin("oci://registry.k8s.io/jobset/charts/jobset", "0.12.0"),
    cluster_autoscaler=ChartPin(
        "cluster-autoscaler", "9.50.0", "https://kubernetes.github.io/autoscaler"
    ),
    # Chart 3.13.1 (2026-02-27) runs metrics-server 0.8.1 (charts/metrics-server/CHANGELOG.md
    # of kubernetes-sigs/metrics-server).
    metrics_server=ChartPin(
        "metrics-server", "3.13.1", "https://kubernetes-sigs.github.io/metrics-server/"
    ),
)

TESTED: Mapping[str, VersionSet] = MappingProxyType(
    {
        minor: VersionSet(minor, CHARTS, image)
        for minor, image in (
            ("1.29", "v1.29.5"),
            ("1.30", "v1.30.6"),
            ("1.31", "v1.31.4"),
            ("1.32", "v1.32.3"),
            ("1.33", "v1.33.5"),
            ("1.34", "v1.34.4"),
            ("1.35", "v1.35.1"),
        )
    }
)

#: Kubernetes minor versions this release of mlstack deploys and validates manifests against.
SUPPORTED_KUBERNETES: tuple[str, ...] = tuple(TESTED)


def version_set(kubernetes_version: str) -> VersionSet:
    return TESTED[kubernetes_version]


@dataclass(frozen=True)
class SupportWindow:
    #: The day standard support ends, and the day extended support ends (None: the cloud has
    #: none), as the cloud's calendar writes them: from that day on the version is out (EKS bills
    #: extended support "starting at the beginning of the day" standard support ends).
    standard_end: datetime.date
    extended_end: datetime.date | None


def _window(standard_end: str, extended_end: str | None) -> SupportWindow:
    return SupportWindow(
        datetime.date.fromisoformat(standard_end),
        datetime.date.fromisoformat(extended_end) if extended_end else None,
    )


#: cloud -> minor -> window. A cloud or minor not listed has no verified dates.
SUPPORT: Mapping[str, Mapping[str, SupportWindow]] = MappingProxyType(
    {
        "aws": MappingProxyType(
            {
                "1.29": _window("2025-03-23", "2026-03-23"),
                "1.30": _window("2025-07-23", "2026-07-23"),
                "1.31": _window("2025-11-26", "2026-11-26"),
                "1.32": _window("2026-03-23", "2027-03-23"),
                "1.33": _window("2026-07-29", "2027-07-29"),
                "1.34": _window("2026-12-02", "2027-12-02"),
                "1.35": _window("2027-03-27", "2028-03-27"),
            }
        ),
    }
)


def support_warning(cloud: str, kubernetes_version: str, today: datetime.date) -> str | None:
    """One line when `kubernetes_version` is past standard support on `cloud` on `today`; None
    while it is in standard support or when the dates are not known."""
    window = SUPPORT.get(cloud, {}).get(kubernetes_version)
    if window is None or today < window.standard_end:
        return None
    newest = max(
        (v for v, w in SUPPORT[cloud].items() if today < w.standard_end),
        key=lambda v: tuple(int(p) for p in v.split(".")),
        default=None,
    )
    fix = f"; move cluster.kubernetes_version to {newest}" if newest else ""
    if window.extended_end is None or today >= window.extended_end:
        return (
            f"Kubernetes {kubernetes_version} is past its end of life on {cloud} "
            f"(support ended {window.extended_end or window.standard_end}){fix}"
        )
    return (
        f"Kubernetes {kubernetes_version} is in extended support on {cloud} since "
        f"{window.standard_end} (billed; it ends {window.extended_end}){fix}"
    )
