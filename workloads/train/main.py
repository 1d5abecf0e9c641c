"""Entry point of the training workload: `python -m mlstack.workloads.train.main --config tiny ...`.

Where it runs comes from the environment contract (`workloads.contract`); what to train comes
from these flags. Every process of a run starts the same command. Bad input ends with one
`error:` line and exit code 2; a run stopped by a non-finite loss, gradient norm or parameters
(nothing of it committed or exported) with one `error:` line and exit code 3.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from mlstack.workloads.contract import (
    CHECKPOINT_URL,
    DATA_URL,
    EVAL_DATA_URL,
    MODEL_URL,
    ContractError,
    Environment,
    read_environment,
)
from mlstack.workloads.storage import StoreError
from mlstack.workloads.train.configs import CONFIGS, RunError, TrainConfig, get_config

if TYPE_CHECKING:
    from mlstack.workloads.train.train import RunOptions

EXIT_BAD_INPUT = 2
#: Exit code of a run that stopped for a preemption after committing its checkpoint; the
#: JobSet restarts it (failurePolicy), and the restart resumes.
EXIT_PREEMPTED = 143
#: Exit code of a run stopped by a non-finite loss or gradient norm (`--non-finite-patience`):
#: nothing from the bad steps was committed or exported. Not 2: the input may be fine.
EXIT_NON_FINITE = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mlstack.workloads.train.main",
        description="Train the reference byte-level transformer; resumes from the newest "
        "committed checkpoint.",
    )
    parser.add_argument("--config", default="tiny", help=f"one of {', '.join(CONFIGS)}")
    parser.add_argument("--steps", type=int, default=None, help="train to this step")
    parser.add_argument("--global-batch-size", type=int, default=None)
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help="peak learning rate (default: the config's)",
    )
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None)
    parser.add_argument("--fsdp", type=int, default=1, help="devices each parameter is split over")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--keep-checkpoints", type=int, default=3)
    parser.add_argument(
        "--export-every", type=int, default=0, help="also export every M steps (0: at the end)"
    )
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument(
        "--non-finite-patience",
        type=int,
        default=0,
        help="steps in a row with a non-finite loss or gradient norm to skip before stopping "
        "(exit 3); 0: stop at the first",
    )
    parser.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="evaluate on the eval dataset every N steps (and at the end); 0: at the end only",
    )
    parser.add_argument(
        "--eval-batches",
        type=int,
        default=8,
        help="global batches of the eval dataset per evaluation (the first K, in order)",
    )
    parser.add_argument(
        "--eval-data", default=None, help=f"held-out dataset URL (default ${EVAL_DATA_URL})"
    )
    parser.add_argument(
        "--version",
        default=None,
        help="the export's version name (default step-<8 digits>); intermediate exports of "
        "--export-every are NAME.step-<8 digits>",
    )
    parser.add_argument("--data", default=None, help=f"dataset URL (default ${DATA_URL})")
    parser.add_argument(
        "--checkpoint-url", default=None, help=f"checkpoint URL (default ${CHECKPOINT_URL})"
    )
    parser.add_argument("--model-url", default=None, help=f"export URL (default ${MODEL_URL})")
    parser.add_argument(
        "--no-export", action="store_true", help="do not write a serving bundle at the end"
    )
    parser.add_argument(
        "--workdir",
        default=None,
        help="local staging for checkpoints and the data cache (default: a temp directory)",
    )
    return parser.parse_args(argv)


def _positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} {value} must be at least 1; fix: pass a positive number")


def build_config(args: argparse.Namespace) -> TrainConfig:
    _positive(args, "steps", "global_batch_size", "fsdp", "checkpoint_every", "keep_checkpoints")
    _positive(args, "log_every", "eval_batches")
    if args.eval_every < 0:
        raise ValueError(f"--eval-every {args.eval_every} is negative; fix: use 0 or more")
    if args.version is not None:
        # Imported here: the entry point's module stays free of numpy (`workloads.local`).
        from mlstack.workloads.train.export import check_version_name

        check_version_name(args.version)
    if args.export_every < 0:
        raise ValueError(f"--export-every {args.export_every} is negative; fix: use 0 or more")
    if args.non_finite_patience < 0:
        raise ValueError(
            f"--non-finite-patience {args.non_finite_patience} is negative; fix: use 0 or more"
        )
    overrides: dict[str, object] = {}
    if args.global_batch_size is not None:
        overrides["global_batch_size"] = args.global_batch_size
    if args.dtype is not None:
        overrides["dtype"] = args.dtype
    if args.learning_rate is not None:
        # Pipeline candidates differ in it (a train step's `learning_rate`).
        if not args.learning_rate > 0:
            raise ValueError(
                f"--learning-rate {args.learning_rate} must be positive; fix: pass e.g. 3e-4"
            )
        overrides["learning_rate"] = args.learning_rate
    return get_config(args.config).with_overrides(**overrides)


def _required(value: str | None, flag: str, var: str) -> str:
    if not value:
        raise ContractError(f"no {flag} given and ${var} is not set; fix: set one of them")
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = build_config(args)
        env = read_environment()
        data_url = _required(args.data or env.data_url, "--data", DATA_URL)
        checkpoint_url = _required(
            args.checkpoint_url or env.checkpoint_url, "--checkpoint-url", CHECKPOINT_URL
        )
        model_url = None if args.no_export else (args.model_url or env.model_url)
        eval_data_url = args.eval_data or env.eval_data_url
        if args.eval_every and not eval_data_url:
            raise ContractError(
                f"--eval-every {args.eval_every} needs an eval dataset and neither --eval-data "
                f"nor ${EVAL_DATA_URL} is set; fix: set one (a prepare step's test split), or "
                "pass --eval-every 0"
            )
    except (ValueError, ContractError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    # Scratch (staging, the data cache): the caller's --workdir is left alone; one made here is
    # removed when the run returns (a failed process of several exits at once instead).
    own_workdir = args.workdir is None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix=f"mlstack-train-{os.getpid()}-"))
    initialize_distributed(env)
    from mlstack.workloads.train.export import Provenance
    from mlstack.workloads.train.train import RunOptions

    opts = RunOptions(
        config=cfg,
        steps=args.steps or cfg.total_steps,
        data_url=data_url,
        checkpoint_url=checkpoint_url,
        model_url=model_url,
        workdir=workdir,
        seed=args.seed,
        fsdp=args.fsdp,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        export_every=args.export_every,
        log_every=args.log_every,
        non_finite_patience=args.non_finite_patience,
        eval_data_url=eval_data_url,
        eval_every=args.eval_every,
        eval_batches=args.eval_batches,
        version=args.version,
        provenance=Provenance(
            image=env.image,
            git_commit=env.git_commit,
            pipeline_run=env.pipeline_run,
            parent_version=env.parent_version,
        ),
    )
    try:
        return run_distributed(opts) if env.distributed else run(opts)
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def run_distributed(opts: RunOptions) -> int:
    """`run` on one process of several: a failed process exits at once, with its error.

    JAX's exit hook calls `jax.distributed.shutdown()`, whose shutdown barrier waits up to
    `shutdown_timeout_seconds` (300 s by default) for every other process to shut down too;
    after a failure the others are blocked in a collective this process will never join, so
    exiting normally would hold the error back for minutes. The error is printed first; the
    launcher (locally) or the JobSet's restart (on the cluster) stops the others."""
    try:
        code = run(opts)
    except BaseException:
        # A bug, not bad input: its traceback, then out.
        traceback.print_exc()
        code = 1
    if code not in (0, EXIT_PREEMPTED):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def initialize_distributed(env: Environment) -> None:
    """Join the run's processes (before anything touches a device)."""
    import jax

    # CPU collectives between processes (the local executor, CPU tests); GPUs use NCCL.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # Bounded waits (JAX's defaults): initialize gives up after 300 s without every peer, and
    # a peer silent for 100 s is considered dead (heartbeat_timeout_seconds); when process 0,
    # the coordination service's host, exits, the others terminate at once. A peer that died
    # still leaves the others in a collective: locally the launcher stops them within
    # seconds, on the cluster the JobSet's restart.
    if env.distributed:
        jax.distributed.initialize(
            coordinator_address=env.coordinator_address,
            num_processes=env.num_processes,
            process_id=env.process_id,
        )


def run(opts: RunOptions) -> int:
    from mlstack.workloads.train.checkpoint import CheckpointError
    from mlstack.workloads.train.data import DataError
    from mlstack.workloads.train.export import ExportError
    from mlstack.workloads.train.train import NonFiniteError, train_and_evaluate

    try:
        result = train_and_evaluate(opts)
    except (NonFiniteError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NON_FINITE
    except (StoreError, DataError, CheckpointError, RunError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_PREEMPTED if result.preempted else 0


if __name__ == "__main__":
    sys.exit(main())
