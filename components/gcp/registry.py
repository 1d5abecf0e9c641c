"""An Artifact Registry docker repository: immutable tags and cleanup policies.

One repository holds every workload image (`<region>-docker.pkg.dev/<project>/<name>/<image>`);
cleanup keeps the newest `keep_last` versions of each image and every version the workloads pin,
and removes older ones after 30 days, untagged ones after 7.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from mlstack.components import Options
from mlstack.components.backend import is_digest
from mlstack.components.gcp.iam import REGISTRY_READER, service_account_member

#: Versions younger than this are never cleaned up, whatever keep_last says.
KEEP_YOUNGER_THAN = "2592000s"  # 30 days
UNTAGGED_AFTER = "604800s"  # 7 days


def registry_url(region: str, project: str, repository: str) -> str:
    return f"{region}-docker.pkg.dev/{project}/{repository}"


def cleanup_policies(
    keep_last: int, deployed: Sequence[str] = ()
) -> list[gcp.artifactregistry.RepositoryCleanupPolicyArgs]:
    """Keep the newest `keep_last` versions and every version the stack's workloads pin (by
    tag or by digest, which is the version's name); delete other versions after 30 days,
    untagged ones after 7. "If an artifact version matches criteria in both a delete policy
    and a keep policy, Artifact Registry applies the keep policy" (Artifact Registry, cleanup
    policy overview), so without the keep-deployed policies a pinned image older than 30 days
    and behind `keep_last` newer ones is deleted while a workload still pulls it."""
    tags = sorted({image for image in deployed if not is_digest(image)})
    digests = sorted({image for image in deployed if is_digest(image)})
    # Tag and version conditions match by prefix: a longer tag is kept too, never one less.
    keep_deployed = []
    if tags:
        keep_deployed.append(
            gcp.artifactregistry.RepositoryCleanupPolicyArgs(
                id="keep-deployed-tags",
                action="KEEP",
                condition=gcp.artifactregistry.RepositoryCleanupPolicyConditionArgs(
                    tag_state="TAGGED", tag_prefixes=tags
                ),
            )
        )
    if digests:
        keep_deployed.append(
            gcp.artifactregistry.RepositoryCleanupPolicyArgs(
                id="keep-deployed-digests",
                action="KEEP",
                condition=gcp.artifactregistry.RepositoryCleanupPolicyConditionArgs(
                    tag_state="ANY", version_name_prefixes=digests
                ),
            )
        )
    return [
        *keep_deployed,
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
    #: The tags and digests the stack's workloads pin, of any image: always kept.
    deployed: Sequence[str]
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
                cleanup_policies=cleanup_policies(args.keep_last, args.deployed),
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
