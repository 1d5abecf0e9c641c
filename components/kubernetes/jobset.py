"""JobSet, the controller that runs a group of Jobs as one unit: installed by its pinned Helm
chart into `jobset-system`.

Training jobs are JobSets (stable pod DNS names through a headless Service per JobSet, restart
of every pod together on a failure). The controller is installed on every cluster, with or
without training jobs in the stack: the teams' roles let them run JobSets of their own, and
extra manifests may declare some. The chart's default values are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from mlstack.components import Options
from mlstack.components.kubernetes.addons import JOBSET
from mlstack.stacks.names import JOBSET_NAMESPACE as NAMESPACE


@dataclass(frozen=True)
class JobSetControllerArgs:
    """Nothing to set: the chart's default values are kept (see the module docstring)."""


class JobSetController(pulumi.ComponentResource):
    def __init__(self, name: str, args: JobSetControllerArgs, opts: Options = None) -> None:
        super().__init__("mlstack:kubernetes:JobSetController", name, None, opts)
        self.release = JOBSET.release(
            f"{name}-release",
            name="jobset",
            namespace=NAMESPACE,
            parent=self,
            create_namespace=True,
        )
        self.register_outputs({"release": self.release.name})
