"""The existing on-prem cluster, reached through a kubeconfig."""

from __future__ import annotations

from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s


class ExistingCluster(pulumi.ComponentResource):
    """A Kubernetes provider for a cluster mlstack does not create.

    The kubeconfig comes from the secret `mlstack:kubeconfig` when set, else from a file path
    on the machine that runs pulumi.
    """

    def __init__(
        self,
        name: str,
        kubeconfig: pulumi.Input[str],
        context: str | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("mlstack:onprem:ExistingCluster", name, None, opts)
        self.provider = k8s.Provider(
            f"{name}-provider",
            k8s.ProviderArgs(
                kubeconfig=kubeconfig,
                context=context,
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
