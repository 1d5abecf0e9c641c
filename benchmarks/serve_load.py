"""Load test of the model server on loopback with wrk: batching on against batching off, then
an overload run.

A model is trained for 30 steps (`--model tiny`, or `bench`: d_model 512, 4 layers, context 128,
12.8M parameters: 51 MB of float32 weights, more than the CPU's last-level cache, so that a
one-row decode step is bound by reading the weights from memory, as a real model's is on a GPU;
tiny's 0.5 MB stay in cache, and its one-row steps are nearly as efficient per token on a CPU as
batched ones), exported, and served by `python -m mlstack.workloads.serve.main` on 127.0.0.1
twice at once: with `--max-batch 32` (batching on) and `--max-batch 1` (off). wrk (Debian's
package; a Lua script sets the POST body) runs `--duration-s` seconds at each concurrency
(default 1, 8, 32) against each server in turn, `--repeats` times, the order flipping each round
so that drift in the machine's speed hits both alike, and each run starting once both servers
are idle (what was still queued when wrk stopped would otherwise decode on the CPU the next run
measures); each setting reports the medians of its runs (and the sums of its answer counts).
Every request is the same: a 14-byte prompt, `--max-tokens` (32) new tokens, temperature 0.8.
Per run: requests/s and p50/p99 latency (wrk), generated tokens/s (the server's
`mlstack_serve_generated_tokens_total` before and after: tokens of answered requests), the mean
batch (rows per decode call), answers by status (the server's `mlstack_serve_requests_total`;
499 counts the requests wrk cut off when it stopped, whose client went away).

Overload: batching on with `--max-queue` 32, at twice the concurrency it can hold (2 x (32
running + 32 queued) = 128 connections): the excess must be answered 429, never 5xx. Its p50 and
p99 mix the fast 429s with the served requests.

Goals (issue 7): at concurrency 32, batching on gives >= 4x the tokens/s of batching off; at
concurrency 1, p50 with batching on is within 1.2x of off; the overload run has no 5xx. A goal
whose concurrency was not run (`--concurrency 32`) reads "not measured".

    python benchmarks/serve_load.py [--model bench] [--duration-s 6] [--repeats 5] [--json FILE]
                                    [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from mlstack.workloads.serve.server import ServeOptions, ServerProcess
from mlstack.workloads.train.configs import ModelConfig, TrainConfig, get_config
from mlstack.workloads.train.data import Corpus, prepare_dataset
from mlstack.workloads.train.train import RunOptions, train_and_evaluate

MODELS: dict[str, TrainConfig] = {
    "tiny": get_config("tiny"),
    "bench": TrainConfig(
        name="serve-bench",
        model=ModelConfig(d_model=512, n_layers=4, n_heads=8, seq_len=128),
        global_batch_size=8,
        learning_rate=1e-3,
        warmup_steps=5,
        total_steps=30,
    ),
}
PROMPT = "import os\ndef "
MAX_BATCH_ON = 32
OVERLOAD_QUEUE = 32
_UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


@dataclass(frozen=True)
class Run:
    """One wrk run against one server."""

    batching: str
    concurrency: int
    seconds: float
    requests: int
    requests_per_s: float
    tokens_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    #: Requests per generate call, on average.
    mean_batch: float
    #: Answers by HTTP status, from the server's metrics.
    statuses: dict[str, int]


def train_bundle(config: TrainConfig, root: Path) -> str:
    """Train `config` for 30 steps on the standard library's email package; the models URL."""
    import sysconfig

    corpus = Corpus(Path(sysconfig.get_paths()["stdlib"]) / "email", "*.py", "stdlib-email")
    data = (root / "data").as_uri()
    prepare_dataset(corpus, data, shard_tokens=1 << 14)
    models = (root / "models").as_uri()
    train_and_evaluate(
        RunOptions(
            config=config,
            steps=30,
            data_url=data,
            checkpoint_url=(root / "ckpt").as_uri(),
            model_url=models,
            workdir=root / "work",
            log_every=30,
            checkpoint_every=30,
        )
    )
    return models


