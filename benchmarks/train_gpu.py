"""Tokens/s and MFU of the `small` and `medium` configs on an accelerator, in bfloat16.

The real training step (`workloads.train.train.Trainer`: the model, AdamW, gradient clipping,
the (data, fsdp) mesh over every local device) on a fixed random batch of the config's global
batch size, so the number is the step's own, not the data pipeline's. Each config: compile
(timed), `--warmup` steps, then `--steps` timed steps ended by one device sync. MFU is the
model's training FLOPs per token (`ModelConfig.flops_per_token`) times tokens/s over the
devices' dense bf16 peak (`workloads.train.metrics.PEAK_TFLOPS`; MLSTACK_PEAK_TFLOPS overrides).

    python benchmarks/train_gpu.py [--configs small medium] [--steps 20] [--json FILE]

On a machine without an accelerator it says so and exits 0 unless `--allow-cpu` is given (the
test runs it on the CPU with the tiny config).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jax
import numpy as np

from mlstack.workloads.train.configs import get_config
from mlstack.workloads.train.model import param_count
from mlstack.workloads.train.train import RunOptions, Trainer


def measure(name: str, steps: int, warmup: int, batch: int | None, dtype: str) -> dict[str, Any]:
    overrides: dict[str, Any] = {"dtype": dtype}
    if batch:
        overrides["global_batch_size"] = batch
    cfg = get_config(name).with_overrides(**overrides)
    opts = RunOptions(
        config=cfg,
        steps=steps,
        data_url="unused://",
        checkpoint_url="unused://",
        model_url=None,
        workdir=Path("/tmp"),
    )
    trainer = Trainer(opts)
    state = trainer.init_state()
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 256, (cfg.global_batch_size, cfg.model.seq_len + 1), np.int32)
    batch_array = trainer.global_batch(tokens)
    t = time.perf_counter()
    state, metrics = trainer.train_step(state, batch_array)
    float(metrics["loss"])
    compile_s = time.perf_counter() - t
    for _ in range(warmup):
        state, metrics = trainer.train_step(state, batch_array)
    float(metrics["loss"])
    t = time.perf_counter()
    for _ in range(steps):
        state, metrics = trainer.train_step(state, batch_array)
    loss = float(metrics["loss"])
    elapsed = time.perf_counter() - t
    tokens_per_s = steps * trainer.tokens_per_step / elapsed
    return {
        "config": name,
        "dtype": dtype,
        "params": param_count(trainer.abstract["params"]),
        "global_batch_size": cfg.global_batch_size,
        "seq_len": cfg.model.seq_len,
        "compile_s": round(compile_s, 2),
        "step_time_s": round(elapsed / steps, 5),
        "tokens_per_s": round(tokens_per_s, 1),
        "mfu": trainer.mfu(tokens_per_s),
        "flops_per_token": cfg.model.flops_per_token(),
        "final_loss": round(loss, 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["small", "medium"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=None, help="global batch override")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--allow-cpu", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = jax.devices()[0]
    if device.platform == "cpu" and not args.allow_cpu:
        print("no accelerator on this machine: the GPU training benchmark did not run")
        return 0
    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "device_kind": device.device_kind,
        "devices": jax.device_count(),
        "jax": jax.__version__,
        "host": platform.node(),
        "rows": [],
    }
    for name in args.configs:
        row = measure(name, args.steps, args.warmup, args.batch, args.dtype)
        report["rows"].append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
