"""Model registry operations on a model with many versions: on a directory and on moto's S3.

A model gets `--versions` versions (a bundle manifest and a test eval each), two aliases and a
promotion log; then, `--repeats` times each, medians reported:

- list: `Registry.versions()`, what `mlstack models list STORE MODEL` prints (one listing,
  then every manifest and eval read, in parallel), `versions(last=50)` (`--last 50`) and
  `version_names()` (the listing alone).
- models: `version_counts` on the team's prefix (one listing) plus each model's aliases, what
  `mlstack models list STORE` prints.
- promote: `move_alias(..., expect=<current>)`, compare-and-swap plus the log entry.

The S3 endpoint is moto's server on 127.0.0.1 in its own process (so its work does not share
this process's interpreter lock with the client measured). Goal: list and promote on 1,000
versions in under a second on a directory; S3 is measured.

    python benchmarks/registry_ops.py [--versions 1000] [--repeats 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlstack.workloads.registry import Registry, version_counts
from mlstack.workloads.storage import open_store

BUCKET = "bench-registry"
_SERVER = (
    "import sys, time\n"
    "from moto.server import ThreadedMotoServer\n"
    "server = ThreadedMotoServer(ip_address='127.0.0.1', port=int(sys.argv[1]), verbose=False)\n"
    "server.start()\n"
    "print('ready', flush=True)\n"
    "time.sleep(10**6)\n"
)


def populate(root_url: str, versions: int) -> Registry:
    """Model `lm` under `root_url` with `versions` versions, champion and canary, and a log."""
    store = open_store(f"{root_url}/lm")
    names = [f"20260101T000000Z-{i:04x}.small-a" for i in range(versions)]

    def add(i: int) -> None:
        manifest = {"created": f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z", "step": i}
        store.put_bytes(f"versions/{names[i]}/bundle.json", json.dumps(manifest).encode())
        evals = {"split": "test", "loss": 3.0 - i / versions, "perplexity": 20.0}
        store.put_bytes(f"versions/{names[i]}/evals/test.json", json.dumps(evals).encode())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(add, range(versions)))
    registry = Registry(store)
    registry.move_alias("champion", names[0], expect=None, by="bench")
    registry.move_alias("canary", names[1], expect=None, by="bench")
    return registry


def measure(root_url: str, versions: int, repeats: int) -> dict[str, Any]:
    registry = populate(root_url, versions)
    names = registry.version_names()

    def listing() -> None:
        assert len(registry.versions()) == versions

    def last_fifty() -> None:
        assert len(registry.versions(last=50)) == 50

    def names_only() -> None:
        assert len(registry.version_names()) == versions

    def models() -> None:
        for model, count in version_counts(root_url).items():
            assert count == versions
            Registry(open_store(f"{root_url}/{model}")).aliases()

    moves = iter(names[2:] * repeats)

    def promote() -> None:
        current = registry.alias("champion")
        assert current is not None
        registry.move_alias("champion", next(moves), expect=current.version, by="bench")

    ops: dict[str, Callable[[], None]] = {
        "list_versions": listing,
        "list_last_50": last_fifty,
        "version_names": names_only,
        "list_models": models,
        "promote": promote,
    }
    seconds = {name: [timed(op) for _ in range(repeats)] for name, op in ops.items()}
    return {
        "seconds": seconds,
        "median_s": {name: statistics.median(runs) for name, runs in seconds.items()},
        "log_entries": len(registry.log()),
    }


def timed(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--versions", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    report: dict[str, Any] = {
        "versions": args.versions,
        "repeats": args.repeats,
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    with tempfile.TemporaryDirectory(prefix="mlstack-registry-bench-") as scratch:
        report["directory"] = measure(Path(scratch).as_uri(), args.versions, args.repeats)

    for name, value in (
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ[name] = value
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        os.environ["MLSTACK_S3_ENDPOINT"] = f"http://127.0.0.1:{port}"
        import boto3

        boto3.client("s3", endpoint_url=os.environ["MLSTACK_S3_ENDPOINT"]).create_bucket(
            Bucket=BUCKET
        )
        report["s3_moto"] = measure(f"s3://{BUCKET}/models/team-a", args.versions, args.repeats)
    finally:
        server.kill()
        server.wait(timeout=30)

    print(json.dumps(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
