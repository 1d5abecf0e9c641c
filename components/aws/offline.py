"""Placeholders for what AWS computes, so the offline plan can follow outputs through.

The plan has no AWS: a role's ARN, a cluster's endpoint or an ECR repository's URL do not
exist. Where the program derives something from them (trust policies, the kubeconfig, the
registry URL), the plan fills them in with values of the right shape in the placeholder account
000000000000 and region of the stack, so the derived inputs can be read and checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ACCOUNT = "000000000000"


def computed_outputs(
    region: str, resource_type: str, name: str, inputs: Mapping[str, Any]
) -> dict[str, Any]:
    """Outputs AWS would compute for one resource; {} for types nothing reads outputs of."""
    physical = str(inputs.get("name") or f"{name}-offline")
    if resource_type == "aws:iam/role:Role":
        return {"name": physical, "arn": f"arn:aws:iam::{ACCOUNT}:role/{physical}"}
    if resource_type == "aws:kms/key:Key":
        return {"arn": f"arn:aws:kms:{region}:{ACCOUNT}:key/{name}-offline"}
    if resource_type == "aws:ecr/repository:Repository":
        return {
            "arn": f"arn:aws:ecr:{region}:{ACCOUNT}:repository/{physical}",
            "repositoryUrl": f"{ACCOUNT}.dkr.ecr.{region}.amazonaws.com/{physical}",
        }
    if resource_type == "aws:eks/cluster:Cluster":
        return {
            "arn": f"arn:aws:eks:{region}:{ACCOUNT}:cluster/{physical}",
            "endpoint": f"https://OFFLINE.gr7.{region}.eks.amazonaws.com",
            "certificateAuthority": {"data": "b2ZmbGluZS1wbGFjZWhvbGRlcg=="},
            "vpcConfig": {
                **dict(inputs.get("vpcConfig") or {}),
                "clusterSecurityGroupId": f"sg-{name}-offline",
            },
        }
    if resource_type == "aws:eks/nodeGroup:NodeGroup":
        return {"resources": [{"autoscalingGroups": [{"name": f"eks-{name}-offline"}]}]}
    return {}
