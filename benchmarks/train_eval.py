"""Evaluation overhead: the full training loop with in-run evaluation against the same loop
without it, alternating in one run.

Both runs train on the train split of the same corpus (`split_dataset`, 5% held out); the eval
run adds `--eval-every` (default 50) with `--eval-batches` (default 8) on the test split.
Steps/s is taken from each run's own `train` events between the first and the last logged
step, so start-up and the final save, evaluation and export are outside both; the evaluations
inside that window are counted. Each evaluation's own cost is the time from the `train` event
of its step (logged just before it) to its `eval` event; the one-off set-up at start-up (eval
batches read and placed, eval step compiled: the `eval_ready` event) and each run's wall time
are reported too. Goal: with eval >= 0.95x without.

    python benchmarks/train_eval.py [--steps 400] [--repeats 3] [--source DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import atexit
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jax

from mlstack.workloads.train.configs import get_config
from mlstack.workloads.train.data import Corpus, default_corpus, prepare_dataset, split_dataset
from mlstack.workloads.train.metrics import MetricsLog
from mlstack.workloads.train.train import RunOptions, train_and_evaluate


def measure(opts: RunOptions) -> tuple[float, list[float], float, float]:
    """(steady-state steps/s, seconds of each evaluation inside the window, seconds of the
    eval set-up at start-up, wall seconds of the whole run)."""
    stream = io.StringIO()
    clock = time.perf_counter()
    train_and_evaluate(opts, MetricsLog(enabled=True, stream=stream))
    wall = time.perf_counter() - clock
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    setup = sum(e["seconds"] for e in events if e["event"] == "eval_ready")
    train = [e for e in events if e["event"] == "train"]
    first, last = train[0], train[-1]
    logged = {e["step"]: e["time"] for e in train}
    evals = [
        e["time"] - logged[e["step"]]
        for e in events
        if e["event"] == "eval" and first["step"] < e["step"] < last["step"]
    ]
    return (last["step"] - first["step"]) / (last["time"] - first["time"]), evals, setup, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--eval-batches", type=int, default=8)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--source", default=None, help="a directory of text (default: stdlib)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    cfg = get_config(args.config)
    root = Path(tempfile.mkdtemp(prefix="mlstack-eval-bench-"))
    # The datasets, splits and checkpoints go with the benchmark, however it ends.
    atexit.register(shutil.rmtree, root, True)
    base = root.as_uri()
    corpus = default_corpus() if args.source is None else Corpus(Path(args.source))
    prepare_dataset(corpus, f"{base}/datasets/source")
    train_url, test_url = f"{base}/split/train", f"{base}/split/test"
    split_dataset(f"{base}/datasets/source", train_url, test_url, test_fraction=0.05)
    rates: dict[str, list[float]] = {"without": [], "with": []}
    eval_seconds: list[float] = []
    setups: list[float] = []
    walls: dict[str, list[float]] = {"without": [], "with": []}
    evals_in_window = 0
    for repeat in range(args.repeats):
        for mode in ("without", "with"):
            opts = RunOptions(
                config=cfg,
                steps=args.steps,
                data_url=train_url,
                checkpoint_url=f"{base}/checkpoints/{mode}{repeat}",
                model_url=None,
                workdir=root / f"work-{mode}{repeat}",
                log_every=args.log_every,
                eval_data_url=test_url if mode == "with" else None,
                eval_every=args.eval_every if mode == "with" else 0,
                eval_batches=args.eval_batches,
            )
            rate, evals, setup, wall = measure(opts)
            rates[mode].append(rate)
            walls[mode].append(wall)
            if mode == "with":
                evals_in_window = len(evals)
                eval_seconds += evals
                setups.append(setup)
            print(f"repeat {repeat}: {mode} eval {rate:.1f} steps/s", flush=True)
    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}",
        "device_kind": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "config": cfg.name,
        "steps": args.steps,
        "eval_every": args.eval_every,
        "eval_batches": args.eval_batches,
        "evals_in_window": evals_in_window,
        "without_steps_per_s": [round(x, 2) for x in rates["without"]],
        "with_steps_per_s": [round(x, 2) for x in rates["with"]],
        "eval_setup_s": [round(x, 3) for x in setups],
        "eval_s_median": round(statistics.median(eval_seconds), 4) if eval_seconds else None,
        "without_wall_s": [round(x, 2) for x in walls["without"]],
        "with_wall_s": [round(x, 2) for x in walls["with"]],
        "ratio": round(statistics.median(rates["with"]) / statistics.median(rates["without"]), 3),
    }
    print(json.dumps(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
