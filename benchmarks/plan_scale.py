"""How the offline plan scales: plan time per resource and peak memory vs the SDK's own floor.

Synthetic on-prem platforms (teams x node pools x nodes per pool, the same shape as the
`mlstack:platform` value of stacks/Pulumi.onprem-lab.yaml) of about 100, 1,000, 2,000 and 3,000
resources go through the real path, `stacks.offline.run_plan` (validation, then the program under
the SDK mock runtime). A platform's size is not guessed from a hand count: `resource_model` plans
four tiny platforms first and solves for what the plan records per team (its TeamTenancy
component and the 12 objects in it), per pool (its pool component and Kueue ResourceFlavor), per
node (a NodePatch) and in total besides (cluster, system, device plugin, Kueue, priorities), and
the nodes per pool of each size follow from that.

The floor is measured in the same process: `stacks.offline.run_program` (RecordingMonitor +
set_mocks + run_pulumi_func) driving a trivial program that registers as many plain core/v1
ConfigMaps as the platform plan recorded; a second, "shaped" floor registers as many flat
NodePatches with the inputs of the platform's node patches, which separates what the SDK charges
for our resources' shape from what our components and validation add. Each size is timed
`--repeats` times, floors and platform interleaved, and the median is reported. Peak memory is
tracemalloc's peak (Python allocations only) in a separate, untimed pass, since tracemalloc slows
Python down.

    python benchmarks/plan_scale.py [--quick] [--repeats N] [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pulumi_kubernetes as k8s

from mlstack.stacks import offline, program
from mlstack.stacks.stackfile import PROJECT, StackFile

#: target resources -> (teams, node pools: one CPU pool, the rest GPU pools); nodes per pool are
#: derived from the target with a measured `ResourceModel`.
SIZES: dict[int, tuple[int, int]] = {100: (4, 4), 1000: (10, 10), 2000: (20, 20), 3000: (30, 30)}
GPUS_PER_NODE = 8
REGISTRY_HOST = "harbor.bench.internal"
#: Each team has a GPU quota on this many pools (round-robin), as a lab would hand them out.
POOLS_PER_TEAM = 3
#: What a GPU node patch of the platform carries, for the shaped floor.
SHAPED_LABELS = {
    "mlstack.dev/pool": "gpu-000",
    "mlstack.dev/pool-kind": "gpu",
    "mlstack.dev/accelerator": "h100-80gb",
    "lab.internal/rack": "r0",
}
SHAPED_TAINT: k8s.core.v1.TaintPatchArgsDict = {
    "key": "nvidia.com/gpu",
    "value": "present",
    "effect": "NoSchedule",
}


#: team name, names of the GPU pools it has quota on -> extra Kubernetes objects of the team
#: (`platform.extra_manifests`); plan_scale declares none, check_scale a few workloads.
TeamWorkloads = Callable[[str, Sequence[str]], list[dict[str, Any]]]


def synthetic_platform(
    teams: int, pools: int, nodes_per_pool: int, workloads: TeamWorkloads | None = None
) -> dict[str, Any]:
    """A valid on-prem `mlstack:platform` value: `pools` node pools (one CPU pool, `pools - 1`
    GPU pools) of `nodes_per_pool` nodes each, and `teams` teams, each with a GPU quota on up to
    `POOLS_PER_TEAM` GPU pools (round-robin) and, given `workloads`, its extra objects."""
    cpu_nodes = [f"cpu-{j:04d}" for j in range(nodes_per_pool)]
    node_pools: list[dict[str, Any]] = [
        {"name": "cpu", "kind": "cpu", "max_nodes": len(cpu_nodes), "nodes": cpu_nodes}
    ]
    for i in range(pools - 1):
        nodes = [f"gpu{i:03d}-{j:04d}" for j in range(nodes_per_pool)]
        node_pools.append(
            {
                "name": f"gpu-{i:03d}",
                "kind": "gpu",
                "accelerator": "h100-80gb",
                "gpus_per_node": GPUS_PER_NODE,
                "max_nodes": len(nodes),
                "nodes": nodes,
                "labels": {"lab.internal/rack": f"r{i % 8}"},
            }
        )
    gpu_names = [p["name"] for p in node_pools[1:]]
    # A pool's max GPUs is nodes x GPUs per node; each team's share stays below it.
    share = max(1, nodes_per_pool * GPUS_PER_NODE // max(1, teams))
    team_list: list[dict[str, Any]] = []
    extra: list[dict[str, Any]] = []
    for t in range(teams):
        name = f"team-{t:03d}"
        quota_pools = [
            gpu_names[(t + k) % len(gpu_names)] for k in range(min(POOLS_PER_TEAM, len(gpu_names)))
        ]
        team_list.append(
            {
                "name": name,
                "groups": [f"lab-team-{t:03d}"],
                "quota": {
                    "gpus": dict.fromkeys(quota_pools, share),
                    "cpu": 32,
                    "memory_gib": 256,
                },
            }
        )
        if workloads is not None:
            extra += workloads(name, quota_pools)
    platform: dict[str, Any] = {
        "cloud": "onprem",
        "environment": "dev",
        "cluster": {"name": "bench", "kubernetes_version": "1.33"},
        "onprem": {
            "kubeconfig_path": "~/.kube/bench.yaml",
            "storage_endpoint": "https://minio.bench.internal:9000",
            "registry_host": REGISTRY_HOST,
        },
        "node_pools": node_pools,
        "storage": {"bucket_prefix": "bench-ml"},
        "teams": team_list,
    }
    if extra:
        platform["extra_manifests"] = extra
    return platform


@dataclass(frozen=True)
class ResourceModel:
    """What a synthetic platform's plan records: fixed + per team x teams + per pool x pools
    + per node x pools x nodes per pool."""

    fixed: int
    per_team: int
    per_pool: int
    per_node: int

    def count(self, teams: int, pools: int, nodes_per_pool: int) -> int:
        return (
            self.fixed
            + self.per_team * teams
            + self.per_pool * pools
            + self.per_node * pools * nodes_per_pool
        )

    def nodes_for(self, target: int, teams: int, pools: int) -> int:
        """Nodes per pool that bring a teams x pools platform closest to `target` resources."""
        rest = target - self.count(teams, pools, 0)
        return max(1, round(rest / (self.per_node * pools)))


#: The tiny platforms `resource_model` plans: (teams, pools, nodes per pool).
_PROBE_BASE, _PROBE_TEAM, _PROBE_POOL, _PROBE_NODE = (1, 2, 1), (2, 2, 1), (1, 3, 1), (1, 2, 2)


@cache
def resource_model(workloads: TeamWorkloads | None = None) -> ResourceModel:
    """The model measured: four tiny plans, each one team, pool or node per pool larger than
    the first, so the differences are what a team, a pool and a node add."""

    def planned(shape: tuple[int, int, int]) -> int:
        return plan_platform("bench-model", synthetic_platform(*shape, workloads=workloads))

    base = planned(_PROBE_BASE)
    teams, pools, nodes = _PROBE_BASE
    per_team = planned(_PROBE_TEAM) - base
    per_node, remainder = divmod(planned(_PROBE_NODE) - base, pools)
    assert remainder == 0, "every pool gains the same resources per node"
    per_pool = planned(_PROBE_POOL) - base - per_node * nodes
    fixed = base - per_team * teams - per_pool * pools - per_node * pools * nodes
    return ResourceModel(fixed, per_team, per_pool, per_node)


def platform_for(
    target: int, workloads: TeamWorkloads | None = None
) -> tuple[int, int, dict[str, Any]]:
    """(teams, nodes per pool, config) for about `target` plan resources."""
    teams, pools = SIZES[target]
    nodes = resource_model(workloads).nodes_for(target, teams, pools)
    return teams, nodes, synthetic_platform(teams, pools, nodes, workloads)


def plan_platform(name: str, cfg: dict[str, Any]) -> int:
    stack = StackFile(
        name=name, path=Path(f"Pulumi.{name}.yaml"), config={f"{PROJECT}:platform": cfg}
    )
    return len(offline.run_plan(stack).resources)


def plan_floor(count: int, shaped: bool = False) -> int:
    """The SDK floor: `count` flat resources (no components, default provider) through the same
    offline machinery. Plain ConfigMaps, or with `shaped` NodePatches with the inputs the
    platform's node patches carry (four labels, one taint)."""

    def trivial() -> None:
        for i in range(count):
            if shaped:
                k8s.core.v1.NodePatch(
                    f"np-{i}",
                    metadata={"name": f"node-{i}", "labels": SHAPED_LABELS},
                    spec=k8s.core.v1.NodeSpecPatchArgsDict(taints=[SHAPED_TAINT]),
                )
            else:
                k8s.core.v1.ConfigMap(
                    f"cm-{i}",
                    metadata=k8s.meta.v1.ObjectMetaArgs(name=f"cm-{i}", namespace="default"),
                    data={"key": "value"},
                )

    real_main = program.main
    program.main = trivial
    try:
        resources, _ = offline.run_program("floor", {}, [])
    finally:
        program.main = real_main
    return len(resources)


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    gc.collect()
    start = time.perf_counter()
    n = fn()
    return time.perf_counter() - start, n


