"""Harness overhead: the full training loop against a bare jitted step loop, in one run.

- Bare: `Trainer.train_step` on one fixed batch, `--steps` times, one device sync at the end.
- Full: `train_and_evaluate` on the same model and batch size with everything on: batches from
  the object store through the prefetching loader (a `file://` store: the checkpoint benchmark
  measures S3 transfers), an asynchronous checkpoint every `--checkpoint-every` steps (host
  copy, orbax write, upload, COMMIT) and a JSON metrics line every `--log-every` steps.

Full-loop steps/s is taken from its own metric events, between the first logged step after
compilation and the last one, so start-up (init, compile, restore) and the final save and
export are outside both timings. The two loops alternate `--repeats` times and the medians are
compared; the goal is full >= 0.9x bare.

    python benchmarks/train_harness.py [--config tiny] [--steps 400] [--repeats 3] [--json FILE]
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
import numpy as np

from mlstack.workloads.train.configs import get_config
from mlstack.workloads.train.data import default_corpus, prepare_dataset
from mlstack.workloads.train.metrics import MetricsLog
from mlstack.workloads.train.train import RunOptions, Trainer, train_and_evaluate


def bare_steps_per_s(opts: RunOptions) -> float:
    trainer = Trainer(opts)
    cfg = opts.config
    state = trainer.init_state()
    tokens = np.random.default_rng(0).integers(
        0, 256, (cfg.global_batch_size, cfg.model.seq_len + 1), np.int32
    )
    batch = trainer.global_batch(tokens)
    state, metrics = trainer.train_step(state, batch)
    for _ in range(2):
        state, metrics = trainer.train_step(state, batch)
    float(metrics["loss"])
    start = time.perf_counter()
    for _ in range(opts.steps):
        state, metrics = trainer.train_step(state, batch)
    float(metrics["loss"])
    return opts.steps / (time.perf_counter() - start)


def full_steps_per_s(opts: RunOptions) -> tuple[float, int]:
    """Steady-state steps/s of the full loop from its own events, and checkpoints taken."""
    stream = io.StringIO()
    train_and_evaluate(opts, MetricsLog(enabled=True, stream=stream))
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    train = [e for e in events if e["event"] == "train"]
    first, last = train[0], train[-1]
    saves = [
        e for e in events if e["event"] == "checkpoint" and first["step"] < e["step"] < last["step"]
    ]
    return (last["step"] - first["step"]) / (last["time"] - first["time"]), len(saves)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--global-batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    cfg = get_config(args.config)
    if args.global_batch_size:
        cfg = cfg.with_overrides(global_batch_size=args.global_batch_size)
    root = Path(tempfile.mkdtemp(prefix="mlstack-harness-"))
    # The dataset and the runs' checkpoints go with the benchmark, however it ends.
    atexit.register(shutil.rmtree, root, True)
    base = root.as_uri()
    data_url = f"{base}/datasets/pystdlib"
    prepare_dataset(default_corpus(), data_url)
    bare: list[float] = []
    full: list[float] = []
    saves = 0
    for repeat in range(args.repeats):
        opts = RunOptions(
            config=cfg,
            steps=args.steps,
            data_url=data_url,
            checkpoint_url=f"{base}/checkpoints/r{repeat}",
            model_url=None,
            workdir=root / f"work{repeat}",
            checkpoint_every=args.checkpoint_every,
            log_every=args.log_every,
        )
        bare.append(bare_steps_per_s(opts))
        rate, saves = full_steps_per_s(opts)
        full.append(rate)
        print(f"repeat {repeat}: bare {bare[-1]:.1f} steps/s, full {rate:.1f} steps/s", flush=True)
    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}",
        "device_kind": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "config": cfg.name,
        "global_batch_size": cfg.global_batch_size,
        "steps": args.steps,
        "checkpoint_every": args.checkpoint_every,
        "checkpoints_in_window": saves,
        "log_every": args.log_every,
        "store": "file",
        "bare_steps_per_s": [round(x, 2) for x in bare],
        "full_steps_per_s": [round(x, 2) for x in full],
        "ratio": round(statistics.median(full) / statistics.median(bare), 3),
    }
    print(json.dumps(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
