"""JobSet, the controller that runs a group of Jobs as one unit: its CRD, applied by mlstack, and
its pinned Helm chart installed into `jobset-system`.

Training jobs are JobSets (stable pod DNS names through a headless Service per JobSet, restart
of every pod together on a failure). The controller is installed on every cluster, with or
without training jobs in the stack: the teams' roles let them run JobSets of their own, and
extra manifests may declare some. The chart's default values are kept.

The CRD is not left to the chart. The JobSet chart ships it in `crds/`, and Helm installs a
chart's `crds/` on the first install only: "There is not support at this time for upgrading or
deleting CRDs using Helm" (Helm docs, "Custom Resource Definitions" best practices). A chart
bump would then run a new controller on the old schema. So the CRD file of the pinned release
(`charts/jobset/crds/jobset.x-k8s.io_jobsets.yaml` at its tag, the copy the chart packages) is
applied as its own resource, server-side, which updates it on every bump; the release skips
`crds/` and depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from mlstack.components import Options
from mlstack.components.kubernetes.addons import JOBSET
from mlstack.components.kubernetes.chart_defaults import pod_security_level
from mlstack.components.kubernetes.resources import declare
from mlstack.components.kubernetes.system import namespace_manifest
from mlstack.stacks.names import JOBSET_NAMESPACE as NAMESPACE

CRD_KIND = "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition"
#: pulumi-kubernetes' annotation to take fields over from another field manager on apply: on a
#: cluster where an earlier Helm install created the CRD, "helm" owns its fields.
PATCH_FORCE = "pulumi.com/patchForce"


def crd_url(version: str) -> str:
    """The JobSet CRD at the release tag of chart `version` (the chart has no `v`, the tag has,
    kubernetes-sigs/jobset#1141)."""
    return (
        "https://raw.githubusercontent.com/kubernetes-sigs/jobset/"
        f"v{version}/charts/jobset/crds/jobset.x-k8s.io_jobsets.yaml"
    )


def force_crd_apply(args: pulumi.ResourceTransformArgs) -> pulumi.ResourceTransformResult | None:
    """Annotate the CRD so that its apply takes over the fields Helm created it with."""
    if args.type_ != CRD_KIND:
        return None
    props: dict[str, Any] = dict(args.props)
    # A ConfigFile child's props are the parsed YAML: plain maps, never Outputs.
    metadata: dict[str, Any] = dict(props.get("metadata") or {})
    metadata["annotations"] = {**(metadata.get("annotations") or {}), PATCH_FORCE: "true"}
    props["metadata"] = metadata
    return pulumi.ResourceTransformResult(props, args.opts)


@dataclass(frozen=True)
class JobSetControllerArgs:
    """Nothing to set: the chart's default values are kept (see the module docstring)."""


class JobSetController(pulumi.ComponentResource):
    def __init__(self, name: str, args: JobSetControllerArgs, opts: Options = None) -> None:
        super().__init__("mlstack:kubernetes:JobSetController", name, None, opts)
        self.crd = k8s.yaml.v2.ConfigFile(
            f"{name}-crd",
            file=crd_url(JOBSET.version),
            opts=pulumi.ResourceOptions(parent=self, transforms=[force_crd_apply]),
        )
        # mlstack declares the namespace (Helm's createNamespace would leave it without a Pod
        # Security label) at the level the chart's pods meet (chart_defaults.py).
        self.namespace = declare(
            f"{name}-namespace",
            namespace_manifest(NAMESPACE, pod_security_level(JOBSET)),
            pulumi.ResourceOptions(parent=self),
        )
        self.release = JOBSET.release(
            f"{name}-release",
            name="jobset",
            namespace=NAMESPACE,
            parent=self,
            skip_crds=True,
            opts=pulumi.ResourceOptions(depends_on=[self.crd, self.namespace]),
        )
        self.register_outputs({"release": self.release.name})
