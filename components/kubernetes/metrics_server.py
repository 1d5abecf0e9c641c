"""metrics-server: the resource metrics API that `autoscale_on: cpu` (the serving
HorizontalPodAutoscaler) and `kubectl top` read, installed by its pinned Helm chart into
kube-system on clusters whose cloud does not run one.

GKE runs metrics-server itself as a managed add-on, and a second copy fights it (the addon
manager reconciles the Service the chart would adopt: Smana/cloud-native-ref#1892, "GKE ships
`metrics-server-v1.35.1` as a managed addon ... EKS ships no metrics-server"). EKS does not
install it; nor does a cluster mlstack did not build, unless its operator says so
(`onprem.metrics_server_installed`). Which cloud needs it is the backend's
`needs_metrics_server`.

The chart's defaults are kept: its Deployment runs at `system-cluster-critical` and meets the
restricted Pod Security level; its placement defaults are recorded in chart_defaults.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from mlstack.components import Options
from mlstack.components.kubernetes.addons import METRICS_SERVER

#: The chart's APIService and auth-reader RoleBinding expect kube-system (chart 3.10.0 fixed
#: the binding "to always use kube-system"), where clusters keep their API extensions.
NAMESPACE = "kube-system"


@dataclass(frozen=True)
class MetricsServerArgs:
    """Nothing to set: the chart's default values are kept (see the module docstring)."""


class MetricsServer(pulumi.ComponentResource):
    def __init__(self, name: str, args: MetricsServerArgs, opts: Options = None) -> None:
        super().__init__("mlstack:kubernetes:MetricsServer", name, None, opts)
        self.release = METRICS_SERVER.release(
            f"{name}-release", name="metrics-server", namespace=NAMESPACE, parent=self
        )
        self.register_outputs({"release": self.release.name})
