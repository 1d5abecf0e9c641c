"""S3 buckets per purpose: private, KMS-encrypted, versioned, TLS-only, with lifecycle rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from mlstack.components import Options
from mlstack.components.aws.iam import dumps, tls_only_bucket_policy
from mlstack.stacks.schema import BucketConfig

#: Where old objects go after `archive_after_days`: S3 accepts it from day 30 on.
ARCHIVE_CLASS = "STANDARD_IA"
ARCHIVE_MIN_DAYS = 30
#: Multipart uploads (large checkpoints) abandoned by a killed writer stop costing after this.
ABORT_UPLOADS_DAYS = 7


@dataclass(frozen=True)
class BucketsArgs:
    #: purpose -> (bucket name, its config).
    buckets: Mapping[str, tuple[str, BucketConfig]]
    #: Protect the buckets and their key and keep them when the stack is destroyed (prod).
    retain: bool


class Buckets(pulumi.ComponentResource):
    """One bucket per purpose and the platform's storage KMS key."""

    def __init__(self, name: str, args: BucketsArgs, opts: Options = None) -> None:
        super().__init__("mlstack:aws:Buckets", name, None, opts)
        stateful = pulumi.ResourceOptions(
            parent=self, protect=args.retain, retain_on_delete=args.retain
        )
        self.key = aws.kms.Key(
            f"{name}-key",
            aws.kms.KeyArgs(
                description="Server-side encryption of the platform's buckets",
                enable_key_rotation=True,
                deletion_window_in_days=30,
            ),
            opts=stateful,
        )
        self.buckets = {
            purpose: self._create_bucket(f"{name}-{purpose}", bucket_name, cfg, stateful)
            for purpose, (bucket_name, cfg) in args.buckets.items()
        }
        self.register_outputs({p: b.bucket for p, b in self.buckets.items()})

    def _create_bucket(
        self, res: str, bucket_name: str, cfg: BucketConfig, opts: pulumi.ResourceOptions
    ) -> aws.s3.Bucket:
        """A bucket and its settings; each setting shares the bucket's logical name (their types
        differ, so their URNs do not)."""
        bucket = aws.s3.Bucket(
            res,
            aws.s3.BucketArgs(bucket=bucket_name, force_destroy=False),
            opts=opts,
        )
        on_bucket = pulumi.ResourceOptions(parent=bucket)
        # Every setting refers to the bucket by its name (= its id), so the policy pack can
        # match settings to buckets in a preview, before any id exists.
        aws.s3.BucketPublicAccessBlock(
            res,
            aws.s3.BucketPublicAccessBlockArgs(
                bucket=bucket.bucket,
                block_public_acls=True,
                block_public_policy=True,
                ignore_public_acls=True,
                restrict_public_buckets=True,
            ),
            opts=on_bucket,
        )
        aws.s3.BucketOwnershipControls(
            res,
            aws.s3.BucketOwnershipControlsArgs(
                bucket=bucket.bucket,
                rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            ),
            opts=on_bucket,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            res,
            aws.s3.BucketServerSideEncryptionConfigurationInitArgs(
                bucket=bucket.bucket,
                rules=[
                    aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                        apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                            sse_algorithm="aws:kms", kms_master_key_id=self.key.arn
                        ),
                        # One data key per bucket, not per object: far fewer KMS calls.
                        bucket_key_enabled=True,
                    )
                ],
            ),
            opts=on_bucket,
        )
        versioning = aws.s3.BucketVersioning(
            res,
            aws.s3.BucketVersioningInitArgs(
                bucket=bucket.bucket,
                versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(
                    status="Enabled"
                ),
            ),
            opts=on_bucket,
        )
        aws.s3.BucketPolicy(
            res,
            aws.s3.BucketPolicyArgs(
                bucket=bucket.bucket, policy=dumps(tls_only_bucket_policy(bucket_name))
            ),
            opts=on_bucket,
        )
        aws.s3.BucketLifecycleConfiguration(
            res,
            aws.s3.BucketLifecycleConfigurationArgs(
                bucket=bucket.bucket, rules=lifecycle_rules(cfg)
            ),
            # S3 rejects noncurrent-version rules until versioning is on.
            opts=pulumi.ResourceOptions(parent=bucket, depends_on=[versioning]),
        )
        return bucket


def lifecycle_rules(cfg: BucketConfig) -> list[aws.s3.BucketLifecycleConfigurationRuleArgs]:
    rules = [
        aws.s3.BucketLifecycleConfigurationRuleArgs(
            id="noncurrent-versions",
            status="Enabled",
            filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
            noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                noncurrent_days=cfg.noncurrent_version_days
            ),
            abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                days_after_initiation=ABORT_UPLOADS_DAYS
            ),
        )
    ]
    if cfg.archive_after_days is not None:
        rules.append(
            aws.s3.BucketLifecycleConfigurationRuleArgs(
                id="archive",
                status="Enabled",
                filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                transitions=[
                    aws.s3.BucketLifecycleConfigurationRuleTransitionArgs(
                        days=cfg.archive_after_days, storage_class=ARCHIVE_CLASS
                    )
                ],
            )
        )
    return rules
