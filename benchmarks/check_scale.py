"""How `mlstack check` splits its time: the offline plan vs the policy pack's rules.

Two parts, in one run:

- Shipped stacks (`stacks.stackfile.shipped_stacks()`), each timed the way `mlstack check`
  times it (stacks/cli.py): plan seconds are `read_stack` + `run_plan`, rule seconds are the
  `rule_seconds` that `policies.check.check_plan` reports (every rule of the pack, including
  turning the plan's inputs into the analyzer's props).
- Synthetic on-prem platforms of about 1,000, 2,000 and 3,000 resources, built by
  `plan_scale.synthetic_platform` and sized by its measured resource model, with workloads
  added so the pod and stack rules have work to do: per team a GPU training Job, a multi-host
  GPU JobSet, a CPU CronJob, a CPU model-server Deployment and its ClusterIP Service, all
  compliant (queue label, GPU toleration, images from the platform registry, non-root,
  no privilege escalation, requests and limits). Without them the pod rules would return at
  their first line for every resource.

Each stack and size is planned and checked `--repeats` times (plan, then check, `gc.collect()`
before each) and the medians are reported, with rule seconds / plan seconds. The goal (from the
issue): rules under 10% of plan time at 3,000 resources. Wall seconds are what `mlstack check`
prints; CPU seconds (`time.process_time`, all threads) are reported beside them because another
process on a small shared machine inflates wall time, and the plan (which runs longer) more
often. `--by-rule` adds, for the largest size, where the rule time goes: the cost of a run with
no rule and what the resource and the stack rules add (CPU, interleaved medians), then each
rule's share of a cProfile run and the hottest functions (see `Breakdown`).

    python benchmarks/check_scale.py [--quick] [--repeats N] [--by-rule] [--json FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from plan_scale import REGISTRY_HOST, SIZES, platform_for, resource_model
from pulumi_policy import StackValidationPolicy

from mlstack.policies.check import CheckReport, check_plan
from mlstack.policies.rules import ALL_POLICIES
from mlstack.stacks.names import (
    CHECKPOINTS_ANNOTATION,
    GPU_RESOURCE,
    GPU_TAINT_KEY,
    PRIORITY_LABEL,
    QUEUE_LABEL,
    SERVICE_ACCOUNT_NAME,
)
from mlstack.stacks.offline import run_plan
from mlstack.stacks.plan import Plan
from mlstack.stacks.stackfile import PROJECT, StackFile, read_stack, shipped_stacks

#: Synthetic sizes checked (plan_scale's ~100 is too small to say anything about the split).
TARGETS = (1000, 2000, 3000)
GOAL = 0.10  # rule seconds / plan seconds at 3,000 resources
ROOT = Path(__file__).resolve().parents[1]
REGISTRY = f"{REGISTRY_HOST}/ml"  # the platform registry: host / registry.name (default "ml")

_POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
_CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}
_GPU_TOLERATION = {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}


def _pod(
    labels: dict[str, str],
    container: str,
    image: str,
    cpu: str,
    memory: str,
    *,
    gpus: int = 0,
    **spec: Any,
) -> dict[str, Any]:
    """A compliant pod template: non-root, no escalation, requests and a memory limit."""
    resources: dict[str, Any] = {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"memory": memory},
    }
    if gpus:
        resources["requests"][GPU_RESOURCE] = str(gpus)
        resources["limits"][GPU_RESOURCE] = str(gpus)
    pod_spec: dict[str, Any] = {
        "serviceAccountName": SERVICE_ACCOUNT_NAME,
        "securityContext": _POD_SECURITY,
        "containers": [
            {
                "name": container,
                "image": image,
                "resources": resources,
                "securityContext": _CONTAINER_SECURITY,
            }
        ],
        **spec,
    }
    if gpus:
        pod_spec["tolerations"] = [_GPU_TOLERATION]
    return {"metadata": {"labels": labels}, "spec": pod_spec}


def team_workloads(team: str, _gpu_pools: Sequence[str]) -> list[dict[str, Any]]:
    """Five objects a team would run: GPU training (a Job and a multi-host JobSet through the
    team's queue), a nightly CPU evaluation CronJob, and a CPU model server with its Service."""
    # No nodeSelector on the GPU pools: Kueue picks the flavor (pool) at admission.
    queued = {QUEUE_LABEL: "default", PRIORITY_LABEL: "mlstack-training"}
    train_image = f"{REGISTRY}/train:1.4.2"
    serve_image = f"{REGISTRY}/serve:0.9.0"
    app = {"app.kubernetes.io/name": "model-server"}

    def meta(name: str, labels: dict[str, str], **extra: Any) -> dict[str, Any]:
        return {"name": name, "namespace": team, "labels": labels, **extra}

    return [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": meta("finetune", queued),
            "spec": {
                "suspend": True,
                "backoffLimit": 2,
                "template": _pod(
                    queued, "trainer", train_image, "16", "128Gi", gpus=8, restartPolicy="Never"
                ),
            },
        },
        {
            "apiVersion": "jobset.x-k8s.io/v1alpha2",
            "kind": "JobSet",
            "metadata": meta("pretrain", queued, annotations={CHECKPOINTS_ANNOTATION: "true"}),
            "spec": {
                "suspend": True,
                "replicatedJobs": [
                    {
                        "name": "workers",
                        "replicas": 1,
                        "template": {
                            "spec": {
                                "parallelism": 4,
                                "completions": 4,
                                "backoffLimit": 0,
                                "template": _pod(
                                    queued,
                                    "jax",
                                    train_image,
                                    "32",
                                    "256Gi",
                                    gpus=8,
                                    restartPolicy="Never",
                                ),
                            }
                        },
                    }
                ],
            },
        },
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": meta("nightly-eval", queued),
            "spec": {
                "schedule": "0 3 * * *",
                "concurrencyPolicy": "Forbid",
                # Without it a CronJob that missed 100 starts stops for good (rule
                # cronjobs-keep-starting).
                "startingDeadlineSeconds": 3600,
                "jobTemplate": {
                    "metadata": {"labels": queued},
                    "spec": {
                        "template": _pod(
                            queued, "eval", train_image, "4", "16Gi", restartPolicy="Never"
                        )
                    },
                },
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta("model-server", app),
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": app},
                "template": _pod(app, "server", serve_image, "2", "8Gi"),
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta("model-server", app),
            "spec": {
                "type": "ClusterIP",
                "selector": app,
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            },
        },
    ]


