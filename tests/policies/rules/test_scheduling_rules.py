"""pods-fit-a-pool: every pod template the plan deploys fits some pool, and each planted mistake
that would leave pods Pending is caught with the pool's reason.

The plans are the shipped stacks' (aws-dev, gcp-dev, onprem-lab); each test breaks one thing in
a copy and runs the rule on the whole plan, so the pools are read from what the plan declares.
"""

from __future__ import annotations

from typing import Any

import pytest
from rule_args import PlanCopy, fails, messages, stack_args, wire

from mlstack.components.aws.catalog import MACHINES as AWS_MACHINES
from mlstack.components.aws.catalog import MAX_PODS
from mlstack.components.aws.catalog import node_allocatable as eks_allocatable
from mlstack.components.gcp.catalog import MEMORY_RESERVE_TIERS
from mlstack.components.gcp.catalog import node_allocatable as gke_allocatable
from mlstack.policies.rules import scheduling
from mlstack.policies.rules.pools import EKS_NODE_GROUP, GKE_NODE_POOL, pool_of
from mlstack.stacks.catalog import CPU_RESERVE_TIERS, tiered_reserve
from mlstack.stacks.names import POOL_LABEL
from mlstack.stacks.offline import run_plan
from mlstack.stacks.plan import Plan
from mlstack.stacks.stackfile import read_stack

JOBSET = "kubernetes:jobset.x-k8s.io/v1alpha2:JobSet"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
RELEASE = "kubernetes:helm.sh/v3:Release"


@pytest.fixture(scope="module")
def aws_plan() -> Plan:
    return run_plan(read_stack("aws-dev"))


@pytest.fixture(scope="module")
def gcp_plan() -> Plan:
    return run_plan(read_stack("gcp-dev"))


def _run(plan: PlanCopy) -> list[str]:
    return messages(scheduling.pods_fit_a_pool, stack_args(plan.resources()))