def lua_script(path: Path, max_tokens: int) -> Path:
    body = json.dumps(
        {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0.8, "top_k": 0, "seed": 1}
    )
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return path


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            status = sample.labels.get("status")
            values[f"{sample.name}:{status}" if status else sample.name] = sample.value
    return values


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS_S[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests, duration, requests/s, p50/p99 and error counts from wrk's --latency output."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)\s*$", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)\s*$", output, re.MULTILINE)
    if not (done and rate and p50 and p99):
        raise ValueError(f"unexpected wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return {
        "requests": int(done.group(1)),
        "seconds": _seconds(done.group(2) + done.group(3)),
        "requests_per_s": float(rate.group(1)),
        "p50_ms": _seconds(p50.group(1)) * 1e3,
        "p99_ms": _seconds(p99.group(1)) * 1e3,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(int(n) for n in errors.groups()) if errors else 0,
    }


@dataclass(frozen=True)
class Target:
    """wrk against one server."""

    wrk: str
    url: str
    script: Path
    batching: str

    def run(self, concurrency: int, duration_s: float) -> str:
        args = [
            self.wrk,
            *("-t", str(min(concurrency, 2))),
            *("-c", str(concurrency)),
            *("-d", f"{duration_s:g}s"),
            *("--timeout", "30s"),
            "--latency",
            *("-s", str(self.script)),
            f"{self.url}/v1/completions",
        ]
        proc = subprocess.run(
            args, capture_output=True, text=True, check=True, timeout=duration_s + 60
        )
        return proc.stdout

    def wait_idle(self, timeout_s: float = 120.0) -> None:
        """Wait until the server has nothing queued or running: a run's leftovers (requests
        that were queued when wrk stopped and are still decoding) would take the CPU from the
        next run, whichever server it measures."""
        deadline = time.monotonic() + timeout_s
        while True:
            values = scrape(self.url)
            if values["mlstack_serve_queue_depth"] == values["mlstack_serve_running"] == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.url} still busy after {timeout_s:g} s: {values}")
            time.sleep(0.05)

    def measure(self, concurrency: int, duration_s: float) -> Run:
        before = scrape(self.url)
        parsed = parse_wrk(self.run(concurrency, duration_s))
        after = scrape(self.url)

        def delta(key: str) -> float:
            return after.get(key, 0.0) - before.get(key, 0.0)

        prefix = "mlstack_serve_requests_total:"
        statuses = {
            key.removeprefix(prefix): int(delta(key))
            for key in after
            if key.startswith(prefix) and delta(key) > 0
        }
        return Run(
            batching=self.batching,
            concurrency=concurrency,
            seconds=parsed["seconds"],
            requests=parsed["requests"],
            requests_per_s=parsed["requests_per_s"],
            tokens_per_s=delta("mlstack_serve_generated_tokens_total") / parsed["seconds"],
            p50_ms=parsed["p50_ms"],
            p99_ms=parsed["p99_ms"],
            non_2xx=parsed["non_2xx"],
            socket_errors=parsed["socket_errors"],
            mean_batch=delta("mlstack_serve_batch_size_sum")
            / max(delta("mlstack_serve_batch_size_count"), 1.0),
            statuses=statuses,
        )


def start_server(
    models_url: str, max_batch: int, max_queue: int, max_tokens: int, cache: Path
) -> ServerProcess:
    options = ServeOptions(
        model_url=models_url,
        port=0,
        max_batch=max_batch,
        max_queue=max_queue,
        max_tokens_limit=max_tokens,
        length_buckets=(16,),
        compile_cache_dir=str(cache),
    )
    server = ServerProcess(options, on_line=lambda line: None)
    try:
        server.wait_ready(600)
    except BaseException:
        server.stop()
        raise
    return server


def median_run(runs: list[Run]) -> Run:
    """Repeats of one setting as one: the median of each rate and latency, the sums of the
    counts."""
    statuses: dict[str, int] = {}
    for run in runs:
        for status, n in run.statuses.items():
            statuses[status] = statuses.get(status, 0) + n
    first = runs[0]
    return Run(
        batching=first.batching,
        concurrency=first.concurrency,
        seconds=sum(r.seconds for r in runs),
        requests=sum(r.requests for r in runs),
        requests_per_s=statistics.median(r.requests_per_s for r in runs),
        tokens_per_s=statistics.median(r.tokens_per_s for r in runs),
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        non_2xx=sum(r.non_2xx for r in runs),
        socket_errors=sum(r.socket_errors for r in runs),
        mean_batch=statistics.median(r.mean_batch for r in runs),
        statuses=statuses,
    )


