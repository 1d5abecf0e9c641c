"""Generation throughput of the serving engine on an accelerator: continuous batching at 1, 8
and 32 rows, in bfloat16.

The real engine path (`workloads.serve.generate`: every executable compiled ahead of time,
warmed up, then `Batch.admit` and `Batch.step` as the server's batcher calls them) with no HTTP
in front: `rows` closed-loop clients, each starting a new request (a 64-token random prompt,
`--max-tokens` new tokens, temperature 0.8, its own seed) as soon as its last one ends, for
`--seconds` per setting. Reported per setting: generated tokens/s, requests/s, the mean time
of a decode call and of one step (a token for every row); and the tokens/s of 32 rows over 1
row (batching on over off). Parameters are random (a bundle's would decode at the same speed).

    python benchmarks/serve_gpu.py [--configs small medium] [--seconds 10] [--json FILE]

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
from flax import nnx

from mlstack.workloads.serve.generate import Batch, Generator, Row, make_buckets
from mlstack.workloads.train.configs import get_config
from mlstack.workloads.train.model import init_model

PROMPT_TOKENS = 64
ROWS = (1, 8, 32)


def closed_loop(batch: Batch, rows: int, max_tokens: int, seconds: float) -> dict[str, float]:
    """`rows` clients for `seconds`: tokens/s, requests/s, mean call and step times."""
    rng = np.random.default_rng(rows)
    # A 64-token prompt, or half the context of a small model.
    prompt_tokens = min(PROMPT_TOKENS, batch.generator.cfg.seq_len // 2)
    max_tokens = min(max_tokens, batch.generator.cfg.seq_len - prompt_tokens)

    def _row(rng: np.random.Generator, max_tokens: int) -> Row:
        prompt = rng.integers(1, 256, prompt_tokens).astype(np.int32)
        return Row(prompt, max_tokens, 0.8, 0, int(rng.integers(0, 2**32)))

    batch.admit([_row(rng, max_tokens) for _ in range(rows)])
    tokens = requests = calls = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        ended = batch.step()
        calls += 1
        requests += len(ended)
        tokens += sum(len(t) for t in ended.values())
        if ended:
            batch.admit([_row(rng, max_tokens) for _ in ended])
    # Count the tokens of the rows still running: they were generated inside the window.
    running = sum(len(t) for t in batch.partial().values())
    while batch.active:
        batch.step()
    tokens += running
    return {
        "rows": rows,
        "seconds": round(elapsed, 3),
        "tokens_per_s": round(tokens / elapsed, 1),
        "requests_per_s": round(requests / elapsed, 2),
        "ms_per_call": round(1e3 * elapsed / calls, 3),
        "ms_per_step": round(1e3 * elapsed * rows / tokens, 3),
    }


def measure(name: str, seconds: float, max_tokens: int, dtype: str) -> dict[str, Any]:
    cfg = get_config(name).with_overrides(dtype=dtype).model
    buckets = make_buckets(
        cfg, max_batch=max(ROWS), max_new_tokens=max_tokens, length_buckets=(PROMPT_TOKENS,)
    )
    generator = Generator(cfg, buckets)
    compile_s = generator.compile(threads=8)
    params = jax.device_put(nnx.to_pure_dict(nnx.split(init_model(cfg, 0))[1]))
    start = time.perf_counter()
    generator.warm_up(params)
    warm_s = time.perf_counter() - start
    runs = [closed_loop(generator.batch(params), rows, max_tokens, seconds) for rows in ROWS]
    return {
        "config": name,
        "dtype": dtype,
        "params": cfg.num_params,
        "executables": len(generator.executables()),
        "compile_s": round(compile_s, 1),
        "warm_up_s": round(warm_s, 1),
        "runs": runs,
        "tokens_per_s_ratio_32_over_1": round(
            runs[-1]["tokens_per_s"] / runs[0]["tokens_per_s"], 2
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["small", "medium"])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--json", default=None)
    parser.add_argument("--allow-cpu", action="store_true")
    args = parser.parse_args()
    backend = jax.default_backend()
    if backend == "cpu" and not args.allow_cpu:
        print("no accelerator here (jax backend: cpu); run this on a GPU machine")
        return 0
    results = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {jax.devices()[0].device_kind}",
        "jax": jax.__version__,
        "results": [measure(c, args.seconds, args.max_tokens, args.dtype) for c in args.configs],
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
