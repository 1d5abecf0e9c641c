"""Kueue, the queueing layer: installed by its pinned Helm chart into `kueue-system`.

The chart's default manager configuration is kept as it is: `controllerManagerConfigYaml`
replaces the default wholesale (health probes and metrics included), and the defaults already
manage the kinds mlstack deploys (batch Jobs and JobSets).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from mlstack.components import Options
from mlstack.components.kubernetes.addons import KUEUE
from mlstack.components.kubernetes.chart_defaults import pod_security_level
from mlstack.components.kubernetes.resources import declare
from mlstack.components.kubernetes.system import namespace_manifest
from mlstack.stacks.names import KUEUE_NAMESPACE as NAMESPACE


@dataclass(frozen=True)
class KueueArgs:
    """Nothing to set: the chart's default manager configuration is kept (module docstring)."""


class Kueue(pulumi.ComponentResource):
    def __init__(self, name: str, args: KueueArgs, opts: Options = None) -> None:
        super().__init__("mlstack:kubernetes:Kueue", name, None, opts)
        # mlstack declares the namespace (Helm's createNamespace would leave it without a Pod
        # Security label) at the level the chart's pods meet (chart_defaults.py).
        self.namespace = declare(
            f"{name}-namespace",
            namespace_manifest(NAMESPACE, pod_security_level(KUEUE)),
            pulumi.ResourceOptions(parent=self),
        )
        self.release = KUEUE.release(
            f"{name}-release",
            name="kueue",
            namespace=NAMESPACE,
            parent=self,
            opts=pulumi.ResourceOptions(depends_on=[self.namespace]),
        )
        self.register_outputs({"release": self.release.name})
