"""Training metrics: JSON lines on stdout, and model FLOPs utilization (MFU).

MFU is the model's training FLOPs per second (6 per parameter per token plus attention,
`ModelConfig.flops_per_token`) over the devices' dense peak for the compute dtype. The peaks are
the vendors' datasheet numbers for dense (not sparse) math; `MLSTACK_PEAK_TFLOPS` overrides the
per-device peak, and devices not in the table (CPUs) report no MFU.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, TextIO

#: Dense peak TFLOP/s per device: (bfloat16, float32 as XLA runs it by default: TF32 on GPUs).
PEAK_TFLOPS: dict[str, tuple[float, float]] = {
    "H200": (989.0, 494.0),
    "H100": (989.0, 494.0),
    "A100": (312.0, 156.0),
    "L40S": (362.0, 183.0),
    "L4": (121.0, 60.0),
    "A10G": (70.0, 35.0),
    "T4": (65.0, 8.1),
    "V100": (125.0, 15.7),
}
PEAK_ENV = "MLSTACK_PEAK_TFLOPS"


def peak_flops(device_kind: str, dtype: str) -> float | None:
    """Peak FLOP/s of one device of `device_kind` (e.g. 'NVIDIA H100 80GB HBM3'), or None."""
    override = os.environ.get(PEAK_ENV, "").strip()
    if override:
        return float(override) * 1e12
    kind = device_kind.upper()
    # Longest names first, so that 'L40S' is not read as 'L4'.
    for family in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if family in kind:
            bf16, fp32 = PEAK_TFLOPS[family]
            return (bf16 if dtype == "bfloat16" else fp32) * 1e12
    return None


def mfu(
    flops_per_token: int, tokens_per_s: float, devices: int, peak: float | None
) -> float | None:
    if peak is None or devices < 1:
        return None
    return flops_per_token * tokens_per_s / (peak * devices)


class MetricsLog:
    """JSON lines, one per event, written by process 0 only."""

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stdout

    def __call__(self, event: str, **fields: Any) -> None:
        if not self.enabled:
            return
        record = {"event": event, "time": round(time.time(), 3), **fields}
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()