@dataclass
class Row:
    kind: str  # "shipped" or "synthetic"
    name: str  # the stack, or "~<target>"
    resources: int
    workloads: int  # workload objects the pod rules look into
    violations: int
    plan_s: float
    rule_s: float
    ratio: float  # rule_s / plan_s
    plan_cpu_s: float
    rule_cpu_s: float
    cpu_ratio: float  # rule_cpu_s / plan_cpu_s
    target: int | None = None
    teams: int | None = None
    pools: int | None = None
    nodes_per_pool: int | None = None


def _workload_count(plan: Plan) -> int:
    kinds = (":Job", ":JobSet", ":CronJob", ":Deployment", ":StatefulSet", ":DaemonSet", ":Pod")
    return sum(1 for r in plan.resources if r.type.endswith(kinds))


@dataclass
class Timing:
    """Medians over the repeats: wall seconds as `mlstack check` reports them, and the
    process's CPU seconds (all threads), which another process on the machine inflates less."""

    plan_s: float
    rule_s: float
    plan_cpu_s: float
    rule_cpu_s: float


def _timed_check(make_plan: Callable[[], Plan], repeats: int) -> tuple[Plan, CheckReport, Timing]:
    """Plan and check `repeats` times; the last plan and report, and the median times."""
    times: dict[str, list[float]] = {k: [] for k in ("plan", "rule", "plan_cpu", "rule_cpu")}
    plan: Plan | None = None
    report: CheckReport | None = None
    for _ in range(repeats):
        gc.collect()
        cpu, started = time.process_time(), time.perf_counter()
        plan = make_plan()
        times["plan"].append(time.perf_counter() - started)
        times["plan_cpu"].append(time.process_time() - cpu)
        gc.collect()
        cpu = time.process_time()
        report = check_plan(plan)
        times["rule_cpu"].append(time.process_time() - cpu)
        times["rule"].append(report.rule_seconds)
    assert plan is not None and report is not None
    median = {k: statistics.median(v) for k, v in times.items()}
    return plan, report, Timing(**{f"{k}_s": v for k, v in median.items()})


def _row(kind: str, name: str, plan: Plan, report: CheckReport, t: Timing) -> Row:
    return Row(
        kind=kind,
        name=name,
        resources=len(plan.resources),
        workloads=_workload_count(plan),
        violations=len(report.violations),
        plan_s=t.plan_s,
        rule_s=t.rule_s,
        ratio=t.rule_s / t.plan_s,
        plan_cpu_s=t.plan_cpu_s,
        rule_cpu_s=t.rule_cpu_s,
        cpu_ratio=t.rule_cpu_s / t.plan_cpu_s,
    )