def peak_mib(fn: Callable[[], int]) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


@dataclass
class Row:
    target: int
    teams: int
    pools: int
    nodes_per_pool: int
    resources: int
    predicted: int  # the resource model's count, checked against `resources`
    plan_s: float
    ms_per_resource: float
    floor_ms_per_resource: float
    ratio: float
    shaped_floor_ms_per_resource: float
    shaped_ratio: float
    peak_mib: float
    floor_peak_mib: float


def measure(target: int, repeats: int) -> Row:
    teams, nodes, cfg = platform_for(target)
    name = f"bench-{target}"
    count = plan_platform(name, cfg)  # warm-up; also the resource count the floors match
    predicted = resource_model().count(teams, SIZES[target][1], nodes)
    assert count == predicted, f"the plan recorded {count} resources, the model says {predicted}"
    runs: dict[str, Callable[[], int]] = {
        "floor": lambda: plan_floor(count),
        "shaped": lambda: plan_floor(count, shaped=True),
        "platform": lambda: plan_platform(name, cfg),
    }
    times: dict[str, list[float]] = {key: [] for key in runs}
    for key, run in runs.items():
        if key != "platform":
            run()  # warm-up
    for _ in range(repeats):
        for key, run in runs.items():
            seconds, n = timed(run)
            assert n == count, f"{key} recorded {n} resources, the platform {count}"
            times[key].append(seconds)
    plan_s, floor_s, shaped_s = (
        statistics.median(times[k]) for k in ("platform", "floor", "shaped")
    )
    return Row(
        target=target,
        teams=teams,
        pools=SIZES[target][1],
        nodes_per_pool=nodes,
        resources=count,
        predicted=predicted,
        plan_s=plan_s,
        ms_per_resource=1000 * plan_s / count,
        floor_ms_per_resource=1000 * floor_s / count,
        ratio=plan_s / floor_s,
        shaped_floor_ms_per_resource=1000 * shaped_s / count,
        shaped_ratio=plan_s / shaped_s,
        peak_mib=peak_mib(runs["platform"]),
        floor_peak_mib=peak_mib(runs["floor"]),
    )


