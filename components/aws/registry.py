"""ECR repositories for the workload images: immutable tags, scan on push, bounded history."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from mlstack.components import Options
from mlstack.components.aws.iam import dumps, ecr_lifecycle_policy


def registry_url(repository_url: str, prefix: str) -> str:
    """'<acct>.dkr.ecr.<region>.amazonaws.com/ml/train' -> '<acct>...amazonaws.com/ml'."""
    host = repository_url.split("/", 1)[0]
    return f"{host}/{prefix}"


@dataclass(frozen=True)
class RegistryArgs:
    #: Repositories are named `<prefix>/<repository>`.
    prefix: str
    repositories: Sequence[str]
    #: Image versions each repository keeps.
    keep_last: int
    #: Per repository, the image tags (and digests) the stack's workloads pin: tags are
    #: never expired.
    deployed: Mapping[str, Sequence[str]]
    #: Protect the repositories and keep them when the stack is destroyed (prod).
    retain: bool


class Registry(pulumi.ComponentResource):
    """`<prefix>/<repository>` per workload image."""

    def __init__(self, name: str, args: RegistryArgs, opts: Options = None) -> None:
        super().__init__("mlstack:aws:Registry", name, None, opts)
        stateful = pulumi.ResourceOptions(
            parent=self, protect=args.retain, retain_on_delete=args.retain
        )
        self.repositories: dict[str, aws.ecr.Repository] = {}
        for repo in args.repositories:
            repository = aws.ecr.Repository(
                f"{name}-{repo}",
                aws.ecr.RepositoryArgs(
                    name=f"{args.prefix}/{repo}",
                    image_tag_mutability="IMMUTABLE",
                    image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(
                        scan_on_push=True
                    ),
                    encryption_configurations=[
                        aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="KMS")
                    ],
                    force_delete=False,
                ),
                opts=stateful,
            )
            aws.ecr.LifecyclePolicy(
                f"{name}-{repo}",
                aws.ecr.LifecyclePolicyArgs(
                    repository=repository.name,
                    policy=dumps(ecr_lifecycle_policy(args.keep_last, args.deployed.get(repo, ()))),
                ),
                opts=pulumi.ResourceOptions(parent=repository),
            )
            self.repositories[repo] = repository
        first = next(iter(self.repositories.values()))
        self.url = first.repository_url.apply(lambda u: registry_url(u, args.prefix))
        self.register_outputs({"url": self.url})