def measure_shipped(name: str, repeats: int) -> Row:
    run_plan(read_stack(name))  # warm-up
    plan, report, t = _timed_check(lambda: run_plan(read_stack(name)), repeats)
    return _row("shipped", name, plan, report, t)


def synthetic_stack(target: int) -> tuple[int, int, StackFile]:
    teams, nodes, cfg = platform_for(target, team_workloads)
    name = f"bench-check-{target}"
    stack = StackFile(name, Path(f"Pulumi.{name}.yaml"), {f"{PROJECT}:platform": cfg})
    return teams, nodes, stack


def measure_synthetic(target: int, repeats: int) -> Row:
    teams, nodes, stack = synthetic_stack(target)
    pools = SIZES[target][1]
    predicted = resource_model(team_workloads).count(teams, pools, nodes)
    run_plan(stack)  # warm-up
    plan, report, t = _timed_check(lambda: run_plan(stack), repeats)
    assert len(plan.resources) == predicted, (len(plan.resources), predicted)
    row = _row("synthetic", f"~{target:,}", plan, report, t)
    row.target, row.teams, row.pools, row.nodes_per_pool = target, teams, pools, nodes
    return row


@dataclass
class Breakdown:
    """Where the rule time goes at one size (`--by-rule`).

    `parts`: median CPU seconds of `check_plan` with all rules, with none (the analyzer's
    props, options and providers), and what the resource rules and the stack rules each add
    (all rules minus all rules but those), the four runs interleaved so that drift cancels;
    and the seconds the garbage collector ran during one run with all rules.
    `rules`: each rule's share of one `check_plan` under cProfile (its function's cumulative
    time), and `hot`: the functions with the most internal time there. cProfile slows Python
    calls down unevenly, so shares, not seconds.
    """

    target: int
    parts: dict[str, float]
    rules: dict[str, float]
    hot: list[tuple[str, int, float]]  # (function, calls, share of the profiled run)
    #: mlstack's own functions (policies/, stacks/) by cumulative share, check_plan left out.
    ours: list[tuple[str, int, float]]


