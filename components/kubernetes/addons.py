"""Pinned versions of the cluster add-ons mlstack installs. Upgrading one is a reviewed change."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s


@dataclass(frozen=True)
class HelmChart:
    chart: str
    version: str
    #: The chart repository URL; empty for charts addressed as oci:// references.
    repo: str = ""

    def release(
        self,
        resource_name: str,
        *,
        name: str,
        namespace: str,
        parent: pulumi.Resource,
        values: Mapping[str, Any] | None = None,
        create_namespace: bool = False,
        opts: pulumi.ResourceOptions | None = None,
    ) -> k8s.helm.v3.Release:
        """A Helm release of this chart at its pinned version; atomic, so a failed install
        or upgrade rolls back instead of leaving a half-applied chart."""
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
            ),
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=parent)),
        )


NVIDIA_DEVICE_PLUGIN = HelmChart(
    chart="nvidia-device-plugin",
    version="0.18.2",
    repo="https://nvidia.github.io/k8s-device-plugin",
)

#: Kueue: quota-based admission of batch work. The chart installs its CRDs.
KUEUE = HelmChart(
    chart="oci://registry.k8s.io/kueue/charts/kueue",
    version="0.20.0",
)

#: JobSet: groups of Jobs run as one unit (the training jobs). The chart installs its CRD. The
#: JobSet schema the tests validate against is vendored in tests/data/crds/jobset (SOURCE.md).
JOBSET = HelmChart(
    chart="oci://registry.k8s.io/jobset/charts/jobset",
    version="0.12.0",
)

#: The cluster autoscaler (AWS): its image is chosen per Kubernetes version by the backend.
CLUSTER_AUTOSCALER = HelmChart(
    chart="cluster-autoscaler",
    version="9.50.0",
    repo="https://kubernetes.github.io/autoscaler",
)

#: metrics-server: the resource metrics API (`metrics.k8s.io`) that CPU autoscaling reads. Chart
#: 3.13.1 (2026-02-27) runs metrics-server 0.8.1 (charts/metrics-server/CHANGELOG.md of
#: kubernetes-sigs/metrics-server). Installed where the cloud does not run one (see
#: CloudBackend.needs_metrics_server).
METRICS_SERVER = HelmChart(
    chart="metrics-server",
    version="3.13.1",
    repo="https://kubernetes-sigs.github.io/metrics-server/",
)
