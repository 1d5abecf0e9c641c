"""The existing on-prem cluster, reached through a kubeconfig."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from mlstack.components import Options


@dataclass(frozen=True)
class ExistingClusterArgs:
    #: The kubeconfig's contents, or a path to it (see kubeconfig_from_path).
    kubeconfig: pulumi.Input[str]
    #: The kubeconfig context to use; None for its current context.
    context: str | None = None


class ExistingCluster(pulumi.ComponentResource):
    """A Kubernetes provider for a cluster mlstack does not create.

    The kubeconfig comes from the secret `mlstack:kubeconfig` when set, else from a file path
    on the machine that runs pulumi.
    """

    def __init__(self, name: str, args: ExistingClusterArgs, opts: Options = None) -> None:
        super().__init__("mlstack:onprem:ExistingCluster", name, None, opts)
        self.provider = k8s.Provider(
            f"{name}-provider",
            k8s.ProviderArgs(
                kubeconfig=args.kubeconfig,
                context=args.context,
                # Server-side apply lets mlstack patch objects it does not own (node labels)
                # without clobbering the fields other managers set.
                enable_server_side_apply=True,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({})


def kubeconfig_from_path(path: str) -> str:
    """The provider accepts a path or the file's contents; a path is expanded, not read,
    so the kubeconfig never enters the state."""
    return str(Path(path).expanduser())
