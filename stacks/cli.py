"""The `mlstack` command line: plan, render and list stacks, all offline."""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer
from rich.console import Console

from mlstack.stacks.errors import ConfigError, mask_credentials
from mlstack.stacks.parse import parse_platform
from mlstack.stacks.stackfile import read_stack, shipped_stacks
from mlstack.stacks.versions import support_warning

# The offline plan, its report and the policy pack load Pulumi and the provider SDKs (seconds):
# each command imports them when it runs, so that `--help` and usage errors answer at once
# (tests/stacks/test_cli_startup.py checks which modules `--help` loads).
if TYPE_CHECKING:
    from mlstack.stacks.plan import Plan
    from mlstack.workloads.local import LocalRun
    from mlstack.workloads.pipeline.spec import Pipeline
    from mlstack.workloads.registry import Registry

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="mlstack: a typed ML platform on AWS, GCP or on-prem Kubernetes, planned offline.",
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)
T = TypeVar("T")

#: Today's date, for the Kubernetes support warning of `mlstack plan` (tests set their own).
today: Callable[[], datetime.date] = datetime.date.today

StackArg = Annotated[str, typer.Argument(help="A stack name in stacks/ or a stack file path.")]
StacksArg = Annotated[
    list[str] | None,
    typer.Argument(help="Stack names or files; default: every stack in stacks/."),
]


def _guard(action: Callable[[], T], bad_input: tuple[type[Exception], ...] = (ConfigError,)) -> T:
    """Bad input is one line per problem and exit 2; a bug is one line and exit 1."""
    try:
        return action()
    except bad_input as exc:
        for line in str(exc).splitlines():
            err.print(f"error: {line}", markup=False)
        raise typer.Exit(2) from None
    except Exception as exc:
        if os.environ.get("MLSTACK_DEBUG"):
            raise
        err.print(
            f"internal error: {type(exc).__name__}: {mask_credentials(str(exc))} (rerun with "
            "MLSTACK_DEBUG=1 for the "
            "traceback, and report it)",
            markup=False,
        )
        raise typer.Exit(1) from None


def _fail(message: str) -> typer.Exit:
    """One `error:` line on stderr; the exit (code 2: the user's input) for the caller to raise."""
    err.print(f"error: {message}", markup=False)
    return typer.Exit(2)


def _check_destination(flag: str, path: Path | None) -> None:
    """Refuse an output file that cannot be written before any work is done (a plan of a large
    stack takes seconds, and `check`'s exit code 1 means a policy violation, not a bad path)."""
    if path is None or str(path) == "-":
        return
    fix = "fix: name a file in an existing directory you can write to"
    if path.is_dir():
        raise _fail(f"{flag} {path} is a directory; {fix}")
    if not path.parent.is_dir():
        raise _fail(f"{flag} {path}: {path.parent} is not an existing directory; {fix}")
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        raise _fail(f"{flag} {path} is not writable; {fix}")


def _write_output(flag: str, path: Path, text: str) -> None:
    """Write an output file; what `_check_destination` cannot foresee (a full disk, a
    permission it could not see) is still one line and exit 2."""
    try:
        path.write_text(text)
    except OSError as exc:
        raise _fail(
            f"cannot write {flag} {path}: {exc.strerror or exc}; fix: name a file in an "
            "existing directory you can write to"
        ) from None


def _run_plan(ref: str) -> Plan:
    """Read, parse and plan one stack. The fields are parsed before the offline plan's modules
    load Pulumi and the SDKs (seconds), so that a typo in a stack file is reported at once;
    `run_plan` parses them again (milliseconds) with its cross-field checks."""
    stack = read_stack(ref)
    parse_platform(stack.platform, source=str(stack.path))
    from mlstack.stacks.offline import run_plan

    return run_plan(stack)


def _plan(ref: str) -> Plan:
    return _guard(lambda: _run_plan(ref))


def _plan_or_refusal(ref: str) -> Plan | ConfigError:
    """The stack's plan, or the ConfigError that refused it (for `check` to report)."""
    try:
        return _run_plan(ref)
    except ConfigError as exc:
        return exc


