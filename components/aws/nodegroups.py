"""EKS managed node groups: the system group and one group per config pool.

GPU groups use the EKS NVIDIA-accelerated AL2023 AMI (driver and container toolkit baked in;
the device plugin is the Kubernetes layer's), carry the pool's taints and labels, and start at
their `min_nodes` (0 by default). Scale-to-zero works because the cluster autoscaler can build
a node of an empty group from its ASG's node-template tags (labels, taints, GPUs), set here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from mlstack.components import Options
from mlstack.components.aws.iam import (
    AUTOSCALER_NODE_TEMPLATE,
    dumps,
    node_template_tags,
    service_trust,
)
from mlstack.stacks.names import POOL_KIND_LABEL, POOL_LABEL, SYSTEM_POOL
from mlstack.stacks.schema import Capacity, NodePool, PoolKind, TaintEffect

GPU_AMI = "AL2023_x86_64_NVIDIA"
CPU_AMI = "AL2023_x86_64_STANDARD"

CAPACITY_TYPES = {Capacity.ON_DEMAND: "ON_DEMAND", Capacity.SPOT: "SPOT"}
TAINT_EFFECTS = {
    TaintEffect.NO_SCHEDULE: "NO_SCHEDULE",
    TaintEffect.PREFER_NO_SCHEDULE: "PREFER_NO_SCHEDULE",
    TaintEffect.NO_EXECUTE: "NO_EXECUTE",
}
#: The label the cluster autoscaler's AWS provider reads as "this node has GPUs" (`GPULabel` in
#: cloudprovider/aws/aws_cloud_provider.go). Its README, "Special note on GPU instances": until
#: the device plugin advertises `nvidia.com/gpu`, a new GPU node without this label looks like
#: one without GPUs, and the autoscaler scales out again for the same pending pods. The value is
#: the GPU type, `nvidia-tesla-k80` in the README's example; here `nvidia-<accelerator>`.
AWS_ACCELERATOR_LABEL = "k8s.amazonaws.com/accelerator"
NODE_POLICIES = (
    "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
    "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPullOnly",
)


def group_labels(pool: NodePool) -> dict[str, str]:
    """The pool's labels, and on a GPU pool the autoscaler's accelerator label."""
    labels = dict(pool.node_labels)
    if pool.kind is PoolKind.GPU and pool.accelerator:
        labels[AWS_ACCELERATOR_LABEL] = f"nvidia-{pool.accelerator}"
    return labels


@dataclass(frozen=True)
class LiveScaling:
    """A node group's scaling config as EKS has it now."""

    min_size: int
    max_size: int
    desired_size: int


#: Pulumi's auto-name: the logical name, '-', 7 random hex digits (pulumi-aws names
#: `nodeGroupName` with tfbridge.AutoName).
_AUTONAME = re.compile(r"^(?P<logical>.+)-[0-9a-f]{7}$")


def live_scaling(cluster: str, opts: pulumi.InvokeOptions) -> dict[str, LiveScaling]:
    """The scaling config of each of the cluster's node groups, by logical resource name;
    empty while the cluster does not exist (the first `pulumi up`, and the offline plan).

    A group is found by Pulumi's default auto-name; under a project-level naming setting it is
    not found, and `desired_size` treats it as new (desiredSize ignored, as before).
    """
    if cluster not in (aws.eks.get_clusters(opts=opts).names or ()):
        return {}
    found: dict[str, LiveScaling] = {}
    for group in aws.eks.get_node_groups(cluster_name=cluster, opts=opts).names or ():
        match = _AUTONAME.match(group)
        if match is None:
            continue  # not one of this program's groups
        configs = aws.eks.get_node_group(
            cluster_name=cluster, node_group_name=group, opts=opts
        ).scaling_configs
        if configs:
            c = configs[0]
            found[match["logical"]] = LiveScaling(c.min_size, c.max_size, c.desired_size)
    return found


def desired_size(low: int, high: int, live: LiveScaling | None) -> tuple[int, bool]:
    """(desiredSize to send, whether the engine keeps ignoring it) for a group sized low..high.

    The cluster autoscaler owns desiredSize once the group exists, so changes to it are
    ignored, as the provider docs show ("Ignoring Changes to Desired Size"). But an ignored
    desiredSize is sent as its stale old value with every scaling update, and EKS refuses a
    minimum above it ("Minimum capacity X can't be greater than desired size Y":
    terraform-aws-modules/terraform-aws-eks#748, #3306). So when min or max change, send the
    group's live desired size clamped into the new bounds: what hashicorp/terraform-provider-aws
    #18310 proposes (`desired_size = max(min_capacity, desired_size)`) and
    aws/containers-roadmap#1637 asks EKS for. The autoscaler's own value is kept whenever it is
    within the bounds, so nothing is scaled in.
    """
    if live is None:
        return low, True  # a new group starts at its minimum
    if (live.min_size, live.max_size) == (low, high):
        return live.desired_size, True
    return min(max(live.desired_size, low), high), False


def first_asg_name(resources: Any) -> str:
    """The ASG behind a managed node group (`NodeGroup.resources`)."""
    groups = resources[0].autoscaling_groups if resources else None
    if not groups or not groups[0].name:
        raise ValueError("the node group reports no autoscaling group")
    return str(groups[0].name)