def _gc_seconds(action: Callable[[], object]) -> float:
    """Seconds the cyclic garbage collector runs during `action` (the process's thresholds)."""
    spent, started = [0.0], [0.0]

    def callback(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            spent[0] += time.perf_counter() - started[0]

    gc.collect()
    gc.callbacks.append(callback)
    try:
        action()
    finally:
        gc.callbacks.remove(callback)
    return spent[0]


def _rule_function(policy: Any) -> Any:
    """The function a rule was made from (pulumi_policy keeps it in a private field)."""
    for cls in type(policy).__mro__:
        fn = getattr(policy, f"_{cls.__name__}__validate", None)
        if fn is not None:
            return fn
    return None


def by_rule(target: int, repeats: int) -> Breakdown:
    _, _, stack = synthetic_stack(target)
    plan = run_plan(stack)
    stack_rules = [p for p in ALL_POLICIES if isinstance(p, StackValidationPolicy)]
    resource_rules = [p for p in ALL_POLICIES if not isinstance(p, StackValidationPolicy)]
    runs: dict[str, list[Any]] = {
        "all rules": list(ALL_POLICIES),
        "no rules": [],
        "stack rules only": stack_rules,
        "resource rules only": resource_rules,
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for key, policies in runs.items():
            gc.collect()
            cpu = time.process_time()
            check_plan(plan, policies)
            times[key].append(time.process_time() - cpu)
    m = {k: statistics.median(v) for k, v in times.items()}
    parts = {
        "all rules": m["all rules"],
        "no rules (props, options)": m["no rules"],
        "the resource rules add": m["all rules"] - m["stack rules only"],
        "the stack rules add": m["all rules"] - m["resource rules only"],
    }
    parts["garbage collection within (one run)"] = _gc_seconds(lambda: check_plan(plan))
    profiler = cProfile.Profile()
    gc.collect()
    profiler.enable()
    check_plan(plan)
    profiler.disable()
    stats: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = getattr(
        pstats.Stats(profiler), "stats", {}
    )
    total = sum(tt for _, _, tt, _, _ in stats.values())
    rules = {}
    for policy in ALL_POLICIES:
        fn = _rule_function(policy)
        code = getattr(fn, "__code__", None)
        if code is not None:
            entry = stats.get((code.co_filename, code.co_firstlineno, code.co_name))
            rules[policy.name] = entry[3] / total if entry else 0.0
    hot = sorted(stats.items(), key=lambda kv: -kv[1][2])[:10]
    ours = sorted(
        (
            (key, v)
            for key, v in stats.items()
            if _repo_path(key[0]).startswith(("policies/", "stacks/")) and key[2] != "check_plan"
        ),
        key=lambda kv: -kv[1][3],
    )[:12]
    return Breakdown(
        target,
        parts,
        rules,
        [(f"{_short(f)}:{line}({name})", v[1], v[2] / total) for (f, line, name), v in hot],
        [(f"{_short(f)}:{line}({name})", v[1], v[3] / total) for (f, line, name), v in ours],
    )


def _repo_path(filename: str) -> str:
    """A code object's file relative to the checkout ('' outside it). Modules load through the
    editable install's links, so the name is resolved first."""
    path = Path(filename).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else ""


def _short(filename: str) -> str:
    if _repo_path(filename):
        return _repo_path(filename)
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1]
    return Path(filename).name


def report(rows: list[Row], repeats: int, breakdown: Breakdown | None) -> None:
    print(f"mlstack check split: plan vs {len(ALL_POLICIES)} rules, median of {repeats} runs;")
    print("wall seconds as mlstack check reports them, CPU = the process's CPU seconds\n")
    header = ("stack", "resources", "workloads", "violations", "plan s", "rule s", "rule/plan")
    header += ("plan CPU s", "rule CPU s", "CPU rule/plan")
    print("| " + " | ".join(header) + " |")
    print("|---|" + "|".join("---:" for _ in header[1:]) + "|")
    for r in rows:
        shape = f" ({r.teams}x{r.pools}x{r.nodes_per_pool})" if r.kind == "synthetic" else ""
        cells = (
            f"{r.name}{shape}",
            f"{r.resources:,}",
            str(r.workloads),
            str(r.violations),
            f"{r.plan_s:.3f}",
            f"{r.rule_s:.3f}",
            f"{100 * r.ratio:.1f}%",
            f"{r.plan_cpu_s:.3f}",
            f"{r.rule_cpu_s:.3f}",
            f"{100 * r.cpu_ratio:.1f}%",
        )
        print("| " + " | ".join(cells) + " |")
    largest = max((r for r in rows if r.kind == "synthetic"), key=lambda r: r.resources)
    verdict = "not run (needs the ~3,000 size)"
    if largest.target == 3000:
        verdict = "met" if largest.ratio < GOAL else "NOT met"
    print(
        f"\nrules at {largest.resources:,} resources: {100 * largest.ratio:.1f}% of plan time "
        f"(CPU {100 * largest.cpu_ratio:.1f}%); goal < {100 * GOAL:.0f}% at ~3,000: {verdict}"
    )
    if breakdown is not None:
        total = breakdown.parts["all rules"]
        print(f"\nwhere the rule CPU time goes at ~{breakdown.target:,} (medians):")
        for name, seconds in breakdown.parts.items():
            print(f"  {seconds:7.3f} s  {100 * seconds / total:5.1f}%  {name}")
        print("each rule's share of one profiled check_plan (cProfile, cumulative):")
        for name, share in sorted(breakdown.rules.items(), key=lambda kv: -kv[1]):
            print(f"  {100 * share:5.1f}%  {name}")
        print("hottest functions there (internal time):")
        for name, calls, share in breakdown.hot:
            print(f"  {100 * share:5.1f}%  {calls:>9,} calls  {name}")
        print("mlstack's functions there (cumulative time):")
        for name, calls, share in breakdown.ours:
            print(f"  {100 * share:5.1f}%  {calls:>9,} calls  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: shipped stacks and ~1,000 only, 1 run"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per stack (median)")
    parser.add_argument("--by-rule", action="store_true", help="where rule time goes (largest)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    targets = TARGETS[:1] if args.quick else TARGETS
    rows = [measure_shipped(name, repeats) for name in shipped_stacks()]
    rows += [measure_synthetic(target, repeats) for target in targets]
    breakdown = by_rule(targets[-1], repeats) if args.by_rule else None
    report(rows, repeats, breakdown)
    if args.json:
        data: dict[str, Any] = {"repeats": repeats, "goal": GOAL, "rows": [asdict(r) for r in rows]}
        if breakdown is not None:
            data["by_rule"] = asdict(breakdown)
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