@app.command()
def plan(
    stacks: StacksArg = None,
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
    _check_destination("--json", json_file)
    for ref in refs:
        result = _plan(ref)
        if json_file is not None:
            text = json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n"
            if str(json_file) == "-":
                sys.stdout.write(text)
                continue
            _write_output("--json", json_file, text)
            err.print(f"wrote {len(result.resources)} resources to {json_file}", markup=False)
        from mlstack.stacks.report import print_plan

        print_plan(result, out)
        cluster = result.platform.cluster
        warning = support_warning(result.platform.cloud, cluster.kubernetes_version, today())
        if warning is not None:
            out.print(f"warning: {result.stack}: {warning}", markup=False, soft_wrap=True)


@app.command()
def render(
    stack: StackArg,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to FILE instead of stdout.")
    ] = None,
) -> None:
    """Write the stack's Kubernetes objects as YAML for `kubectl apply`."""
    from mlstack.stacks.render import render_yaml

    _check_destination("--output", output)
    text = render_yaml(_plan(stack))
    if output is None:
        sys.stdout.write(text)
    else:
        _write_output("--output", output, text)
        err.print(f"wrote {output}", markup=False)


@app.command()
def check(
    stacks: StacksArg = None,
    json_file: Annotated[
        Path | None,
        typer.Option("--json", help="Write the results as JSON to FILE ('-': stdout)."),
    ] = None,
    policy_config: Annotated[
        Path | None,
        typer.Option(
            "--policy-config",
            help="Rule levels and settings, as for pulumi --policy-pack-config.",
        ),
    ] = None,
    list_rules: Annotated[
        bool, typer.Option("--list", help="List the pack's rules and exit.")
    ] = False,
) -> None:
    """Plan each stack offline and run the policy pack on it; exit 1 on a mandatory violation."""
    from mlstack.policies.check import PolicyConfigError, check_plan, load_policy_config
    from mlstack.policies.rules import ALL_POLICIES
    from mlstack.stacks.report import StackCheck, print_check, print_rules

    if list_rules:
        print_rules(ALL_POLICIES, out)
        return
    _check_destination("--json", json_file)
    try:
        config = load_policy_config(policy_config) if policy_config is not None else {}
    except PolicyConfigError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None
    results: list[StackCheck] = []
    #: Stacks refused before planning: their problems, for the JSON report.
    refused: list[dict[str, Any]] = []
    for ref in stacks or shipped_stacks():
        started = time.perf_counter()
        try:
            planned = _guard(lambda ref=ref: _plan_or_refusal(ref))
        except typer.Exit:
            refused.append({"stack": ref, "errors": [{"path": "", "line": "internal error"}]})
            continue
        if isinstance(planned, ConfigError):
            for line in str(planned).splitlines():
                err.print(f"error: {line}", markup=False)
            errors = [{"path": p.path, "line": str(p)} for p in planned.problems]
            refused.append({"stack": ref, "errors": errors})
            continue
        plan_seconds = time.perf_counter() - started
        results.append(StackCheck(check_plan(planned, config=config), plan_seconds))
    if str(json_file) != "-":
        # The table first: should the JSON file still fail to be written, the results are shown.
        print_check(results, len(ALL_POLICIES), out)
    if json_file is not None:
        report = {
            "rules": [p.name for p in ALL_POLICIES],
            "stacks": [r.to_json() for r in results],
            "refused": refused,
        }
        text = json.dumps(report, indent=2) + "\n"
        if str(json_file) == "-":
            sys.stdout.write(text)
        else:
            _write_output("--json", json_file, text)
    if refused:
        raise typer.Exit(2)
    if any(r.report.mandatory for r in results):
        raise typer.Exit(1)


@app.command("stacks")
def list_stacks() -> None:
    """List the stacks shipped in stacks/."""
    for name in shipped_stacks():
        out.print(name)


def _need_workloads(*more: str) -> None:
    """The workload commands need the `workloads` extra (JAX, numpy; the server's web stack
    for `local up`): say what is missing in one line."""
    import importlib.util

    needed = ("numpy", "jax", "flax", "optax", "orbax", *more)
    missing = [name for name in needed if not importlib.util.find_spec(name)]
    if missing:
        err.print(
            f"error: the workloads need {', '.join(missing)}, which this environment lacks; fix: "
            "pip install -e '.[workloads]' (or pip install 'mlstack[workloads]')",
            markup=False,
        )
        raise typer.Exit(2)


data_app = typer.Typer(
    no_args_is_help=True, help="Training datasets: token shards and their index in a store."
)
app.add_typer(data_app, name="data")


