"""What `mlstack plan` prints: the resource tree by component and type, and GPU capacity."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.table import Table
from rich.tree import Tree

from mlstack.components.backend import get_backend
from mlstack.components.features import Feature
from mlstack.stacks.capacity import pool_capacity, team_quotas
from mlstack.stacks.plan import Plan
from mlstack.stacks.schema import Platform, PoolKind

if TYPE_CHECKING:
    # Only `mlstack check` loads the policy pack; `mlstack plan` does not pay for it.
    from mlstack.policies.check import CheckReport, Policy

_SHOWN_NAMES = 4
#: Below this console width `mlstack check` lists violations as blocks, not a table.
_TABLE_MIN_WIDTH = 160


def resource_tree(plan: Plan) -> Tree:
    """Components nest; the plain resources under each are grouped by type with a count."""
    children = plan.by_parent()

    def fill(node: Tree, parent: str | None) -> None:
        kids = sorted(children.get(parent, ()), key=lambda r: (r.type, r.name))
        by_type: dict[str, list[str]] = defaultdict(list)
        for kid in kids:
            if kid.custom or kid.urn not in children:
                by_type[kid.type].append(kid.name)
        for kid in kids:
            if not kid.custom and kid.urn in children:
                fill(node.add(f"[bold]{kid.name}[/] [dim]{kid.type}[/]"), kid.urn)
        for type_, names in by_type.items():
            shown = ", ".join(names[:_SHOWN_NAMES])
            more = f", +{len(names) - _SHOWN_NAMES} more" if len(names) > _SHOWN_NAMES else ""
            node.add(f"[cyan]{type_}[/] x{len(names)}  [dim]{shown}{more}[/]")

    tree = Tree(
        f"[bold]stack {plan.stack}[/] ({plan.platform.cloud}, {len(plan.resources)} resources)"
    )
    fill(tree, None)
    return tree


def pools_table(platform: Platform) -> Table:
    """Every node pool as the cloud will run it: machine, capacity type, size range."""
    table = Table(title="Node pools", title_justify="left")
    for col in ("pool", "kind", "machine", "capacity", "nodes"):
        table.add_column(col, justify="right" if col == "nodes" else "left", no_wrap=True)
    # Pools a cloud does not scale are machines that exist already, with no machine type.
    scales = get_backend(platform.cloud).supports(Feature.AUTOSCALING)
    for p in platform.node_pools:
        machine = p.instance_type or ("-" if scales else "existing nodes")
        if p.kind is PoolKind.GPU:
            machine = f"{machine} ({p.gpus} x {p.accelerator})"
        low = p.max_nodes if p.min_nodes is None else p.min_nodes
        table.add_row(
            p.name,
            p.kind.value,
            machine,
            p.capacity.value,
            f"{low}-{p.max_nodes}" if low != p.max_nodes else str(p.max_nodes),
        )
    return table


def capacity_tables(plan: Plan) -> Group:
    pools = Table(title="GPU capacity per pool (at max scale)", title_justify="left")
    for col in ("pool", "GPU", "GPUs/node", "max nodes", "max GPUs", "quotas", "headroom"):
        pools.add_column(col, justify="left" if col in ("pool", "GPU") else "right", no_wrap=True)
    for c in pool_capacity(plan.platform):
        style = "red" if c.headroom < 0 else ""
        pools.add_row(
            c.pool,
            c.accelerator,
            str(c.gpus_per_node),
            str(c.max_nodes),
            str(c.max_gpus),
            str(c.quota_gpus),
            f"[{style}]{c.headroom}[/]" if style else str(c.headroom),
        )
    teams = Table(title="GPU quota per team", title_justify="left")
    for col in ("team", "pool", "GPUs", "share of pool"):
        teams.add_column(col, justify="left" if col in ("team", "pool") else "right")
    for q in team_quotas(plan.platform):
        teams.add_row(q.team, q.pool, str(q.gpus), f"{q.share:.0%}")
    return Group(pools_table(plan.platform), pools, teams)


def print_plan(plan: Plan, console: Console) -> None:
    console.print(resource_tree(plan))
    console.print()
    console.print(capacity_tables(plan))
    for note in plan.notes:
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True)


@dataclass(frozen=True)
class StackCheck:
    report: CheckReport
    plan_seconds: float

    def to_json(self) -> dict[str, Any]:
        return {**self.report.to_json(), "plan_seconds": round(self.plan_seconds, 4)}


def print_check(results: list[StackCheck], rules: int, console: Console) -> None:
    """One table of violations (stack, rule, resource, message), then a line per stack."""
    violations = [v for r in results for v in r.report.violations]
    if violations and console.width < _TABLE_MIN_WIDTH:
        # A five-column table at CI-log width leaves the message no room: one block each.
        console.print("[bold]Policy violations[/]")
        for v in violations:
            level = "[red]mandatory[/]" if v.enforcement == "mandatory" else "advisory"
            console.print(f"{level} [bold]{v.policy}[/] in stack {v.stack}", soft_wrap=True)
            console.print(f"  resource: {v.resource or '(stack)'}", soft_wrap=True, markup=False)
            console.print(f"  {v.message}", soft_wrap=True, markup=False)
    elif violations:
        table = Table(title="Policy violations", title_justify="left", show_lines=True)
        for col in ("stack", "rule", "level", "resource", "message"):
            table.add_column(col, overflow="fold", no_wrap=col != "message")
        for v in violations:
            level = "[red]mandatory[/]" if v.enforcement == "mandatory" else "advisory"
            table.add_row(v.stack, v.policy, level, v.resource or "(stack)", v.message)
        console.print(table)
    for r in results:
        rep = r.report
        status = (
            f"[red]{len(rep.mandatory)} mandatory[/], {len(rep.violations) - len(rep.mandatory)} "
            "advisory"
            if rep.violations
            else "[green]no violations[/]"
        )
        console.print(
            f"stack {rep.stack}: {rules} rules on {rep.resources} resources, {status} "
            f"[dim](plan {r.plan_seconds:.2f} s, rules {rep.rule_seconds:.3f} s)[/]"
        )
        for line in (*rep.diagnostics, *rep.not_applicable):
            console.print(f"  [yellow]note:[/] {line}", soft_wrap=True)


def print_rules(policies: Sequence[Policy], console: Console) -> None:
    """A line per rule: its name, what it checks (one resource or the stack), its level."""
    from pulumi_policy import StackValidationPolicy

    from mlstack.policies.check import PACK_ENFORCEMENT

    for p in policies:
        kind = "stack" if isinstance(p, StackValidationPolicy) else "resource"
        level = (p.enforcement_level or PACK_ENFORCEMENT).value
        console.print(
            f"[bold]{p.name}[/] [dim]({kind}, {level})[/] {p.description}", soft_wrap=True
        )
