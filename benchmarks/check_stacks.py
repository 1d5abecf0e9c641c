"""How long `mlstack check` of every shipped stack takes, as a user runs it (a new process:
start-up, validation, the offline plan and the policy pack), optionally against another
checkout in the same run.

With `--other DIR` (a checkout with its own `.venv`, e.g. the commit before a change), the two
trees run alternately, the order flipping each round, so that the machine's drift hits both
alike; the ratio of the medians is the result (this tree / the other). Each run must exit 0.

    .venv/bin/python benchmarks/check_stacks.py [--other DIR] [--repeats 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def time_check(tree: Path) -> float:
    """Seconds of one `mlstack check` run in `tree`; a failing run stops the benchmark."""
    start = time.perf_counter()
    proc = subprocess.run(
        [str(tree / ".venv" / "bin" / "mlstack"), "check"],
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env={**os.environ, "MLSTACK_PROJECT_DIR": str(tree)},
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"error: mlstack check failed in {tree}: {proc.stderr.strip()[-500:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description="Time `mlstack check` of the shipped stacks.")
    parser.add_argument("--other", type=Path, help="another checkout with its own .venv")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    trees = {"this": ROOT}
    if args.other is not None:
        other = args.other.resolve()
        if not (other / ".venv" / "bin" / "mlstack").is_file():
            print(
                f"error: {other} has no .venv/bin/mlstack; fix: install it there", file=sys.stderr
            )
            return 2
        trees["other"] = other
    runs: dict[str, list[float]] = {name: [] for name in trees}
    for i in range(args.repeats):
        order = list(trees) if i % 2 == 0 else list(reversed(trees))
        for name in order:
            runs[name].append(time_check(trees[name]))
    medians = {name: statistics.median(times) for name, times in runs.items()}
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}",
        "load_average": os.getloadavg(),
        "repeats": args.repeats,
        "seconds": {name: [round(t, 2) for t in times] for name, times in runs.items()},
        "median_s": {name: round(m, 2) for name, m in medians.items()},
    }
    if "other" in medians:
        report["ratio"] = round(medians["this"] / medians["other"], 3)
    print(json.dumps(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
