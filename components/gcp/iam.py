"""IAM for the GCP backend as pure functions: names, members, conditions and team grants.

Kept free of resources so each rule can be read and tested on its own. A team's workloads act
as one Google service account, bound to the team's Kubernetes ServiceAccount by Workload
Identity; it holds bucket-level roles only (no project role), and its writes are confined to the
team's prefix by IAM conditions on the object name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from mlstack.stacks.prefixes import prefix_problem

#: Predefined role with what GKE nodes need (logs, metrics, metadata) and nothing more.
NODE_ROLE = "roles/container.defaultNodeServiceAccount"
REGISTRY_READER = "roles/artifactregistry.reader"
WORKLOAD_IDENTITY_USER = "roles/iam.workloadIdentityUser"
OBJECT_READER = "roles/storage.objectViewer"
#: Create, read, overwrite and delete objects (and multipart uploads), no IAM or bucket admin.
OBJECT_WRITER = "roles/storage.objectUser"
#: What the custom bucket role holds: orbax and the storage clients read bucket metadata, and
#: listing is a bucket-level permission that IAM conditions on object names cannot narrow.
BUCKET_READ_PERMISSIONS = ("storage.buckets.get", "storage.objects.list")

#: The node service account is '<cluster>-nodes'; team accounts are '<cluster>-<team>', so no
#: team may be called this.
NODES_ACCOUNT = "nodes"
_ACCOUNT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")


def account_id(*parts: str) -> str:
    """A service account id (6-30 characters) for '<part>-<part>', shortened with a hash."""
    base = "-".join(parts)
    if _ACCOUNT_ID.match(base):
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    head = re.sub(r"[^a-z0-9-]", "-", base.lower())[:21].rstrip("-")
    if not head[:1].isalpha():
        head = f"sa-{head}"[:21].rstrip("-")
    return f"{head}-{digest}"


def custom_role_id(cluster: str, what: str) -> str:
    """A project custom role id ([A-Za-z0-9_.], 3-64): 'mlstack_<cluster>_<what>'."""
    return f"mlstack_{cluster}_{what}".replace("-", "_")[:64]


def service_account_member(email: str) -> str:
    return f"serviceAccount:{email}"


def workload_identity_member(project: str, namespace: str, service_account: str) -> str:
    """The principal of one Kubernetes ServiceAccount in the project's workload pool."""
    return f"serviceAccount:{project}.svc.id.goog[{namespace}/{service_account}]"


def object_prefix_condition(bucket: str, prefix: str) -> str:
    """A CEL condition true only for objects under `<prefix>/` in `bucket`.

    Refuses a prefix that would match every object: that is a bucket-wide grant in disguise.
    """
    problem = prefix_problem(prefix)
    if problem is not None:
        raise ValueError(f"prefix {prefix!r}: {problem}")
    return f'resource.name.startsWith("projects/_/buckets/{bucket}/objects/{prefix}/")'


@dataclass(frozen=True)
class BucketGrant:
    """One role on one bucket, optionally limited by a condition on the object name."""

    purpose: str
    #: What it allows, in a word: names the grant's resource.
    access: str
    role: str
    condition: str | None = None


def team_bucket_grants(
    *, prefix: str, buckets: Mapping[str, str], bucket_reader_role: str
) -> list[BucketGrant]:
    """Least privilege for a team's workloads on the platform's buckets.

    Read the datasets bucket; read, write and delete only under `<prefix>/` in the checkpoints
    and models buckets; read bucket metadata and list objects of all three (GCS checks listing
    on the bucket, so a condition on object names cannot narrow it: object names are visible,
    contents are not).
    """
    grants = [
        BucketGrant(p, "list", bucket_reader_role) for p in ("datasets", "checkpoints", "models")
    ]
    grants.append(BucketGrant("datasets", "read", OBJECT_READER))
    for purpose in ("checkpoints", "models"):
        grants.append(
            BucketGrant(
                purpose,
                "write",
                OBJECT_WRITER,
                condition=object_prefix_condition(buckets[purpose], prefix),
            )
        )
    return grants
