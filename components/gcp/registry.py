"""An Artifact Registry docker repository: immutable tags and cleanup policies.

One repository holds every workload image (`<region>-docker.pkg.dev/<project>/<name>/<image>`);
cleanup keeps the newest `keep_last` versions of each image and removes older ones after 30
days, untagged ones after 7.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from mlstack.components import Options
from mlstack.components.gcp.iam import REGISTRY_READER, service_account_member

#: Versions younger than this are never cleaned up, whatever keep_last says.
KEEP_YOUNGER_THAN = "2592000s"  # 30 days
UNTAGGED_AFTER = "604800s"  # 7 days


def registry_url(region: str, project: str, repository: str) -> str:
    return f"{region}-docker.pkg.dev/{project}/{repository}"


def cleanup_policies(keep_last: int) -> list[gcp.artifactregistry.RepositoryCleanupPolicyArgs]:
    return [
        gcp.artifactregistry.RepositoryCleanupPolicyArgs(
            id="keep-recent",
            action="KEEP",
            most_recent_versions=gcp.artifactregistry.RepositoryCleanupPolicyMostRecentVersionsArgs(
                keep_count=keep_last
            ),
        ),
        gcp.artifactregistry.RepositoryCleanupPolicyArgs(
            id="delete-old",
            action="DELETE",
            condition=gcp.artifactregistry.RepositoryCleanupPolicyConditionArgs(
                tag_state="ANY", older_than=KEEP_YOUNGER_THAN
            ),
        ),
        gcp.artifactregistry.RepositoryCleanupPolicyArgs(
            id="delete-untagged",
            action="DELETE",
            condition=gcp.artifactregistry.RepositoryCleanupPolicyConditionArgs(
                tag_state="UNTAGGED", older_than=UNTAGGED_AFTER
            ),
        ),
    ]


@dataclass(frozen=True)
class RegistryArgs:
    project: str
    region: str
    #: The repository's id.
    repository: str
    #: The workload images it holds (named in its description).
    images: Sequence[str]
    #: Versions of each image the cleanup policy keeps.
    keep_last: int
    #: Protect the repository and keep it when the stack is destroyed (prod).
    retain: bool
    #: Service accounts that may pull, by email.
    reader_emails: Sequence[pulumi.Input[str]] = ()


class Registry(pulumi.ComponentResource):
    """The docker repository, and pull access for the node service account."""

    def __init__(self, name: str, args: RegistryArgs, opts: Options = None) -> None:
        super().__init__("mlstack:gcp:Registry", name, None, opts)
        self.repository = gcp.artifactregistry.Repository(
            name,
            gcp.artifactregistry.RepositoryArgs(
                repository_id=args.repository,
                project=args.project,
                location=args.region,
                format="DOCKER",
                description=f"Workload images: {', '.join(args.images)}",
                docker_config=gcp.artifactregistry.RepositoryDockerConfigArgs(immutable_tags=True),
                cleanup_policies=cleanup_policies(args.keep_last),
                cleanup_policy_dry_run=False,
            ),
            opts=pulumi.ResourceOptions(
                parent=self, protect=args.retain, retain_on_delete=args.retain
            ),
        )
        for i, email in enumerate(args.reader_emails):
            gcp.artifactregistry.RepositoryIamMember(
                f"{name}-reader-{i}",
                gcp.artifactregistry.RepositoryIamMemberArgs(
                    project=args.project,
                    location=args.region,
                    repository=self.repository.repository_id,
                    role=REGISTRY_READER,
                    member=pulumi.Output.from_input(email).apply(service_account_member),
                ),
                opts=pulumi.ResourceOptions(parent=self.repository),
            )
        self.url = registry_url(args.region, args.project, args.repository)
        self.register_outputs({"url": self.url})
