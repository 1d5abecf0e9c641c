"""The cluster add-ons mlstack installs, as Helm releases of the charts pinned in
stacks/versions.py (the one module holding every pinned version). Upgrading one is a reviewed
change."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from mlstack.stacks.versions import CHARTS, ChartPin


@dataclass(frozen=True)
class HelmChart:
    chart: str
    version: str
    #: The chart repository URL; empty for charts addressed as oci:// references.
    repo: str = ""

    @classmethod
    def pinned(cls, pin: ChartPin) -> HelmChart:
        return cls(chart=pin.chart, version=pin.version, repo=pin.repo)

    def release(
        self,
        resource_name: str,
        *,
        name: str,
        namespace: str,
        parent: pulumi.Resource,
        values: Mapping[str, Any] | None = None,
        create_namespace: bool = False,
        skip_crds: bool = False,
        opts: pulumi.ResourceOptions | None = None,
    ) -> k8s.helm.v3.Release:
        """A Helm release of this chart at its pinned version; atomic, so a failed install
        or upgrade rolls back instead of leaving a half-applied chart. `skip_crds` leaves the
        chart's `crds/` to a resource of mlstack's own (Helm installs them once, never upgrades
        them)."""
        return k8s.helm.v3.Release(
            resource_name,
            k8s.helm.v3.ReleaseArgs(
                name=name,
                chart=self.chart,
                version=self.version,
                repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=self.repo)
                if self.repo
                else None,
                namespace=namespace,
                create_namespace=create_namespace,
                values=dict(values) if values is not None else None,
                atomic=True,
                cleanup_on_fail=True,
                skip_crds=skip_crds or None,
            ),
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=parent)),
        )


NVIDIA_DEVICE_PLUGIN = HelmChart.pinned(CHARTS.device_plugin)

#: Kueue: quota-based admission of batch work. The chart installs its CRDs (as templates, so they
#: are upgraded with the release).
KUEUE = HelmChart.pinned(CHARTS.kueue)

#: JobSet: groups of Jobs run as one unit (the training jobs). The chart ships its CRD in `crds/`,
#: which Helm installs once and never upgrades; mlstack applies the CRD itself (jobset.py). The
#: JobSet schema the tests validate against is vendored in tests/data/crds/jobset (SOURCE.md).
JOBSET = HelmChart.pinned(CHARTS.jobset)

#: The cluster autoscaler (AWS): its image is chosen per Kubernetes version (stacks/versions.py).
CLUSTER_AUTOSCALER = HelmChart.pinned(CHARTS.cluster_autoscaler)

#: metrics-server: the resource metrics API (`metrics.k8s.io`) that CPU autoscaling reads.
#: Installed where the cloud does not run one (see CloudBackend.needs_metrics_server).
METRICS_SERVER = HelmChart.pinned(CHARTS.metrics_server)