@dataclass(frozen=True)
class NodeGroupsArgs:
    cluster_name: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]
    #: The config's pools, checked and resolved (every pool has its instance type).
    pools: Sequence[NodePool]
    system_instance_type: str
    #: The system group's (min, max) nodes.
    system_sizes: tuple[int, int]
    #: The groups' scaling configs as EKS has them now, by logical name (`live_scaling`).
    live: Mapping[str, LiveScaling] = field(default_factory=dict)


class NodeGroups(pulumi.ComponentResource):
    """Node role, the system group, and a managed node group per pool."""

    def __init__(self, name: str, args: NodeGroupsArgs, opts: Options = None) -> None:
        super().__init__("mlstack:aws:NodeGroups", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.role = aws.iam.Role(
            f"{name}-role",
            aws.iam.RoleArgs(
                assume_role_policy=dumps(service_trust("ec2.amazonaws.com")),
                description="EKS worker nodes",
            ),
            opts=child,
        )
        attachments = [
            aws.iam.RolePolicyAttachment(
                f"{name}-role-{arn.rsplit('/', 1)[1]}",
                aws.iam.RolePolicyAttachmentArgs(role=self.role.name, policy_arn=arn),
                opts=child,
            )
            for arn in NODE_POLICIES
        ]
        self._cluster_name = args.cluster_name
        self._live = args.live
        self._subnet_ids = list(args.subnet_ids)
        self._after = pulumi.ResourceOptions(parent=self, depends_on=attachments)
        low, high = args.system_sizes
        self.system = self._group(
            f"{name}-{SYSTEM_POOL}",
            labels={POOL_LABEL: SYSTEM_POOL, POOL_KIND_LABEL: PoolKind.CPU.value},
            instance_type=args.system_instance_type,
            ami=CPU_AMI,
            capacity="ON_DEMAND",
            sizes=(low, high),
            disk_gib=50,
            taints=(),
        )
        self.pools: dict[str, aws.eks.NodeGroup] = {}
        for pool in args.pools:
            taints = tuple((t.key, t.value, t.effect.value) for t in pool.effective_taints)
            labels = group_labels(pool)
            group = self._group(
                f"{name}-{pool.name}",
                labels=labels,
                instance_type=pool.instance_type or "",
                ami=GPU_AMI if pool.kind is PoolKind.GPU else CPU_AMI,
                capacity=CAPACITY_TYPES[pool.capacity],
                sizes=(pool.min_nodes or 0, pool.max_nodes),
                disk_gib=pool.disk_gib,
                taints=taints,
            )
            self.pools[pool.name] = group
            # Tag the ASG EKS made for the group; 'tags' on the node group stay on the group.
            asg = group.resources.apply(first_asg_name)
            # Every label, the accelerator one included: a group at zero nodes is scaled up
            # from these tags alone.
            template = node_template_tags(labels, taints, pool.gpus, pool.disk_gib)
            for key, value in sorted(template.items()):
                # Named by the key, so changing one label touches one tag.
                aws.autoscaling.Tag(
                    f"{name}-{pool.name}-{key.removeprefix(AUTOSCALER_NODE_TEMPLATE + '/')}",
                    aws.autoscaling.TagArgs(
                        autoscaling_group_name=asg,
                        tag=aws.autoscaling.TagTagArgs(
                            key=key, value=value, propagate_at_launch=False
                        ),
                    ),
                    opts=pulumi.ResourceOptions(parent=group),
                )
        self.register_outputs({"role_arn": self.role.arn, "groups": [SYSTEM_POOL, *self.pools]})

    def _group(
        self,
        resource_name: str,
        *,
        labels: dict[str, str],
        instance_type: str,
        ami: str,
        capacity: str,
        sizes: tuple[int, int],
        disk_gib: int,
        taints: Sequence[tuple[str, str, str]],
    ) -> aws.eks.NodeGroup:
        low, high = sizes
        desired, ignore = desired_size(low, high, self._live.get(resource_name))
        return aws.eks.NodeGroup(
            resource_name,
            aws.eks.NodeGroupArgs(
                cluster_name=self._cluster_name,
                node_role_arn=self.role.arn,
                subnet_ids=self._subnet_ids,
                instance_types=[instance_type],
                ami_type=ami,
                capacity_type=capacity,
                disk_size=disk_gib,
                scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                    min_size=low, max_size=high, desired_size=desired
                ),
                update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
                node_repair_config=aws.eks.NodeGroupNodeRepairConfigArgs(enabled=True),
                labels=labels,
                taints=[
                    aws.eks.NodeGroupTaintArgs(
                        key=key, value=value or None, effect=TAINT_EFFECTS[TaintEffect(effect)]
                    )
                    for key, value, effect in taints
                ],
                tags={POOL_LABEL: labels[POOL_LABEL]},
            ),
            # The autoscaler owns the group's size once it exists (see desired_size).
            opts=pulumi.ResourceOptions.merge(
                self._after,
                pulumi.ResourceOptions(
                    ignore_changes=["scalingConfig.desiredSize"] if ignore else []
                ),
            ),
        )
