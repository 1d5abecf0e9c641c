"""The local pipeline against its steps run by hand, and a rerun with nothing changed.

One pipeline (prepare, two `tiny` candidates that differ in learning rate, evaluate, select,
promote to the canary), one process per train step, on a `file://` store holding a small
prepared corpus (the standard library's `email` package):

- by hand: each step's command (`step.command_for`: the training entry point, or
  `python -m mlstack.workloads.pipeline.step`) run one after the other in topological order
  with its contract environment, as a script would; no engine, no cache.
- pipeline: `engine.run_pipeline` with the local executor (state.json after every change, the
  cache, the two candidates in parallel up to `--max-parallel`), on a fresh store.
- rerun: the same pipeline again as a new run on the pipeline's store: prepare, train and
  evaluate come from the cache; select and promote run.

Goals: pipeline <= 1.1x by hand; rerun < 5% of the pipeline's first run.

    python benchmarks/pipeline_local.py [--steps 30] [--max-parallel 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import sysconfig
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlstack.workloads.pipeline.engine import (
    cache_keys,
    read_source_sha256,
    run_pipeline,
    run_url,
    source_url,
)
from mlstack.workloads.pipeline.executor import StepContext
from mlstack.workloads.pipeline.local import LocalExecutor
from mlstack.workloads.pipeline.spec import Pipeline, Step, topological_order
from mlstack.workloads.pipeline.step import PYTHON, command_for, version_name
from mlstack.workloads.storage import open_store
from mlstack.workloads.train.data import Corpus, prepare_dataset


def pipeline_at(root: Path, steps: int) -> Pipeline:
    train = {"model": "tiny", "steps": steps, "num_hosts": 1, "eval_every_steps": steps}
    return Pipeline(
        name="nightly",
        team="bench",
        model="lm",
        work_url=(root / "checkpoints/bench/pipelines/nightly").as_uri(),
        model_url=(root / "models/bench/lm").as_uri(),
        datasets_url=(root / "datasets").as_uri(),
        image="local",
        steps=(
            Step("data", "prepare", (), {"dataset": "email", "test_fraction": 0.1, "seed": 0}),
            Step("a", "train", ("data",), train | {"learning_rate": 1e-3}),
            Step("b", "train", ("data",), train | {"learning_rate": 1e-2}),
            Step("eval", "evaluate", ("a", "b"), {"split": "test", "max_batches": 4}),
            Step("pick", "select", ("eval",), {"metric": "test.loss", "min_improvement": 0.0}),
            Step("ship", "promote", ("pick",), {"alias": "canary", "soak_s": 0}),
        ),
    )


def prepare_store(root: Path) -> None:
    corpus = Corpus(Path(sysconfig.get_paths()["stdlib"]) / "email", "*.py", "stdlib-email")
    prepare_dataset(corpus, (root / "datasets/email").as_uri(), shard_tokens=1 << 14)


def by_hand(pipeline: Pipeline) -> float:
    """Each step's command in topological order; the run directory holds what the step entry
    point reads (pipeline.json, state.json with the keys, the upstream output.json)."""
    run_id = "by-hand"
    url = run_url(pipeline, run_id)
    store = open_store(url)
    sources = {
        source_url(pipeline, s): read_source_sha256(source_url(pipeline, s))
        for s in pipeline.steps
        if s.kind == "prepare"
    }
    keys = cache_keys(pipeline, sources)
    steps = {name: {"key": key} for name, key in keys.items()}
    store.put_bytes("pipeline.json", pipeline.dumps().encode())
    store.put_bytes("state.json", json.dumps({"run_id": run_id, "steps": steps}).encode())
    outputs: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    for name in topological_order(pipeline.steps):
        step = pipeline.step(name)
        ctx = StepContext(
            pipeline=pipeline,
            run_id=run_id,
            run_url=url,
            key=keys[name],
            attempt=1,
            inputs={n: outputs[n] for n in step.after},
        )
        command = command_for(step, ctx)
        argv = [sys.executable if command.argv[0] == PYTHON else command.argv[0]]
        subprocess.run(
            [*argv, *command.argv[1:]],
            env={**os.environ, "JAX_PLATFORMS": "cpu", **command.env},
            check=True,
            capture_output=True,
        )
        if step.kind == "train":
            outputs[name] = {"version": version_name(run_id, name)}
            store.put_bytes(f"steps/{name}/output.json", json.dumps(outputs[name]).encode())
        else:
            outputs[name] = json.loads(store.get_bytes(f"steps/{name}/output.json"))
    return time.perf_counter() - start


def engine_run(pipeline: Pipeline, run_id: str, max_parallel: int) -> float:
    start = time.perf_counter()
    state = run_pipeline(
        pipeline, LocalExecutor(), run_id=run_id, say=lambda line: None, max_parallel=max_parallel
    )
    seconds = time.perf_counter() - start
    if state.status != "succeeded":
        errors = {n: s.error for n, s in state.steps.items() if s.error}
        raise SystemExit(f"error: run {run_id} {state.status}: {errors}")
    return seconds


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="training steps per candidate")
    parser.add_argument("--max-parallel", type=int, default=4, help="the engine's bound")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    args = parser.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    with tempfile.TemporaryDirectory(prefix="mlstack-bench-pipeline-") as tmp:
        hand_root, engine_root = Path(tmp) / "hand", Path(tmp) / "engine"
        for root in (hand_root, engine_root):
            prepare_store(root)
        hand_s = by_hand(pipeline_at(hand_root, args.steps))
        pipeline = pipeline_at(engine_root, args.steps)
        first_s = engine_run(pipeline, "first", args.max_parallel)
        rerun_s = engine_run(pipeline, "rerun", args.max_parallel)
    report = {
        "machine": machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "steps": args.steps,
        "max_parallel": args.max_parallel,
        "by_hand_s": round(hand_s, 2),
        "pipeline_s": round(first_s, 2),
        "rerun_s": round(rerun_s, 2),
        "pipeline_vs_by_hand": round(first_s / hand_s, 3),
        "rerun_vs_first": round(rerun_s / first_s, 4),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
