"""The `mlstack` command line: plan, render and list stacks, all offline."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from stacks.errors import ConfigError
from stacks.offline import Plan, run_plan
from stacks.render import render_yaml
from stacks.report import print_plan
from stacks.stackfile import read_stack, shipped_stacks

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="mlstack: a typed ML platform on AWS, GCP or on-prem Kubernetes, planned offline.",
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)
T = TypeVar("T")

StackArg = Annotated[str, typer.Argument(help="A stack name in stacks/ or a stack file path.")]


def _guard(action: Callable[[], T]) -> T:
    """Bad input is one line per problem and exit 2; a bug is one line and exit 1."""
    try:
        return action()
    except ConfigError as exc:
        for line in str(exc).splitlines():
            err.print(f"error: {line}", markup=False)
        raise typer.Exit(2) from None
    except Exception as exc:
        if os.environ.get("MLSTACK_DEBUG"):
            raise
        err.print(
            f"internal error: {type(exc).__name__}: {exc} (rerun with MLSTACK_DEBUG=1 for the "
            "traceback, and report it)",
            markup=False,
        )
        raise typer.Exit(1) from None


def _plan(ref: str) -> Plan:
    return _guard(lambda: run_plan(read_stack(ref)))


@app.command()
def plan(
    stacks: Annotated[
        list[str] | None,
        typer.Argument(help="Stack names or files; default: every stack in stacks/."),
    ] = None,
    json_file: Annotated[
        Path | None,
        typer.Option("--json", help="Write the plan's resources as JSON to FILE ('-': stdout)."),
    ] = None,
) -> None:
    """Run the real program offline and show what it would deploy."""
    refs = stacks or shipped_stacks()
    if json_file is not None and len(refs) != 1:
        err.print("error: --json takes exactly one stack; name it", markup=False)
        raise typer.Exit(2)
    for ref in refs:
        result = _plan(ref)
        if json_file is not None:
            text = json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n"
            if str(json_file) == "-":
                sys.stdout.write(text)
                continue
            json_file.write_text(text)
            err.print(f"wrote {len(result.resources)} resources to {json_file}", markup=False)
        print_plan(result, out)


@app.command()
def render(
    stack: StackArg,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to FILE instead of stdout.")
    ] = None,
) -> None:
    """Write the stack's Kubernetes objects as YAML for `kubectl apply`."""
    text = render_yaml(_plan(stack))
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        err.print(f"wrote {output}", markup=False)


@app.command("stacks")
def list_stacks() -> None:
    """List the stacks shipped in stacks/."""
    for name in shipped_stacks():
        out.print(name)


def main() -> None:
    # The mock engine logs the program's pulumi.log messages through the root logger.
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING)
    app()