def _pod(plan: PlanCopy, type_: str) -> dict[str, Any]:
    """The pod spec of the one `type_` object (a JobSet's workers, the serving Deployment)."""
    [item] = [i for i in plan.items if i.type == type_]
    spec = item.inputs["spec"]
    if type_ == JOBSET:
        return spec["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    return spec["template"]["spec"]


def _requests(pod: dict[str, Any], **amounts: str) -> None:
    resources = pod["containers"][0]["resources"]
    resources["requests"].update(amounts)
    resources["limits"].update(amounts)


# --- the shipped stacks fit --------------------------------------------------------------


@pytest.mark.parametrize("stack", ["aws", "gcp", "lab"])
def test_shipped_stacks_fit(stack: str, aws_plan: Plan, gcp_plan: Plan, lab_plan: Plan) -> None:
    plan = {"aws": aws_plan, "gcp": gcp_plan, "lab": lab_plan}[stack]
    assert _run(PlanCopy.of(plan)) == []


# --- planted mistakes, one each ----------------------------------------------------------


@fails("pods-fit-a-pool")
def test_eight_cpus_on_a_four_vcpu_machine(aws_plan: Plan) -> None:
    plan = PlanCopy.of(aws_plan)
    _requests(_pod(plan, JOBSET), cpu="8")
    [message] = _run(plan)
    assert message.startswith("JobSet ml/lm-tiny, replicatedJob workers fits no node pool")
    assert "pool 'l4': a pod asks 8 CPUs and a g6.xlarge node (4 vCPUs) has 3.92 allocatable" in (
        message
    )
    assert "pool 'cpu': nodeSelector mlstack.dev/pool=l4 does not match" in message


@fails("pods-fit-a-pool")
def test_eight_cpus_on_a_four_vcpu_gke_machine(gcp_plan: Plan) -> None:
    plan = PlanCopy.of(gcp_plan)
    _requests(_pod(plan, JOBSET), cpu="8000m")
    [message] = _run(plan)
    assert "pool 'l4': a pod asks 8 CPUs and a g2-standard-4 node (4 vCPUs)" in message


@fails("pods-fit-a-pool")
def test_a_selector_label_no_pool_has(aws_plan: Plan) -> None:
    plan = PlanCopy.of(aws_plan)
    _pod(plan, DEPLOYMENT)["nodeSelector"]["topology.kubernetes.io/zone"] = "us-east-1z"
    [message] = _run(plan)
    assert message.startswith("Deployment ml/lm-tiny-api fits no node pool")
    assert "pool 'l4': nodeSelector topology.kubernetes.io/zone=us-east-1z does not match" in (
        message
    )


@fails("pods-fit-a-pool")
def test_a_workload_selecting_a_label_the_stack_does_not_put_on_its_nodes(
    aws_plan: Plan,
) -> None:
    """The pools are what the node groups declare, not what the config says: a node group
    whose labels drifted from the workloads' selector is caught."""
    plan = PlanCopy.of(aws_plan)
    group = plan.find(EKS_NODE_GROUP, instanceTypes=["g6.xlarge"]).inputs
    group["labels"][POOL_LABEL] = "l4-renamed"
    found = _run(plan)
    assert len(found) == 2  # the JobSet and the Deployment
    assert all("nodeSelector mlstack.dev/pool=l4 does not match" in m for m in found)


@fails("pods-fit-a-pool")
def test_a_missing_toleration_for_a_tainted_gpu_pool(aws_plan: Plan) -> None:
    plan = PlanCopy.of(aws_plan)
    del _pod(plan, JOBSET)["tolerations"]
    [message] = _run(plan)
    assert "pool 'l4': nothing tolerates the taint nvidia.com/gpu=present:NoSchedule" in message


@fails("pods-fit-a-pool")
def test_ephemeral_storage_over_the_disk(aws_plan: Plan) -> None:
    plan = PlanCopy.of(aws_plan)
    _requests(_pod(plan, DEPLOYMENT), **{"ephemeral-storage": "190Gi"})
    [message] = _run(plan)
    # 200 GiB disk less kubelet's 10% nodefs eviction threshold and nodeadm's 1 GiB.
    assert "a pod asks 190 GiB of ephemeral storage and a g6.xlarge node's disk leaves 179 GiB" in (
        message
    )


def test_ephemeral_storage_within_the_disk_fits(aws_plan: Plan) -> None:
    plan = PlanCopy.of(aws_plan)
    _requests(_pod(plan, DEPLOYMENT), **{"ephemeral-storage": "150Gi"})
    assert _run(plan) == []


@fails("pods-fit-a-pool")
def test_replicas_over_max_nodes(aws_plan: Plan) -> None:
    plan = PlanCopy.of(aws_plan)
    [hpa] = [i for i in plan.items if i.type == HPA]
    hpa.inputs["spec"]["maxReplicas"] = 4
    [message] = _run(plan)
    # 4 replicas and 1 surge pod, one 1-GPU pod per 1-GPU node, on a pool of at most 4 nodes.
    assert (
        "pool 'l4': 5 pods at once (4 replicas and 1 surge) at 1 per node need 5 nodes and the "
        "pool has at most 4" in message
    )


@fails("pods-fit-a-pool")
def test_jobset_hosts_over_max_nodes(aws_plan: Plan) -> None:
    plan = PlanCopy.of(aws_plan)
    [item] = [i for i in plan.items if i.type == JOBSET]
    job = item.inputs["spec"]["replicatedJobs"][0]["template"]["spec"]
    job["parallelism"] = job["completions"] = 5
    [message] = _run(plan)
    assert "5 pods at once (1 x 5 pods) at 1 per node need 5 nodes" in message


def test_pods_share_a_node_when_it_holds_several(aws_plan: Plan) -> None:
    """Without GPUs, pods of 1 CPU and 4 GiB pack 3 to a g6.xlarge (3.92 CPUs, 15 GiB): 11
    replicas and the 1 surge pod need the pool's 4 nodes; 12 replicas would need 5."""
    plan = PlanCopy.of(aws_plan)
    pod = _pod(plan, DEPLOYMENT)
    for part in ("requests", "limits"):
        del pod["containers"][0]["resources"][part]["nvidia.com/gpu"]
    _requests(pod, cpu="1", memory="4Gi")
    [hpa] = [i for i in plan.items if i.type == HPA]
    hpa.inputs["spec"]["maxReplicas"] = 11
    assert _run(plan) == []
    hpa.inputs["spec"]["maxReplicas"] = 12
    [message] = _run(plan)
    assert "13 pods at once (12 replicas and 1 surge) at 3 per node need 5 nodes" in message


@fails("pods-fit-a-pool")
def test_memory_that_fits_the_machine_but_not_its_allocatable(aws_plan: Plan) -> None:
    plan = PlanCopy.of(aws_plan)
    # A g6.xlarge has 16 GiB; the EKS AMI keeps 11 x 58 + 255 MiB and evicts below 100 MiB.
    _requests(_pod(plan, JOBSET), memory="15.5Gi")
    [message] = _run(plan)
    assert "a pod asks 15.5 GiB of memory and a g6.xlarge node (16 GiB) has 15 GiB allocatable" in (
        message
    )


def test_memory_just_within_allocatable_fits(aws_plan: Plan) -> None:
    plan = PlanCopy.of(aws_plan)
    _requests(_pod(plan, JOBSET), memory="15000Mi")
    assert _run(plan) == []


@fails("pods-fit-a-pool")
def test_memory_over_gke_allocatable(gcp_plan: Plan) -> None:
    plan = PlanCopy.of(gcp_plan)
    # A g2-standard-4 has 16 GiB; GKE keeps 25% of 4, 20% of 4 and 10% of 8 GiB, plus 100 MiB.
    _requests(_pod(plan, DEPLOYMENT), memory="14Gi")
    [message] = _run(plan)
    assert "a g2-standard-4 node (16 GiB) has 13.3 GiB allocatable" in message


@fails("pods-fit-a-pool")
def test_an_addon_placed_on_no_pool(aws_plan: Plan) -> None:
    plan = PlanCopy.of(aws_plan)
    kueue = next(i for i in plan.items if i.type == RELEASE and "kueue" in i.inputs["chart"])
    kueue.inputs["values"] = {"controllerManager": {"nodeSelector": {POOL_LABEL: "infra"}}}
    [message] = _run(plan)
    assert message.startswith("Helm release 'kueue-release' (oci://registry.k8s.io/kueue/")
    assert "pool 'system': nodeSelector mlstack.dev/pool=infra does not match" in message


@fails("pods-fit-a-pool")
def test_an_onprem_workload_selecting_no_pool(lab_plan: Plan) -> None:
    plan = PlanCopy.of(lab_plan)
    _pod(plan, JOBSET)["nodeSelector"] = {POOL_LABEL: "h100"}
    [message] = _run(plan)
    assert "pool 'a100': nodeSelector mlstack.dev/pool=h100 does not match" in message


def test_onprem_pools_count_their_node_patches(lab_plan: Plan) -> None:
    pools = scheduling.declared_pools(PlanCopy.of(lab_plan).resources())
    assert {name: p.max_nodes for name, p in pools.items()} == {"cpu": 4, "a100": 2, "l40s": 3}
    assert all(p.node is None for p in pools.values())


# --- allocatable, as each cloud documents it ------------------------------------------------


def test_cpu_reserve_ladder() -> None:
    # 6% of 1000m + 1% of 1000m + 0.5% of 2000m = 80m for 4 cores; + 0.25% of 4000m at 8.
    assert tiered_reserve(4000, CPU_RESERVE_TIERS) == pytest.approx(80)
    assert tiered_reserve(8000, CPU_RESERVE_TIERS) == pytest.approx(90)
    assert tiered_reserve(500, CPU_RESERVE_TIERS) == pytest.approx(30)


def test_gke_memory_reserve_matches_the_documented_example() -> None:
    """hatemosphere/gke-node-allocatable-memory-calculator's worked example of GKE's table:
    150 GiB reserves 9.8577 GiB with the 100 MiB eviction threshold."""
    reserved = tiered_reserve(150, MEMORY_RESERVE_TIERS) + 100 / 1024
    assert reserved == pytest.approx(9.8577, abs=1e-4)


def test_eks_allocatable() -> None:
    node = eks_allocatable("g6.xlarge", 200)
    assert node is not None
    assert (node.cpu_millis, node.memory_mib, node.gpus) == (3920, 16384 - 893 - 100, 1)
    assert node.ephemeral_mib == int(200 * 1024 * 0.9) - 1024
    assert eks_allocatable("x9.unknown", 200) is None


def test_gke_allocatable() -> None:
    node = gke_allocatable("n1-standard-8", None, gpus=2)
    assert node is not None
    assert (node.cpu_millis, node.gpus, node.ephemeral_mib) == (7910, 2, None)


def test_every_aws_machine_has_its_max_pods() -> None:
    assert set(MAX_PODS) == set(AWS_MACHINES)


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", 0.5), ("16", 16.0), ("128Gi", 128 * 2**30), ("1G", 1e9), ("1e3", 1000.0), (4.0, 4.0)],
)
def test_quantities(text: Any, value: float) -> None:
    assert scheduling.quantity(text) == pytest.approx(value)


