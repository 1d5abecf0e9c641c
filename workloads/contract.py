"""The environment contract between the deploy side and the workload code.

The TrainingJob component (a JobSet on the cluster) and `mlstack local train` (processes on this
machine) set these variables; the training entry point reads them and nothing else about where
it runs. Flags on the command line (`python -m mlstack.workloads.train.main --help`) carry the
run's settings (model config, steps, batch size); the environment carries the place: who the
processes are and where the data, checkpoints and exported models live.

| variable | meaning |
|---|---|
| MLSTACK_COORDINATOR_ADDRESS | host:port of process 0's coordinator (jax.distributed) |
| MLSTACK_NUM_PROCESSES | how many processes (pods, hosts) take part |
| MLSTACK_PROCESS_ID | this process's index, 0 .. N-1 (on the cluster: the completion index) |
| MLSTACK_DATA_URL | the prepared dataset: a store URL holding `index.json` and the shards |
| MLSTACK_CHECKPOINT_URL | where this run's checkpoints go (store URL) |
| MLSTACK_MODEL_URL | where this run's serving bundles go (store URL); what a server serves |
| MLSTACK_MODEL_VERSION | serving: the bundle version to serve (a canary's); unset: `latest` |

Store URLs are `file:///abs/path`, `s3://bucket/prefix` or `gs://bucket/prefix`
(`workloads.storage`); an S3-compatible endpoint comes from MLSTACK_S3_ENDPOINT.
A single process (no MLSTACK_NUM_PROCESSES, or 1) needs no coordinator.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

COORDINATOR_ADDRESS = "MLSTACK_COORDINATOR_ADDRESS"
NUM_PROCESSES = "MLSTACK_NUM_PROCESSES"
PROCESS_ID = "MLSTACK_PROCESS_ID"
DATA_URL = "MLSTACK_DATA_URL"
CHECKPOINT_URL = "MLSTACK_CHECKPOINT_URL"
MODEL_URL = "MLSTACK_MODEL_URL"
MODEL_VERSION = "MLSTACK_MODEL_VERSION"

#: The port process 0 listens on for the other processes (jax.distributed's coordinator).
COORDINATOR_PORT = 8476


class ContractError(ValueError):
    """The environment does not satisfy the contract; the message is one line with the fix."""


@dataclass(frozen=True)
class Environment:
    """Where this process runs and where its run's objects live."""

    num_processes: int = 1
    process_id: int = 0
    coordinator_address: str | None = None
    data_url: str | None = None
    checkpoint_url: str | None = None
    model_url: str | None = None
    model_version: str | None = None

    @property
    def distributed(self) -> bool:
        return self.num_processes > 1

    def as_env(self) -> dict[str, str]:
        """The variables that describe this environment (for a child process)."""
        env = {NUM_PROCESSES: str(self.num_processes), PROCESS_ID: str(self.process_id)}
        for name, value in (
            (COORDINATOR_ADDRESS, self.coordinator_address),
            (DATA_URL, self.data_url),
            (CHECKPOINT_URL, self.checkpoint_url),
            (MODEL_URL, self.model_url),
            (MODEL_VERSION, self.model_version),
        ):
            if value:
                env[name] = value
        return env


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ContractError(
            f"{name}={raw!r} is not an integer; fix: set it to a whole number >= {minimum}"
        ) from None
    if value < minimum:
        raise ContractError(f"{name}={value} is below {minimum}; fix: set it to >= {minimum}")
    return value


def read_environment(env: Mapping[str, str] | None = None) -> Environment:
    """Read and check the contract from `env` (default: os.environ)."""
    env = os.environ if env is None else env
    num = _int(env, NUM_PROCESSES, 1, 1)
    pid = _int(env, PROCESS_ID, 0, 0)
    if pid >= num:
        raise ContractError(
            f"{PROCESS_ID}={pid} is not below {NUM_PROCESSES}={num}; fix: process ids run "
            f"from 0 to {num - 1}"
        )
    coordinator = env.get(COORDINATOR_ADDRESS, "").strip() or None
    if num > 1:
        host, _, port = (coordinator or "").rpartition(":")
        if not host or not port.isdigit():
            raise ContractError(
                f"{COORDINATOR_ADDRESS}={coordinator!r} must be host:port for {num} processes; "
                f"fix: set it to process 0's address, e.g. 'trainer-0:{COORDINATOR_PORT}'"
            )
    return Environment(
        num_processes=num,
        process_id=pid,
        coordinator_address=coordinator,
        data_url=env.get(DATA_URL, "").strip() or None,
        checkpoint_url=env.get(CHECKPOINT_URL, "").strip() or None,
        model_url=env.get(MODEL_URL, "").strip() or None,
        model_version=env.get(MODEL_VERSION, "").strip() or None,
    )
