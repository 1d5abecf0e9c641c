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
| MLSTACK_MODEL_ALIAS | serving: follow this registry alias (`aliases/<NAME>.json`) instead |
| MLSTACK_EVAL_DATA_URL | training: a held-out dataset the loop evaluates on (`--eval-every`) |
| MLSTACK_IMAGE | the image the run uses; recorded in an export's `lineage.json` |
| MLSTACK_GIT_COMMIT | the source commit of that image; recorded in `lineage.json` |
| MLSTACK_PIPELINE_RUN | `<pipeline>/<run-id>/<step>` of the pipeline step running this |
| MLSTACK_PARENT_VERSION | the model version this run may replace (the champion when it started) |

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
MODEL_ALIAS = "MLSTACK_MODEL_ALIAS"
EVAL_DATA_URL = "MLSTACK_EVAL_DATA_URL"
IMAGE = "MLSTACK_IMAGE"
GIT_COMMIT = "MLSTACK_GIT_COMMIT"
PIPELINE_RUN = "MLSTACK_PIPELINE_RUN"
PARENT_VERSION = "MLSTACK_PARENT_VERSION"
#: The variables read as plain strings (unset or blank: None), by Environment field.
_STRINGS = {
    "data_url": DATA_URL,
    "checkpoint_url": CHECKPOINT_URL,
    "model_url": MODEL_URL,
    "model_version": MODEL_VERSION,
    "model_alias": MODEL_ALIAS,
    "eval_data_url": EVAL_DATA_URL,
    "image": IMAGE,
    "git_commit": GIT_COMMIT,
    "pipeline_run": PIPELINE_RUN,
    "parent_version": PARENT_VERSION,
}

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
    model_alias: str | None = None
    eval_data_url: str | None = None
    image: str | None = None
    git_commit: str | None = None
    pipeline_run: str | None = None
    parent_version: str | None = None

    @property
    def distributed(self) -> bool:
        return self.num_processes > 1

    def as_env(self) -> dict[str, str]:
        """The variables that describe this environment (for a child process)."""
        env = {NUM_PROCESSES: str(self.num_processes), PROCESS_ID: str(self.process_id)}
        if self.coordinator_address:
            env[COORDINATOR_ADDRESS] = self.coordinator_address
        for field, name in _STRINGS.items():
            value = getattr(self, field)
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
        **{field: env.get(name, "").strip() or None for field, name in _STRINGS.items()},
    )
