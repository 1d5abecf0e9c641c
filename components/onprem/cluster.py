"""The existing on-prem cluster, reached through a kubeconfig."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from mlstack.components import Options


@dataclass(frozen=True)
class ExistingClusterArgs:
    #: The kubeconfig's contents, or a path to it as the config wrote it (`~/` unexpanded).
    kubeconfig: pulumi.Input[str]
    #: The kubeconfig context to use; None for its current context.
    context: str | None = None


class ExistingCluster(pulumi.ComponentResource):
    """A Kubernetes provider for a cluster mlstack does not create.

    The kubeconfig comes from the secret `mlstack:kubeconfig` when set, else from a file path
    on the machine that runs pulumi. The path is handed to the provider as written: the
    provider reads a path or contents and expands a leading `~/` itself, on the machine that
    runs it (pulumi/pulumi-kubernetes provider/pkg/provider/provider.go: "Handle the '~'
    character if it is set in the config string"). Expanding it here would put one operator's
    home directory into the provider's inputs, and every other operator's `up` would show a
    diff on the provider.
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