def test_an_init_container_larger_than_the_containers_sets_the_request() -> None:
    spec = {
        "initContainers": [{"resources": {"requests": {"cpu": "4"}}}],
        "containers": [
            {"resources": {"requests": {"cpu": "1"}}},
            {"resources": {"limits": {"cpu": "2", "memory": "1Gi"}}},
        ],
    }
    asked = scheduling.pod_requests(spec)
    assert (asked.cpu, asked.memory) == (4.0, 2**30)


@pytest.mark.parametrize(
    ("pool", "most"),
    [
        ({"autoscaling": {"totalMaxNodeCount": 5}}, 5),
        ({"autoscaling": {"maxNodeCount": 2}, "nodeLocations": ["a", "b", "c"]}, 6),
        ({"nodeCount": 3, "nodeLocations": ["a", "b"]}, 6),
    ],
)
def test_gke_pool_sizes(pool: dict[str, Any], most: int) -> None:
    props = {
        **pool,
        "nodeConfig": {"machineType": "e2-standard-4", "labels": {POOL_LABEL: "cpu"}},
    }
    nodes = pool_of(GKE_NODE_POOL, wire(props))
    assert nodes is not None
    assert nodes.max_nodes == most
    assert nodes.node is not None and nodes.node.ephemeral_mib is None
