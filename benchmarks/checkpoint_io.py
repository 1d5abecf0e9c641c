"""Checkpoint save and restore through an S3 endpoint against raw boto3 transfers, in one run.

The S3 endpoint is moto's server on 127.0.0.1, in its own process (so its work does not share
this process's interpreter lock with the client being measured). The state is `--mib` MiB of
random float32 arrays shaped like a model's (a few large matrices, many small vectors).

- Save: `Checkpoints.save` + `wait` (orbax writes the step to local disk, the files go up,
  COMMIT last), timed from the call until the step is committed.
- Raw upload: the same bytes as one object through boto3's `upload_fileobj` with the same
  multipart threshold, part size and concurrency (`TransferSettings` defaults), from memory.
- Restore: `Checkpoints.restore` (download the step, orbax reads it into numpy arrays).
- Raw download: `download_fileobj` of that object into memory.

Save, raw upload, restore and raw download alternate `--repeats` times; medians are compared as
throughput ratios (raw seconds / ours). Goal: >= 0.7 for save and for restore.

    python benchmarks/checkpoint_io.py [--mib 512] [--repeats 3] [--json FILE]
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
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import numpy as np
from boto3.s3.transfer import TransferConfig

from mlstack.workloads.local import free_port
from mlstack.workloads.storage import MIB, TransferSettings, open_store
from mlstack.workloads.train.checkpoint import Checkpoints

BUCKET = "bench-checkpoints"
_SERVER = (
    "import sys, time\n"
    "from moto.server import ThreadedMotoServer\n"
    "server = ThreadedMotoServer(ip_address='127.0.0.1', port=int(sys.argv[1]), verbose=False)\n"
    "server.start()\n"
    "print('ready', flush=True)\n"
    "time.sleep(10**6)\n"
)


def model_like_state(total_mib: int) -> dict[str, np.ndarray]:
    """Random float32 arrays: 8 matrices carry ~98% of the bytes, 64 vectors the rest."""
    rng = np.random.default_rng(0)
    floats = total_mib * MIB // 4
    vector = max(floats // 50 // 64, 1)
    matrix_rows = max((floats - 64 * vector) // 8 // 1024, 1)
    state = {
        f"params.block{i}.kernel": rng.random((matrix_rows, 1024), np.float32) for i in range(8)
    }
    state.update({f"params.norm{i}.scale": rng.random(vector, np.float32) for i in range(64)})
    return state


def timed(action: Any) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

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
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket=BUCKET)
        settings = TransferSettings()
        config = TransferConfig(
            multipart_threshold=settings.multipart_threshold_bytes,
            multipart_chunksize=settings.chunk_size_bytes,
            max_concurrency=settings.max_concurrency,
        )
        state = model_like_state(args.mib)
        target = {name: (x.shape, x.dtype) for name, x in state.items()}
        payload = b"".join(x.tobytes() for x in state.values())
        size = len(payload)
        store = open_store(f"s3://{BUCKET}/run", endpoint=endpoint)
        rows: dict[str, list[float]] = {
            "save": [],
            "raw_upload": [],
            "restore": [],
            "raw_download": [],
        }
        for repeat in range(args.repeats):
            local = Path(tempfile.mkdtemp(prefix="mlstack-ckpt-bench-"))
            atexit.register(shutil.rmtree, local, True)
            ckpt = Checkpoints(store, local, keep=1)
            step = repeat + 1

            def save(ckpt: Checkpoints = ckpt, step: int = step) -> None:
                ckpt.save(step, state)
                ckpt.wait()

            rows["save"].append(timed(save))
            rows["raw_upload"].append(
                timed(
                    lambda: client.upload_fileobj(
                        io.BytesIO(payload), BUCKET, "raw/blob", Config=config
                    )
                )
            )
            restored: dict[str, np.ndarray] = {}
            rows["restore"].append(
                timed(
                    lambda ckpt=ckpt, step=step, restored=restored: restored.update(
                        ckpt.restore(step, target)
                    )
                )
            )
            sink = io.BytesIO()
            rows["raw_download"].append(
                timed(
                    lambda sink=sink: client.download_fileobj(
                        BUCKET, "raw/blob", sink, Config=config
                    )
                )
            )
            ckpt.close()
            assert all(np.array_equal(restored[k], v) for k, v in state.items())
            assert sink.getbuffer().nbytes == size
            print(
                f"repeat {repeat}: "
                + ", ".join(f"{k} {size / MIB / v[-1]:.0f} MiB/s" for k, v in rows.items()),
                flush=True,
            )
    finally:
        server.terminate()
        server.wait()
    medians = {k: statistics.median(v) for k, v in rows.items()}
    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}",
        "mib": round(size / MIB, 1),
        "arrays": len(state),
        "seconds": {k: [round(x, 3) for x in v] for k, v in rows.items()},
        "mib_per_s": {k: round(size / MIB / v, 1) for k, v in medians.items()},
        "save_ratio": round(medians["raw_upload"] / medians["save"], 3),
        "restore_ratio": round(medians["raw_download"] / medians["restore"], 3),
    }
    print(json.dumps(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
