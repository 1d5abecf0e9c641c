"""GCS buckets per purpose: uniform access, public access prevention, versions, lifecycle."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from mlstack.components import Options
from mlstack.stacks.schema import BucketConfig

#: Where old objects go: Nearline (30-day minimum storage, cheap to keep, a fee to read).
ARCHIVE_CLASS = "NEARLINE"
#: Checkpoints move to ARCHIVE_CLASS after this many days unless archive_after_days says
#: otherwise: training resumes from the newest ones, which stay in STANDARD.
CHECKPOINT_ARCHIVE_DAYS = 30
#: Multipart uploads (large checkpoints) abandoned by a killed writer stop costing after this.
ABORT_UPLOADS_DAYS = 7


@dataclass(frozen=True)
class BucketsArgs:
    project: str
    region: str
    #: purpose -> (bucket name, its config).
    buckets: Mapping[str, tuple[str, BucketConfig]]
    #: Protect the buckets and keep them when the stack is destroyed (prod).
    retain: bool
    #: The KMS key the buckets encrypt with by default; None for Google's own keys.
    kms_key: pulumi.Input[str] | None = None
    #: What lets the Cloud Storage service agent use `kms_key` (its IAM grant): each bucket
    #: waits for it, since naming the key alone does not.
    kms_grants: Sequence[pulumi.Resource] = ()


class Buckets(pulumi.ComponentResource):
    """One bucket per purpose."""

    def __init__(self, name: str, args: BucketsArgs, opts: Options = None) -> None:
        super().__init__("mlstack:gcp:Buckets", name, None, opts)
        stateful = pulumi.ResourceOptions(
            parent=self,
            protect=args.retain,
            retain_on_delete=args.retain,
            depends_on=list(args.kms_grants),
        )
        self.buckets: dict[str, gcp.storage.Bucket] = {}
        for purpose, (bucket_name, cfg) in args.buckets.items():
            self.buckets[purpose] = gcp.storage.Bucket(
                f"{name}-{purpose}",
                gcp.storage.BucketArgs(
                    name=bucket_name,
                    project=args.project,
                    location=args.region.upper(),
                    storage_class="STANDARD",
                    uniform_bucket_level_access=True,
                    public_access_prevention="enforced",
                    versioning=gcp.storage.BucketVersioningArgs(enabled=True),
                    lifecycle_rules=lifecycle_rules(purpose, cfg),
                    encryption=gcp.storage.BucketEncryptionArgs(default_kms_key_name=args.kms_key)
                    if args.kms_key is not None
                    else None,
                    force_destroy=False,
                    labels={"mlstack-purpose": purpose},
                ),
                opts=stateful,
            )
        self.register_outputs({p: b.name for p, b in self.buckets.items()})


def archive_days(purpose: str, cfg: BucketConfig) -> int | None:
    if cfg.archive_after_days is not None:
        return cfg.archive_after_days
    return CHECKPOINT_ARCHIVE_DAYS if purpose == "checkpoints" else None


def lifecycle_rules(purpose: str, cfg: BucketConfig) -> list[gcp.storage.BucketLifecycleRuleArgs]:
    rules = [
        gcp.storage.BucketLifecycleRuleArgs(
            action=gcp.storage.BucketLifecycleRuleActionArgs(type="Delete"),
            condition=gcp.storage.BucketLifecycleRuleConditionArgs(
                with_state="ARCHIVED", days_since_noncurrent_time=cfg.noncurrent_version_days
            ),
        ),
        gcp.storage.BucketLifecycleRuleArgs(
            action=gcp.storage.BucketLifecycleRuleActionArgs(type="AbortIncompleteMultipartUpload"),
            condition=gcp.storage.BucketLifecycleRuleConditionArgs(age=ABORT_UPLOADS_DAYS),
        ),
    ]
    days = archive_days(purpose, cfg)
    if days is not None:
        rules.append(
            gcp.storage.BucketLifecycleRuleArgs(
                action=gcp.storage.BucketLifecycleRuleActionArgs(
                    type="SetStorageClass", storage_class=ARCHIVE_CLASS
                ),
                condition=gcp.storage.BucketLifecycleRuleConditionArgs(
                    age=days, with_state="LIVE", matches_storage_classes=["STANDARD"]
                ),
            )
        )
    return rules