def compare(targets: list[Target], levels: list[int], repeats: int, duration_s: float) -> list[Run]:
    """Each setting `repeats` times, the targets alternating (and their order flipping each
    round) so that drift in the machine's speed hits both alike; the median of each."""
    runs: dict[tuple[str, int], list[Run]] = {}
    for target in targets:
        target.run(max(levels), 1.0)
    for concurrency in levels:
        for round_ in range(repeats):
            for target in targets if round_ % 2 == 0 else targets[::-1]:
                for other in targets:
                    other.wait_idle()
                run = target.measure(concurrency, duration_s)
                runs.setdefault((target.batching, concurrency), []).append(run)
                print(table([run]).splitlines()[-1], flush=True)
    return [median_run(found) for found in runs.values()]


def table(runs: list[Run]) -> str:
    lines = [
        "| batching | concurrency | requests/s | tokens/s | p50 ms | p99 ms | mean batch "
        "| answers |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        answers = ", ".join(f"{n} x {status}" for status, n in sorted(r.statuses.items()))
        lines.append(
            f"| {r.batching} | {r.concurrency} | {r.requests_per_s:,.0f} | "
            f"{r.tokens_per_s:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.mean_batch:.1f} "
            f"| {answers} |"
        )
    return "\n".join(lines)


#: A goal whose concurrency level was not run (`--concurrency 32` has no level 1).
NOT_MEASURED = "not measured"


def on_off_ratio(runs: list[Run], concurrency: int, key: str) -> float | str:
    """Batching on's `key` over off's at one concurrency, or NOT_MEASURED."""
    found = {r.batching: getattr(r, key) for r in runs if r.concurrency == concurrency}
    if "on" not in found or "off" not in found:
        return NOT_MEASURED
    return found["on"] / found["off"]


def goals(runs: list[Run], overload: Run, top: int) -> dict[str, Any]:
    return {
        f"tokens_per_s_ratio_at_{top}": on_off_ratio(runs, top, "tokens_per_s"),
        "p50_ratio_at_1": on_off_ratio(runs, 1, "p50_ms"),
        "overload_5xx": sum(n for s, n in overload.statuses.items() if s.startswith("5")),
        "overload_429": overload.statuses.get("429", 0),
        "overload_socket_errors": overload.socket_errors,
    }


def benchmark(args: argparse.Namespace, wrk: str, root: Path) -> dict[str, Any]:
    duration = 2.0 if args.quick else args.duration_s
    levels = [1, 8] if args.quick else [int(c) for c in args.concurrency.split(",")]
    repeats = 1 if args.quick else args.repeats
    config = MODELS[args.model]
    start = time.perf_counter()
    models = train_bundle(config, root)
    print(f"trained and exported {config.name} in {time.perf_counter() - start:.1f} s")
    script = lua_script(root / "post.lua", args.max_tokens)
    cache = root / "cache"
    servers: dict[str, ServerProcess] = {}
    try:
        # Started one by one inside the `try`: a second that fails to start stops the first.
        for label, max_batch in (("on", MAX_BATCH_ON), ("off", 1)):
            servers[label] = start_server(models, max_batch, 256, args.max_tokens, cache)
        targets = [Target(wrk, s.url, script, label) for label, s in servers.items()]
        runs = compare(targets, levels, repeats, duration)
    finally:
        for server in servers.values():
            server.stop()
    server = start_server(models, MAX_BATCH_ON, OVERLOAD_QUEUE, args.max_tokens, cache)
    try:
        target = Target(wrk, server.url, script, "on, overload")
        target.wait_idle()
        overload = target.measure(2 * (MAX_BATCH_ON + OVERLOAD_QUEUE), duration)
    finally:
        server.stop()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "model": {"name": config.name, **asdict(config.model)},
        "max_tokens": args.max_tokens,
        "duration_s": duration,
        "repeats": repeats,
        "runs": [asdict(r) for r in [*runs, overload]],
        "table": table([*runs, overload]),
        "goals": goals(runs, overload, max(levels)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="bench")
    parser.add_argument("--duration-s", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=5, help="median of this many runs")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--quick", action="store_true", help="2 s runs at concurrency 1 and 8 (a smoke test)"
    )
    args = parser.parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        print("error: wrk is not installed; fix: apt-get install -y wrk", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="mlstack-serve-load-"))
    try:
        result = benchmark(args, wrk, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    print(f"{result['date']}, {result['machine']}: model {result['model']}")
    print(result["table"])
    print(json.dumps(result["goals"], indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
