"""Kueue, the queueing layer: installed by its pinned Helm chart into `kueue-system`.

The chart's default manager configuration is kept as it is: `controllerManagerConfigYaml`
replaces the default wholesale (health probes and metrics included), and the defaults already
manage the kinds mlstack deploys (batch Jobs and JobSets).
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.kubernetes.addons import KUEUE

NAMESPACE = "kueue-system"


class Kueue(pulumi.ComponentResource):
    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlstack:kubernetes:Kueue", name, None, opts)
        self.release = k8s.helm.v3.Release(
            f"{name}-release",
            k8s.helm.v3.ReleaseArgs(
                name="kueue",
                chart=KUEUE.chart,
                version=KUEUE.version,
                namespace=NAMESPACE,
                create_namespace=True,
                atomic=True,
                cleanup_on_fail=True,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"release": self.release.name})
