"""Entry point of the serving workload: `python -m mlstack.workloads.serve.main [flags]`.

Serves the newest bundle under the model URL (`--model-url`, default $MLSTACK_MODEL_URL), the
version pinned by `--model-version` (default $MLSTACK_MODEL_VERSION), or the version a registry
alias names (`--model-alias`, default $MLSTACK_MODEL_ALIAS; followed when it moves), on
`--host`:`--port`.
Logs one JSON line per event on stdout: listening, loaded, warmed (with seconds), ready,
reloaded, load_failed, draining, drained, stopped. Bad input ends with one `error:` line and
exit code 2; SIGTERM drains and exits 0; SIGHUP checks for a newer bundle.
"""

from __future__ import annotations

import argparse
import sys

from mlstack.workloads.contract import (
    MODEL_ALIAS,
    MODEL_URL,
    MODEL_VERSION,
    ContractError,
    read_environment,
)
from mlstack.workloads.serve.http_limits import HttpLimits
from mlstack.workloads.serve.server import DEFAULT_DRAIN_TIMEOUT_S, ServeOptions, run
from mlstack.workloads.storage import StoreError, open_store
from mlstack.workloads.train.export import VERSION_NAME

EXIT_BAD_INPUT = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mlstack.workloads.serve.main",
        description="Serve completions from the newest exported bundle, with continuous batching.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free one)")
    parser.add_argument("--model-url", default=None, help=f"bundles' URL (default ${MODEL_URL})")
    parser.add_argument(
        "--model-version",
        default=None,
        help=f"serve only this version (default ${MODEL_VERSION}; unset: follow latest)",
    )
    parser.add_argument(
        "--model-alias",
        default=None,
        help=f"serve the version this registry alias names, and follow it when it moves "
        f"(default ${MODEL_ALIAS}; exclusive with --model-version)",
    )
    parser.add_argument("--max-batch", type=int, default=32, help="1 turns batching off")
    parser.add_argument("--max-queue", type=int, default=256, help="waiting requests; then 429")
    parser.add_argument("--reload-interval-s", type=float, default=60.0)
    parser.add_argument(
        "--max-tokens-limit",
        type=int,
        default=256,
        help="the most tokens one request may ask for (at most the context less one)",
    )
    parser.add_argument(
        "--length-buckets",
        default=None,
        help="prompt length buckets, e.g. 16,64 (default: 16, 32, ... up to the context)",
    )
    parser.add_argument("--compile-cache", default=None, help="persistent compilation cache dir")
    parser.add_argument("--compile-threads", type=int, default=2)
    parser.add_argument("--max-body-bytes", type=int, default=64 * 1024)
    parser.add_argument("--drain-timeout-s", type=float, default=DEFAULT_DRAIN_TIMEOUT_S)
    limits = HttpLimits()
    parser.add_argument(
        "--max-header-line-bytes",
        type=int,
        default=limits.max_header_line_bytes,
        help="the most bytes in one header line; then 431",
    )
    parser.add_argument(
        "--max-header-bytes",
        type=int,
        default=limits.max_header_bytes,
        help="the most bytes in a request line and its headers; then 431",
    )
    parser.add_argument(
        "--max-headers", type=int, default=limits.max_headers, help="headers per request; then 431"
    )
    parser.add_argument(
        "--header-timeout-s",
        type=float,
        default=limits.header_timeout_s,
        help="seconds to send a request's headers; then 408 (slow clients hold no connection)",
    )
    return parser.parse_args(argv)


def _at_least(value: float, minimum: float, flag: str) -> None:
    if value < minimum:
        raise ValueError(f"{flag} {value:g} must be at least {minimum:g}; fix: raise it")


def _buckets(raw: str | None) -> tuple[int, ...] | None:
    if raw is None:
        return None
    try:
        values = tuple(int(part) for part in raw.split(","))
    except ValueError:
        raise ValueError(
            f"--length-buckets {raw!r} is not a comma-separated list of integers; "
            "fix: write it like 16,64"
        ) from None
    if not values or min(values) < 1:
        raise ValueError(f"--length-buckets {raw!r} must be positive; fix: write it like 16,64")
    return values


def build_options(args: argparse.Namespace) -> ServeOptions:
    env = read_environment()
    url = args.model_url or env.model_url
    if not url:
        raise ValueError(f"no --model-url given and ${MODEL_URL} is not set; fix: set one")
    open_store(url)
    _at_least(args.max_batch, 1, "--max-batch")
    _at_least(args.max_queue, 1, "--max-queue")
    _at_least(args.max_tokens_limit, 1, "--max-tokens-limit")
    _at_least(args.compile_threads, 1, "--compile-threads")
    _at_least(args.max_body_bytes, 1024, "--max-body-bytes")
    _at_least(args.reload_interval_s, 0.1, "--reload-interval-s")
    _at_least(args.drain_timeout_s, 0, "--drain-timeout-s")
    _at_least(args.max_header_line_bytes, 256, "--max-header-line-bytes")
    _at_least(args.max_header_bytes, args.max_header_line_bytes, "--max-header-bytes")
    _at_least(args.max_headers, 1, "--max-headers")
    _at_least(args.header_timeout_s, 0.1, "--header-timeout-s")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port} is not a TCP port; fix: use 0 to 65535")
    version = args.model_version or env.model_version
    alias = args.model_alias or env.model_alias
    if version and alias:
        raise ValueError(
            f"both a version ({version!r}: --model-version or ${MODEL_VERSION}) and an alias "
            f"({alias!r}: --model-alias or ${MODEL_ALIAS}) to serve; fix: set only one"
        )
    if alias and not VERSION_NAME.fullmatch(alias):
        raise ValueError(
            f"--model-alias {alias!r} is not an alias name; fix: use letters, digits, '.', '_' "
            "or '-', starting with a letter or digit (e.g. champion)"
        )
    return ServeOptions(
        model_url=url,
        model_version=version,
        model_alias=alias,
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        reload_interval_s=args.reload_interval_s,
        max_tokens_limit=args.max_tokens_limit,
        length_buckets=_buckets(args.length_buckets),
        compile_cache_dir=args.compile_cache,
        compile_threads=args.compile_threads,
        max_body_bytes=args.max_body_bytes,
        drain_timeout_s=args.drain_timeout_s,
        max_header_line_bytes=args.max_header_line_bytes,
        max_header_bytes=args.max_header_bytes,
        max_headers=args.max_headers,
        header_timeout_s=args.header_timeout_s,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        options = build_options(args)
    except (ValueError, ContractError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return run(options)
    except OSError as exc:
        print(f"error: cannot listen on {options.host}:{options.port}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
