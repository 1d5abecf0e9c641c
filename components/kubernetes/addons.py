"""Pinned versions of the cluster add-ons mlstack installs. Upgrading one is a reviewed change."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HelmChart:
    chart: str
    version: str
    #: The chart repository URL; empty for charts addressed as oci:// references.
    repo: str = ""


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