def report(rows: list[Row], repeats: int) -> None:
    print(f"offline plan scale: median of {repeats} runs, floors and platform interleaved;")
    print("floor = plain ConfigMaps, shaped floor = NodePatches with the platform's inputs,")
    print("both flat, same count; peak MiB = tracemalloc peak of one untimed run\n")
    header = ("target", "resources", "plan s", "ms/res", "floor ms/res", "ratio")
    header += ("shaped floor ms/res", "shaped ratio", "peak MiB (floor)")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" for _ in header) + "|")
    for r in rows:
        cells = (
            f"{r.target:,}",
            f"{r.resources:,}",
            f"{r.plan_s:.2f}",
            f"{r.ms_per_resource:.2f}",
            f"{r.floor_ms_per_resource:.2f}",
            f"{r.ratio:.2f}x",
            f"{r.shaped_floor_ms_per_resource:.2f}",
            f"{r.shaped_ratio:.2f}x",
            f"{r.peak_mib:.1f} ({r.floor_peak_mib:.1f})",
        )
        print("| " + " | ".join(cells) + " |")
    by_target = {r.target: r for r in rows}
    if 1000 in by_target and 3000 in by_target:
        small, big = by_target[1000], by_target[3000]
        print(
            f"\nlinearity: {big.ms_per_resource:.2f} ms/resource at {big.resources:,} vs "
            f"{small.ms_per_resource:.2f} at {small.resources:,} "
            f"({big.ms_per_resource / small.ms_per_resource:.2f}x; 1.00 is linear; floor "
            f"{big.floor_ms_per_resource / small.floor_ms_per_resource:.2f}x)"
        )
    if 2000 in by_target:
        print(f"2000-resource platform: {by_target[2000].plan_s:.2f} s (goal < 10 s)")
    worst = max(rows, key=lambda r: r.ratio)
    print(f"worst ratio to the floor: {worst.ratio:.2f}x at {worst.target:,} (goal <= 1.2x)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke run: ~100 resources only")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per size (median)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    targets = [100] if args.quick else sorted(SIZES)
    rows = [measure(target, args.repeats) for target in targets]
    report(rows, args.repeats)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
