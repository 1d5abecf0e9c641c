"""Workload identity: a Google service account per team, usable only by the team's
Kubernetes ServiceAccount (Workload Identity), with bucket-level grants and no keys."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from mlstack.components import Options
from mlstack.components.gcp.iam import (
    WORKLOAD_IDENTITY_USER,
    BucketGrant,
    account_id,
    service_account_member,
    workload_identity_member,
)


@dataclass(frozen=True)
class TeamIdentityArgs:
    cluster: str
    project: str
    team: str
    #: The team's Kubernetes ServiceAccount that may act as the Google service account.
    service_account: str
    #: purpose -> bucket name.
    buckets: Mapping[str, pulumi.Input[str]]
    grants: Sequence[BucketGrant]
    #: More of the team's Kubernetes ServiceAccounts that act as it: the pipeline runner,
    #: which writes run state to the team's prefix.
    more_service_accounts: Sequence[str] = ()


class TeamIdentity(pulumi.ComponentResource):
    """The team's service account, its Workload Identity binding and its bucket grants."""

    def __init__(self, name: str, args: TeamIdentityArgs, opts: Options = None) -> None:
        super().__init__("mlstack:gcp:TeamIdentity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.account = gcp.serviceaccount.Account(
            name,
            gcp.serviceaccount.AccountArgs(
                account_id=account_id(args.cluster, args.team),
                project=args.project,
                display_name=f"Workloads of team {args.team} on {args.cluster}",
            ),
            opts=child,
        )
        gcp.serviceaccount.IAMMember(
            f"{name}-workload-identity",
            gcp.serviceaccount.IAMMemberArgs(
                service_account_id=self.account.name,
                role=WORKLOAD_IDENTITY_USER,
                member=workload_identity_member(args.project, args.team, args.service_account),
            ),
            opts=child,
        )
        for other in args.more_service_accounts:
            gcp.serviceaccount.IAMMember(
                f"{name}-workload-identity-{other}",
                gcp.serviceaccount.IAMMemberArgs(
                    service_account_id=self.account.name,
                    role=WORKLOAD_IDENTITY_USER,
                    member=workload_identity_member(args.project, args.team, other),
                ),
                opts=child,
            )
        member = self.account.email.apply(service_account_member)
        for grant in args.grants:
            gcp.storage.BucketIAMMember(
                f"{name}-{grant.purpose}-{grant.access}",
                gcp.storage.BucketIAMMemberArgs(
                    bucket=args.buckets[grant.purpose],
                    role=grant.role,
                    member=member,
                    condition=gcp.storage.BucketIAMMemberConditionArgs(
                        title=f"{args.team}-prefix-only",
                        expression=grant.condition,
                        description=f"Only objects under team {args.team}'s prefix",
                    )
                    if grant.condition is not None
                    else None,
                ),
                opts=child,
            )
        self.register_outputs({"email": self.account.email})