@data_app.command("prepare")
def data_prepare(
    src: Annotated[
        str,
        typer.Argument(
            help="A directory of text files, or `stdlib`: the Python standard library's source "
            "(write ./stdlib for a directory of that name)."
        ),
    ],
    dest: Annotated[
        str,
        typer.Argument(
            help="Where the dataset goes: file:///abs/dir, s3://bucket/prefix, "
            "gs://bucket/prefix, or a local directory."
        ),
    ],
    shard_tokens: Annotated[
        int | None,
        typer.Option("--shard-tokens", help="Tokens per shard; default 4194304 (8 MiB)."),
    ] = None,
    pattern: Annotated[
        str | None,
        typer.Option("--pattern", help="Glob on file names; default *.py for stdlib, else *."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a dataset already at DEST.")
    ] = False,
) -> None:
    """Tokenize text files into fixed-size byte-token shards plus index.json at DEST."""
    _need_workloads()
    from mlstack.workloads.storage import StoreError
    from mlstack.workloads.train.data import (
        DEFAULT_SHARD_TOKENS,
        Corpus,
        DataError,
        PrepareProgress,
        default_corpus,
        describe_skipped,
        prepare_dataset,
    )

    if src == "stdlib":
        corpus = default_corpus()
        corpus = Corpus(corpus.root, pattern or corpus.pattern, corpus.name)
    else:
        corpus = Corpus(Path(src).expanduser(), pattern or "*")
    url = dest if "://" in dest else Path(dest).expanduser().resolve().as_uri()
    started = time.perf_counter()
    last_report = started

    def report(at: PrepareProgress) -> None:
        nonlocal last_report
        now = time.perf_counter()
        if at.files_done == 1:
            err.print(f"tokenizing {at.files_total} files under {corpus.root}", markup=False)
        elif now - last_report >= 1.0:
            last_report = now
            err.print(
                f"files {at.files_done}/{at.files_total}, {at.tokens:,} tokens, "
                f"{at.shards_uploaded} shards uploaded",
                markup=False,
            )

    index = _guard(
        lambda: prepare_dataset(
            corpus,
            url,
            shard_tokens=DEFAULT_SHARD_TOKENS if shard_tokens is None else shard_tokens,
            overwrite=overwrite,
            progress=report,
        ),
        bad_input=(ConfigError, StoreError, DataError),
    )
    skipped = describe_skipped(index)
    out.print(
        f"prepared {url}: {len(index.shards)} shards, {index.total_tokens:,} tokens, "
        f"{index.documents:,} documents, {index.num_bytes:,} bytes in "
        f"{time.perf_counter() - started:.1f} s" + (f" (skipped {skipped})" if skipped else ""),
        markup=False,
        soft_wrap=True,
    )


models_app = typer.Typer(
    no_args_is_help=True,
    help="The model registry in a store: versions, their evals and lineage, aliases (champion, "
    "canary) and the log of every promotion.",
)
app.add_typer(models_app, name="models")

ModelsUrlArg = Annotated[
    str,
    typer.Argument(
        help="The team's models prefix: file:///abs/dir, s3://bucket/prefix, gs://bucket/prefix, "
        "or a local directory."
    ),
]
ModelArg = Annotated[str, typer.Argument(help="A model under STORE_URL (its directory name).")]
AliasOpt = Annotated[str, typer.Option("--alias", help="The alias to move, e.g. champion.")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why, for the promotion log.")]


def _models_call(action: Callable[[], T]) -> T:
    """Bad input or a corrupt registry file is one line and exit 2; a lost race is one line
    naming the winner and exit 1."""
    from mlstack.workloads.registry import AliasRaced, RegistryError
    from mlstack.workloads.storage import StoreError

    raced: list[AliasRaced] = []

    def attempt() -> T | None:
        try:
            return action()
        except AliasRaced as exc:
            raced.append(exc)
            return None

    result = _guard(attempt, bad_input=(StoreError, RegistryError))
    if raced:
        err.print(f"error: {raced[0]}", markup=False, soft_wrap=True)
        raise typer.Exit(1)
    return cast("T", result)


def _open_model(store_url: str, model: str) -> Registry:
    from mlstack.workloads.registry import Registry, RegistryError
    from mlstack.workloads.storage import open_store

    root = _store_url(store_url).rstrip("/")
    if any(part in ("", ".", "..") for part in model.split("/")):
        raise RegistryError(
            f"model {model!r} is not a directory name under {root}; fix: name a model as "
            "`mlstack models list` shows it"
        )
    registry = Registry(open_store(f"{root}/{model}"))
    if not registry.store.list(""):
        raise RegistryError(
            f"no model {model!r} under {root} (nothing at {registry.store.url()}); fix: name one "
            f"that `mlstack models list {store_url}` shows"
        )
    return registry


def _metrics_text(metrics: dict[str, float]) -> str:
    return " ".join(f"{name}={value:.4g}" for name, value in metrics.items()) or "-"


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        out.print("  ".join(cells).rstrip(), markup=False, soft_wrap=True)


@models_app.command("list")
def models_list(
    store_url: ModelsUrlArg,
    model: Annotated[
        str | None, typer.Argument(help="A model: list its versions instead of the models.")
    ] = None,
    last: Annotated[
        int,
        typer.Option(
            "--last",
            min=0,
            help="With MODEL: only the last N versions by name (run ids and steps sort by "
            "time); 0 for all. Each shown version costs two small reads.",
        ),
    ] = 0,
) -> None:
    """Without MODEL: each model, its version count and aliases. With MODEL: one line per
    version (created, step, eval metrics, the aliases on it)."""

    def models() -> list[tuple[str, ...]]:
        from mlstack.workloads.registry import version_counts

        rows = [("MODEL", "VERSIONS", "ALIASES")]
        for name, count in version_counts(_store_url(store_url).rstrip("/")).items():
            found = _open_model(store_url, name).aliases().values()
            rows.append((name, str(count), " ".join(f"{a.name}={a.version}" for a in found) or "-"))
        return rows

    def versions(name: str) -> list[tuple[str, ...]]:
        rows = [("VERSION", "CREATED", "STEP", "METRICS", "ALIASES")]
        for info in _open_model(store_url, name).versions(last=last):
            step = "-" if info.step is None else str(info.step)
            metrics = _metrics_text(info.metrics())
            rows.append(
                (info.name, info.created or "-", step, metrics, ",".join(info.aliases) or "-")
            )
        return rows

    rows = _models_call(lambda: models() if model is None else versions(model))
    if len(rows) == 1:
        what = "models" if model is None else "versions"
        out.print(
            f"no {what} under {_store_url(store_url)}" + (f"/{model}" if model else ""),
            markup=False,
            soft_wrap=True,
        )
        return
    _table(rows)


@models_app.command("show")
def models_show(
    store_url: ModelsUrlArg,
    model: ModelArg,
    version: Annotated[
        str | None,
        typer.Option(
            "--version", help="The version to show; default: champion's, else the newest."
        ),
    ] = None,
) -> None:
    """A model's aliases, one version's lineage and evals, and the promotion log."""

    def lines() -> list[str]:
        registry = _open_model(store_url, model)
        aliases = registry.aliases()
        shown = [f"model {registry.store.url()}", "aliases:"]
        shown += [
            f"  {a.name} -> {a.version} (revision {a.revision}, by {a.by} at {a.updated}"
            + (f": {a.reason})" if a.reason else ")")
            for a in aliases.values()
        ] or ["  (none)"]
        names = registry.version_names()
        champion = aliases.get("champion")
        pick = version or (champion.version if champion else names[-1] if names else None)
        if pick is not None:
            info = registry.version(pick)
            step = "-" if info.step is None else info.step
            on = f" ({', '.join(info.aliases)})" if info.aliases else ""
            shown.append(f"version {info.name}{on}: created {info.created or '-'}, step {step}")
            lineage = info.lineage or {}
            shown.append("  lineage:" + ("" if lineage else " (none)"))
            shown += [f"    {key}: {json.dumps(value)}" for key, value in lineage.items()]
            shown.append("  evals: " + _metrics_text(info.metrics()))
        shown.append("promotions:")
        shown += [
            f"  {p.at}  {p.action} {p.alias}: {p.from_version or '(none)'} -> {p.to_version} by "
            f"{p.by}, {p.outcome}"
            + (f" (winner {p.winner.get('version')} by {p.winner.get('by')})" if p.winner else "")
            + (f": {p.reason}" if p.reason else "")
            for p in registry.log()
        ] or ["  (none)"]
        return shown

    for line in _models_call(lines):
        out.print(line, markup=False, soft_wrap=True)


@models_app.command("promote")
def models_promote(  # noqa: PLR0917 - a typer command: its options are its parameters
    store_url: ModelsUrlArg,
    model: ModelArg,
    version: Annotated[str, typer.Argument(help="The version the alias is to name.")],
    alias: AliasOpt,
    expect: Annotated[
        str | None,
        typer.Option(
            "--expect",
            help="The version the alias must name now (`none`: it must not exist yet); "
            "refused, naming who moved it, when it names another.",
        ),
    ] = None,
    reason: ReasonOpt = "",
) -> None:
    """Move an alias to a version by compare-and-swap, and log the attempt."""
    from mlstack.workloads.registry import MISSING

    wanted = MISSING if expect is None else None if expect == "none" else expect
    moved = _models_call(
        lambda: _open_model(store_url, model).move_alias(
            alias, version, expect=wanted, reason=reason
        )
    )
    out.print(
        f"{alias} -> {moved.version} (revision {moved.revision}, by {moved.by})",
        markup=False,
        soft_wrap=True,
    )


@models_app.command("rollback")
def models_rollback(
    store_url: ModelsUrlArg, model: ModelArg, alias: AliasOpt, reason: ReasonOpt = ""
) -> None:
    """Move an alias back to the version it named before its last move (from the log)."""
    moved = _models_call(lambda: _open_model(store_url, model).rollback(alias, reason=reason))
    out.print(
        f"{alias} -> {moved.version} (rolled back; revision {moved.revision}, by {moved.by})",
        markup=False,
        soft_wrap=True,
    )


local_app = typer.Typer(
    no_args_is_help=True,
    help="Run the workloads on this machine: same entry points and environment contract as on "
    "the cluster.",
)
app.add_typer(local_app, name="local")

DEFAULT_LOCAL_STORE = ".mlstack/store"


def _store_url(store: str) -> str:
    return store if "://" in store else Path(store).expanduser().resolve().as_uri()


def _check_processes(config: str, global_batch: int, processes: int) -> None:
    """Each local process has one CPU device, and the global batch splits evenly over the
    devices: refuse a count that does not divide it before any process starts."""
    if global_batch % processes:
        works = [n for n in range(1, global_batch + 1) if global_batch % n == 0]
        raise ValueError(
            f"-n {processes} does not divide {config}'s global batch of {global_batch} (one "
            f"device per local process); fix: use -n {', '.join(map(str, works))}"
        )


def _check_up_args(port: int, prompt: str, max_tokens: int, processes: int) -> None:
    """What `local up` would only find out after training: a port already taken, a request
    that does not fit tiny's context (the server's rule, `protocol.check_fits`)."""
    from mlstack.workloads.serve.server import bind
    from mlstack.workloads.train.configs import get_config
    from mlstack.workloads.train.data import encode

    tiny = get_config("tiny")
    _check_processes("tiny", tiny.global_batch_size, processes)
    if port:
        try:
            bind("127.0.0.1", port).close()
        except OSError as exc:
            raise ValueError(
                f"--port {port} on 127.0.0.1 cannot be used ({exc.strerror or exc}); fix: "
                "stop what listens there, pick another port, or pass --port 0 for a free one"
            ) from None
    prompt_tokens = int(encode(prompt).size)
    context = tiny.model.seq_len
    if not prompt_tokens or prompt_tokens + max_tokens > context:
        raise ValueError(
            f"--prompt is {prompt_tokens} tokens and --max-tokens {max_tokens}: together at most "
            f"{context} (tiny's context) fit, with at least one prompt token; fix: shorten the "
            "prompt or lower --max-tokens"
        )


def _compile_cache_dir(store_url: str) -> str | None:
    """XLA's compile cache beside a local store; none for an object store (a path made from
    an s3:// URL would be a `./s3:` folder in the current directory)."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(store_url)
    if parts.scheme != "file":
        return None
    return str(Path(unquote(parts.path)) / "xla-cache")


def _show_event(event: dict[str, Any]) -> None:
    """One human line per training event of process 0."""
    kind = event.get("event")
    if kind == "start":
        resume = event.get("resume_from")
        out.print(
            f"training {event['config']} ({event['params']:,} parameters) on "
            f"{event['processes']} process(es), {event['devices']} device(s), to step "
            f"{event['steps']}" + (f", resuming from step {resume}" if resume else ""),
            markup=False,
            soft_wrap=True,
        )
    elif kind == "compiled":
        out.print(
            f"compiled the train step in {event['seconds']:.1f} s", markup=False, soft_wrap=True
        )
    elif kind == "train":
        out.print(
            f"step {event['step']:>6}  loss {event['loss']:.4f}  "
            f"{event['tokens_per_s']:>10,.0f} tokens/s",
            markup=False,
            soft_wrap=True,
        )
    elif kind == "checkpoint":
        out.print(f"checkpoint at step {event['step']}", markup=False, soft_wrap=True)
    elif kind in ("export", "preempted", "done", "restored"):
        details = ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("event", "time"))
        out.print(f"{kind}: {details}", markup=False, soft_wrap=True)


@local_app.command("train")
def local_train(  # noqa: PLR0917 - a typer command: its options are its parameters
    config: Annotated[str, typer.Argument(help="Model config: tiny, small or medium.")] = "tiny",
    processes: Annotated[
        int, typer.Option("--processes", "-n", min=1, max=64, help="JAX processes to start.")
    ] = 2,
    steps: Annotated[int | None, typer.Option("--steps", min=1, help="Train to this step.")] = None,
    store: Annotated[
        str,
        typer.Option(
            "--store",
            help="Object store for data, checkpoints and bundles: a directory, file:///abs, or "
            "s3://bucket/prefix (MLSTACK_S3_ENDPOINT for S3-compatible stores).",
        ),
    ] = DEFAULT_LOCAL_STORE,
    run: Annotated[
        str, typer.Option("--run", help="Run name: checkpoints and bundles go under it.")
    ] = "run",
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", min=1)] = 50,
    log_every: Annotated[int, typer.Option("--log-every", min=1)] = 10,
) -> None:
    """Train with N local processes; resumes the run from its newest committed checkpoint.

    Ctrl-C stops every process the way a preemption does: they save one agreed step first.
    """
    _need_workloads()
    from mlstack.workloads.local import Launch, LocalRun, ensure_dataset, guarded, run_until_done
    from mlstack.workloads.storage import StoreError
    from mlstack.workloads.train.configs import get_config
    from mlstack.workloads.train.data import DataError

    def start() -> Launch:
        _check_processes(config, get_config(config).global_batch_size, processes)
        local = LocalRun(_store_url(store), run=run)
        ensure_dataset(local, lambda line: err.print(line, markup=False))
        args = ["--config", config, "--checkpoint-every", str(checkpoint_every)]
        args += ["--log-every", str(log_every)] + (["--steps", str(steps)] if steps else [])
        err.print(
            f"starting {processes} process(es); checkpoints in {local.checkpoint_url}",
            markup=False,
        )
        return Launch(
            local,
            processes,
            args,
            on_event=_show_event,
            on_line=lambda index, line: err.print(f"[p{index}] {line}", markup=False),
        )

    launch = _guard(start, bad_input=(ConfigError, StoreError, DataError, ValueError))
    result = run_until_done(launch)
    if result.failure is not None:
        guarded(err.print)(f"error: {result.failure}", markup=False)
    if result.returncode:
        raise typer.Exit(result.returncode)


@local_app.command("up")
def local_up(  # noqa: PLR0917 - a typer command: its options are its parameters
    store: Annotated[
        str, typer.Option("--store", help="Local object store: a directory or file:///abs.")
    ] = DEFAULT_LOCAL_STORE,
    processes: Annotated[
        int, typer.Option("--processes", "-n", min=1, max=8, help="Training processes.")
    ] = 2,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Training steps of tiny.")] = 300,
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="0: a free port.")] = 0,
    prompt: Annotated[str, typer.Option("--prompt", help="The request sent once it serves.")] = (
        "def main("
    ),
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", min=1, help="Tokens to generate (tiny's context: 64).")
    ] = 40,
    once: Annotated[
        bool, typer.Option("--once", help="Exit after the first request instead of serving.")
    ] = False,
) -> None:
    """The whole stack on this machine: a local store, the default corpus, `tiny` trained with
    N processes, its bundle served on 127.0.0.1, and one request answered."""
    _need_workloads("starlette", "uvicorn", "prometheus_client")
    from mlstack.workloads.local import Launch, LocalRun, ensure_dataset, guarded, run_until_done
    from mlstack.workloads.storage import StoreError
    from mlstack.workloads.train.data import DataError

    _guard(lambda: _check_up_args(port, prompt, max_tokens, processes), bad_input=(ValueError,))
    local = LocalRun(_store_url(store), run="local-up")

    def say(text: str) -> None:
        out.print(text, markup=False, soft_wrap=True)

    say(f"== data: {local.data_url}")
    _guard(lambda: ensure_dataset(local, say), bad_input=(ConfigError, StoreError, DataError))
    say(f"== training tiny with {processes} process(es) to step {steps}")
    args = ["--config", "tiny", "--steps", str(steps), "--log-every", "50"]
    trained = run_until_done(
        Launch(
            local,
            processes,
            [*args, "--checkpoint-every", "100"],
            on_event=_show_event,
            on_line=lambda index, line: err.print(f"[p{index}] {line}", markup=False),
        )
    )
    if trained.returncode:
        guarded(err.print)(
            f"error: {trained.failure or 'training stopped'}; fix: see the lines above, then "
            "run again (it resumes from the last checkpoint)",
            markup=False,
        )
        raise typer.Exit(trained.returncode)
    say(f"== serving {local.model_url} (compiling and warming up every batch and length bucket)")
    with _server_scratch() as scratch, _stop_signals_interrupt():
        _serve(local, port, prompt, max_tokens, once=once, scratch=scratch)


@local_app.command("pipeline")
def local_pipeline(  # noqa: PLR0917 - a typer command: its options are its parameters
    stack: StackArg,
    name: Annotated[str, typer.Argument(help="A pipeline in the stack's workloads.pipelines.")],
    store: Annotated[
        str, typer.Option("--store", help="Local object store: a directory, file:///abs or s3://.")
    ] = DEFAULT_LOCAL_STORE,
    run: Annotated[
        str | None,
        typer.Option("--run", help="Run id to start or resume; default: the newest unfinished."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Model config for every train step (e.g. tiny)."),
    ] = None,
    steps: Annotated[
        int | None, typer.Option("--steps", min=1, help="Training steps of every train step.")
    ] = None,
    processes: Annotated[
        int, typer.Option("--processes", "-n", min=1, max=64, help="Processes per train step.")
    ] = 2,
) -> None:
    """Run a stack's pipeline on this machine, each step as local processes with the cluster's
    environment contract; a rerun resumes an unfinished run and skips cached steps.

    Ctrl-C stops the running steps (training saves a checkpoint first); run again to resume.
    """
    _need_workloads()
    from mlstack.workloads.local import guarded
    from mlstack.workloads.pipeline.engine import RunStateError, new_run_id, run_pipeline
    from mlstack.workloads.pipeline.local import LocalExecutor, summary
    from mlstack.workloads.pipeline.spec import SpecError
    from mlstack.workloads.storage import StoreError
    from mlstack.workloads.train.data import DataError

    bad_input = (ConfigError, StoreError, DataError, SpecError, RunStateError, ValueError)
    pipeline = _guard(
        lambda: _local_pipeline_spec(
            stack, name, _store_url(store), model=model, steps=steps, processes=processes
        ),
        bad_input=bad_input,
    )
    run_id = _guard(lambda: run or _unfinished_or_new(pipeline, new_run_id), bad_input=bad_input)

    @guarded
    def say(line: str) -> None:
        out.print(line, markup=False, soft_wrap=True)

    executor = LocalExecutor()
    stop = threading.Event()
    signals: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        # Writes nothing: a closed terminal or pipe cannot break it.
        if signals:
            executor.kill()
        stop.set()
        signals.append(signum)

    say(f"run {run_id} of pipeline {pipeline.name} in {pipeline.work_url}/runs/{run_id}")
    previous = {
        s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    try:
        state = _guard(
            lambda: run_pipeline(pipeline, executor, run_id=run_id, say=say, stop=stop),
            bad_input=bad_input,
        )
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    for line in summary(pipeline, state):
        say(line)
    if signals:
        raise typer.Exit(128 + signals[0])
    if state.status != "succeeded":
        for step_name, step in state.steps.items():
            if step.status == "failed":
                guarded(err.print)(
                    f"error: step {step_name} failed: {step.error}; fix: see its log, then run "
                    f"again with --run {run_id} to resume",
                    markup=False,
                )
        raise typer.Exit(1)


def _local_pipeline_spec(
    stack: str, name: str, store_url: str, *, model: str | None, steps: int | None, processes: int
) -> Pipeline:
    """The stack's pipeline with the local store's URLs and the local overrides; the source
    datasets the default corpus can provide are prepared first, as `local up` does."""
    from mlstack.stacks.pipelines import runtime_pipeline
    from mlstack.workloads.local import DEFAULT_DATASET, LocalRun, ensure_dataset, join_url
    from mlstack.workloads.pipeline.local import localize
    from mlstack.workloads.train.configs import get_config

    source = read_stack(stack)
    platform = parse_platform(source.platform, source=str(source.path))
    declared = runtime_pipeline(
        platform,
        name,
        datasets_url=join_url(store_url, "datasets"),
        checkpoints_url=join_url(store_url, "checkpoints"),
        models_url=join_url(store_url, "models"),
        image="local",
    )
    pipeline = localize(declared, model=model, steps=steps, processes=processes)
    for step in pipeline.steps:
        if step.kind == "train":
            config = get_config(str(step.config["model"]))
            batch = step.config.get("global_batch_size") or config.global_batch_size
            _check_processes(config.name, int(batch), processes)
        if step.kind == "prepare" and step.config.get("dataset") == DEFAULT_DATASET:
            local = LocalRun(store_url, dataset=DEFAULT_DATASET)
            ensure_dataset(local, lambda line: err.print(line, markup=False))
    return pipeline


def _unfinished_or_new(pipeline: Pipeline, new_run_id: Callable[[], str]) -> str:
    from mlstack.workloads.pipeline.local import unfinished_run

    return unfinished_run(pipeline) or new_run_id()


@contextmanager
def _server_scratch() -> Iterator[Path]:
    """The model server's TMPDIR, removed once it has stopped (it stages bundles there)."""
    scratch = Path(tempfile.mkdtemp(prefix="mlstack-local-up-"))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP (the terminal closing) interrupt like Ctrl-C, so that `finally`
    stops the server: their default action would end this process and leave it running."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _serve(
    local: LocalRun, port: int, prompt: str, max_tokens: int, *, once: bool, scratch: Path
) -> None:
    """Serve `local`'s bundle, answer one request, then serve until stopped (`local up`)."""
    from mlstack.workloads.local import complete, guarded
    from mlstack.workloads.serve.server import ServeOptions, ServerProcess

    def say(text: str) -> None:
        out.print(text, markup=False, soft_wrap=True)

    server = ServerProcess(
        ServeOptions(
            model_url=local.model_url,
            port=port,
            # Up to 8 requests a batch: 36 executables for tiny, compiled in about 8 s on 2 CPUs,
            # and cached under the store for the next start.
            max_batch=8,
            compile_cache_dir=_compile_cache_dir(local.store_url),
        ),
        # Its output reader must outlive a closed terminal or pipe.
        on_event=guarded(lambda event: say(_server_line(event))),
        on_line=guarded(lambda line: err.print(f"[server] {line}", markup=False)),
        env={"JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"), "TMPDIR": str(scratch)},
    )
    try:
        server.wait_ready(timeout_s=600)
        answer = complete(server.url, prompt, max_tokens=max_tokens, temperature=0.8, seed=0)
        say(f"== request: POST {server.url}/v1/completions prompt={prompt!r}")
        say(prompt + answer["choices"][0]["text"])
        say(
            f"== serving model {answer['model']} at {server.url} "
            f"(POST /v1/completions, GET /readyz, GET /metrics, GET /openapi.json)"
        )
        if once:
            return
        say(
            "try: curl -s "
            f"{server.url}/v1/completions -H 'Content-Type: application/json' "
            """-d '{"prompt": "import ", "max_tokens": 48}'"""
        )
        say("stop it with Ctrl-C (it drains the requests in flight first)")
        signal_wait(server.proc)
    except (RuntimeError, TimeoutError) as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(1) from None
    finally:
        server.stop()


def _server_line(event: dict[str, Any]) -> str:
    """One human line per event of the model server."""
    kind = event.get("event")
    if kind == "compiled" and "executable" in event:
        return (
            f"server warm-up {event['done']}/{event['total']}: {event['executable']} "
            f"({event['seconds']:.1f} s)"
        )
    if kind == "warmed":
        return f"server warmed up every bucket in {event['seconds']:.1f} s"
    details = ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("event", "time", "model"))
    return f"server {kind}: {details}"


def signal_wait(proc: subprocess.Popen[str]) -> None:
    """Wait for a child in the foreground until it exits or Ctrl-C / SIGTERM / SIGHUP arrives."""
    stop = threading.Event()
    previous = {
        s: signal.signal(s, lambda signum, frame: stop.set())
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    try:
        while not stop.is_set() and proc.poll() is None:
            stop.wait(0.5)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main() -> None:
    # The mock engine logs the program's pulumi.log messages through the root logger.
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING)
    app()
