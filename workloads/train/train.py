"""The training loop: sharded steps, checkpoints to the object store, preemption, export.

`train_and_evaluate` runs on every process of a run. With an evaluation dataset (a held-out
test split, `RunOptions.eval_data_url`) it evaluates every `eval_every` steps and at the end:
the mean loss over the first `eval_batches` global batches of that dataset, read in order (the
same batches every time, so the points compare), under the training mesh and sharding.

It resumes from the newest committed checkpoint when there is one, so starting a run and
restarting it after a crash or a preemption are the same call. Batches are a pure function of
(seed, step), so a resumed run sees exactly the batches the uninterrupted run would have.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils

from mlstack.workloads.storage import open_store
from mlstack.workloads.train import checkpoint, export, state
from mlstack.workloads.train.configs import RunError, TrainConfig
from mlstack.workloads.train.data import Loader, index_sha256
from mlstack.workloads.train.metrics import MetricsLog, mfu, peak_flops
from mlstack.workloads.train.model import abstract_model, init_model, param_count

State = dict[str, Any]


@dataclass(frozen=True)
class RunOptions:
    """One run: the config with its overrides, where things live, and how often to save."""

    config: TrainConfig
    steps: int
    data_url: str
    checkpoint_url: str
    model_url: str | None
    workdir: Path
    seed: int = 0
    fsdp: int = 1
    checkpoint_every: int = 50
    keep_checkpoints: int = 3
    #: Export a bundle every M steps as well as at the end; 0: only at the end.
    export_every: int = 0
    log_every: int = 10
    #: Consecutive steps with a non-finite loss or gradient norm that are skipped (parameters
    #: and optimizer state left as they were) before the run stops; 0: stop at the first.
    non_finite_patience: int = 0
    #: A held-out dataset to evaluate on (MLSTACK_EVAL_DATA_URL); None: no evaluation.
    eval_data_url: str | None = None
    #: Evaluate every N steps (and at the end, whenever eval_data_url is set); 0: at the end.
    eval_every: int = 0
    #: Global batches of the eval dataset in each evaluation (the first K, in order).
    eval_batches: int = 8
    #: The final export's version name (`--version`); None: `step-<8 digits>`.
    version: str | None = None
    #: The image, commit, pipeline run and parent version recorded in `lineage.json`.
    provenance: export.Provenance = field(default_factory=export.Provenance)


@dataclass
class RunResult:
    start_step: int
    final_step: int
    preempted: bool = False
    #: (step, loss) at every logged step.
    losses: list[tuple[int, float]] = field(default_factory=list)
    committed_step: int | None = None
    exported: str | None = None
    #: The `eval` events' fields, in order.
    evals: list[dict[str, Any]] = field(default_factory=list)


def make_optimizer(cfg: TrainConfig) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with linear warmup and cosine decay, after clipping the global gradient norm."""
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.learning_rate,
        warmup_steps=cfg.warmup_steps,
        decay_steps=max(cfg.total_steps, cfg.warmup_steps + 1),
        end_value=cfg.learning_rate * cfg.min_lr_ratio,
    )
    # Decay matrices only, not norms' scales and biases.
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)  # noqa: E731
    tx = optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip_norm),
        optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=decay_mask),
    )
    return tx, schedule


class Preemption:
    """Whether to stop and save now. One process: a SIGTERM handler. Several: JAX's own
    preemption service, which catches SIGTERM on any process and makes every process agree on
    the step at which to stop (they must save at the same step: saving is a collective)."""

    def __init__(self, distributed: bool) -> None:
        self.distributed = distributed
        self.requested = False
        self._previous: Any = None
        if not distributed:
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: object) -> None:
        self.requested = True

    def reached(self, step: int) -> bool:
        if self.distributed:
            return multihost_utils.reached_preemption_sync_point(step)
        return self.requested

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def make_train_step(
    graphdef: nnx.GraphDef[Any], tx: optax.GradientTransformation, shardings: Any, batch: Any
) -> Any:
    def train_step(current: State, tokens: jax.Array) -> tuple[State, dict[str, jax.Array]]:
        def loss_fn(params: Any) -> jax.Array:
            logits = nnx.merge(graphdef, params)(tokens[:, :-1])
            return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

        loss, grads = jax.value_and_grad(loss_fn)(current["params"])
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt = tx.update(grads, current["opt"], current["params"])
        params = optax.apply_updates(current["params"], updates)
        # A non-finite step leaves the parameters and the optimizer state as they were (what
        # optax.apply_if_finite does, without changing the state's layout, so checkpoints
        # stay compatible); `NonFiniteGuard` counts such steps and stops the run.
        params, opt = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old),
            (params, opt),
            (current["params"], current["opt"]),
        )
        new = {"params": params, "opt": opt, "step": current["step"] + 1}
        return new, {"loss": loss, "grad_norm": grad_norm, "finite": finite}

    return jax.jit(
        train_step,
        in_shardings=(shardings, batch),
        out_shardings=(shardings, None),
        donate_argnums=0,
    )


def make_eval_step(graphdef: nnx.GraphDef[Any], param_shardings: Any, batch: Any) -> Any:
    """The mean next-token loss of one global batch, with the training step's shardings."""

    def eval_step(params: Any, tokens: jax.Array) -> jax.Array:
        logits = nnx.merge(graphdef, params)(tokens[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

    return jax.jit(eval_step, in_shardings=(param_shardings, batch))


def perplexity(loss: float) -> float | None:
    """exp(loss), or None when the loss is not finite or the exponential overflows."""
    if not math.isfinite(loss):
        return None
    try:
        return math.exp(loss)
    except OverflowError:
        return None


def make_init(cfg: TrainConfig, tx: optax.GradientTransformation, seed: int) -> Any:
    def init() -> State:
        params = nnx.to_pure_dict(nnx.state(init_model(cfg.model, seed), nnx.Param))
        return {"params": params, "opt": tx.init(params), "step": jnp.zeros((), jnp.int32)}

    return init


class Trainer:
    """The pieces of one run that the loop and the benchmarks share."""

    def __init__(self, opts: RunOptions) -> None:
        self.opts = opts
        cfg = opts.config
        self.process = jax.process_index()
        self.processes = jax.process_count()
        self.mesh = state.make_mesh(opts.fsdp)
        if cfg.global_batch_size % jax.device_count():
            raise RunError(
                f"global batch {cfg.global_batch_size} does not split over the run's "
                f"{jax.device_count()} devices; fix: use a multiple of {jax.device_count()}"
            )
        self.tx, self.schedule = make_optimizer(cfg)
        self.graphdef, _ = nnx.split(abstract_model(cfg.model))
        init = make_init(cfg, self.tx, opts.seed)
        self.abstract = jax.eval_shape(init)
        self.shardings = state.state_shardings(self.abstract, self.mesh)
        self.batch_sharding = state.batch_sharding(self.mesh)
        self._init = jax.jit(init, out_shardings=self.shardings)
        self.train_step = make_train_step(
            self.graphdef, self.tx, self.shardings, self.batch_sharding
        )
        self.tokens_per_step = cfg.global_batch_size * cfg.model.seq_len
        self.peak = peak_flops(jax.devices()[0].device_kind, cfg.model.dtype)

    def init_state(self) -> State:
        return self._init()

    def global_batch(self, local: np.ndarray) -> jax.Array:
        return jax.make_array_from_process_local_data(self.batch_sharding, local)

    def target(self) -> checkpoint.Target:
        """Name -> (shape, dtype) of the flat host state that checkpoints hold."""
        return {
            name: (tuple(x.shape), np.dtype(x.dtype))
            for name, x in state.flatten(self.abstract).items()
        }

    def place(self, host: checkpoint.HostState) -> State:
        """A restored flat host state, on the devices."""
        return state.to_devices(state.unflatten(host, self.abstract), self.shardings)

    def restore(self, ckpt: checkpoint.Checkpoints, step: int) -> State:
        """Committed `step`, checked and on the devices (the processes other than 0, which
        restore the step process 0 picked and already reported on)."""
        return self.place(ckpt.restore(step, self.target()))

    def mfu(self, tokens_per_s: float) -> float | None:
        flops = self.opts.config.model.flops_per_token()
        return mfu(flops, tokens_per_s, jax.device_count(), self.peak)


class Evaluator:
    """The held-out loss of the current parameters: the first `batches` global batches of a
    dataset, read in order and placed on the devices once (the same batches every time),
    each process holding its rows as in training. Every process calls it at the same step:
    it is a collective."""

    def __init__(self, trainer: Trainer, url: str, batches: int, cache_dir: Path) -> None:
        cfg = trainer.opts.config
        with Loader(
            url,
            seq_len=cfg.model.seq_len,
            global_batch_size=cfg.global_batch_size,
            process_index=trainer.process,
            process_count=trainer.processes,
            shuffle=False,
            cache_dir=cache_dir,
        ) as loader:
            self.batches = [trainer.global_batch(loader.batch(i)) for i in range(batches)]
        self.tokens = batches * trainer.tokens_per_step
        # Compiled now (ahead of time, from the parameters' shapes), so that the first
        # evaluation inside the loop costs what the others do.
        self._step = (
            make_eval_step(trainer.graphdef, trainer.shardings["params"], trainer.batch_sharding)
            .lower(trainer.abstract["params"], self.batches[0])
            .compile()
        )

    def loss(self, params: Any) -> float:
        """The mean loss over the batches: every batch is dispatched before the first result
        is read, so the device runs them back to back."""
        losses = [self._step(params, batch) for batch in self.batches]
        return sum(float(loss) for loss in losses) / len(losses)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


class NonFiniteError(RunError):
    """The loss or gradient norm stayed non-finite for more steps than the patience."""


class NonFiniteGuard:
    """Counts consecutive steps whose loss or gradient norm is not finite; raises
    NonFiniteError once there are more than `patience` in a row.

    `push` checks the step before the one just dispatched, whose result is (nearly) ready,
    so the loop never waits on the device for it; `flush` checks the newest step, and the
    loop calls it before anything is saved or exported, so a non-finite step is never
    committed or exported."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.run = 0
        self._pending: tuple[int, dict[str, jax.Array]] | None = None

    def push(self, step: int, metrics: dict[str, jax.Array]) -> None:
        previous, self._pending = self._pending, (step, metrics)
        if previous is not None:
            self._check(*previous)

    def flush(self) -> None:
        previous, self._pending = self._pending, None
        if previous is not None:
            self._check(*previous)

    def _check(self, step: int, metrics: dict[str, jax.Array]) -> None:
        if bool(metrics["finite"]):
            self.run = 0
            return
        self.run += 1
        loss, grad_norm = float(metrics["loss"]), float(metrics["grad_norm"])
        if self.run <= self.patience:
            _warn(
                f"step {step}: loss {loss}, gradient norm {grad_norm}: skipped "
                f"({self.run} in a row, --non-finite-patience {self.patience})"
            )
            return
        raise NonFiniteError(
            f"step {step}: loss {loss}, gradient norm {grad_norm}, non-finite {self.run} "
            f"step(s) in a row (--non-finite-patience {self.patience}); stopped before "
            "committing or exporting it; fix: check the data and the newest checkpoint, lower "
            "the learning rate, or raise --non-finite-patience to skip such steps"
        )


def _agreed(value: int, distributed: bool) -> int:
    """Process 0's value on every process."""
    if not distributed:
        return value
    return int(multihost_utils.broadcast_one_to_all(np.int64(value)))


class _Window:
    """Throughput over the steps since the last log line (the first step, which compiles,
    is timed on its own)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.steps = 0
        self.compiled = False

    def reset(self) -> float:
        now = time.perf_counter()
        elapsed, self.start, self.steps = now - self.start, now, 0
        return elapsed


class _Run:
    """One call of `train_and_evaluate` on one process."""

    def __init__(self, opts: RunOptions, log: MetricsLog | None) -> None:
        self.opts = opts
        self.trainer = Trainer(opts)
        self.distributed = self.trainer.processes > 1
        self.primary = self.trainer.process == 0
        self.log = log or MetricsLog(enabled=self.primary)
        self.ckpt = checkpoint.Checkpoints(
            open_store(opts.checkpoint_url),
            opts.workdir / "checkpoints",
            keep=opts.keep_checkpoints,
            process_index=self.trainer.process,
        )
        self.models = open_store(opts.model_url) if opts.model_url else None
        self.last_metrics: dict[str, Any] = {}
        self.guard = NonFiniteGuard(opts.non_finite_patience)
        self._evaluator: Evaluator | None = None
        self.last_eval: dict[str, Any] | None = None
        self.current: State = {}
        self.result = RunResult(start_step=0, final_step=0)

    def start(self) -> int:
        """Restore the newest intact committed checkpoint or initialize; the step to start
        from. Process 0 picks the step (falling back past damaged ones), the others restore
        the step it picked."""
        cfg, trainer = self.opts.config, self.trainer
        restored: tuple[int, checkpoint.HostState] | None = None
        clock = time.perf_counter()
        if self.primary:
            restored = self.ckpt.restore_newest(trainer.target(), _warn)
        start = _agreed(-1 if restored is None else restored[0], self.distributed)
        self.log(
            "start",
            config=cfg.name,
            model=asdict(cfg.model),
            params=param_count(trainer.abstract["params"]),
            global_batch_size=cfg.global_batch_size,
            steps=self.opts.steps,
            processes=trainer.processes,
            devices=jax.device_count(),
            device_kind=jax.devices()[0].device_kind,
            mesh=dict(trainer.mesh.shape),
            data=self.opts.data_url,
            checkpoints=self.opts.checkpoint_url,
            resume_from=None if start < 0 else start,
        )
        if start < 0:
            self.current = trainer.init_state()
            start = 0
        else:
            if restored is None:
                self.current = trainer.restore(self.ckpt, start)
            else:
                self.current = trainer.place(restored[1])
            self.log("restored", step=start, seconds=round(time.perf_counter() - clock, 3))
        self.result = RunResult(start_step=start, final_step=start)
        if self.opts.eval_data_url is not None and start < self.opts.steps:
            # The eval batches are read and placed, and the eval step compiled, at start-up
            # with the rest, not in the middle of the loop.
            clock = time.perf_counter()
            self._evaluator = self._make_evaluator(self.opts.eval_data_url)
            self.log("eval_ready", seconds=round(time.perf_counter() - clock, 3))
        return start

    def _make_evaluator(self, url: str) -> Evaluator:
        opts = self.opts
        return Evaluator(self.trainer, url, opts.eval_batches, opts.workdir / "eval-data")

    def save(self, step: int, host: State | None = None) -> None:
        self.guard.flush()
        t = time.perf_counter()
        host = host if host is not None else state.to_host(self.current)
        self.ckpt.save(step, state.flatten(host))
        self.log("checkpoint", step=step, blocked_s=round(time.perf_counter() - t, 3))

    def evaluate(self, step: int) -> None:
        """Log the held-out loss at `step` (every process calls it: a collective)."""
        opts = self.opts
        if opts.eval_data_url is None:
            return
        self.guard.flush()
        if self._evaluator is None:
            self._evaluator = self._make_evaluator(opts.eval_data_url)
        loss = self._evaluator.loss(self.current["params"])
        finite = math.isfinite(loss)
        record: dict[str, Any] = {
            "step": step,
            "split": "test",
            # JSON has no NaN: a non-finite loss is null, flagged, and warned about.
            "loss": round(loss, 5) if finite else None,
            "perplexity": perplexity(loss),
            "tokens": self._evaluator.tokens,
        }
        if not finite:
            record["non_finite"] = str(loss)
            if self.primary:
                _warn(f"step {step}: the eval loss on {opts.eval_data_url} is {loss}")
        self.last_eval = record
        self.result.evals.append(record)
        self.log("eval", **record)

    def _final_version(self) -> str:
        return export.bundle_version(self.opts.steps, self.opts.version)

    def _lineage(self, version: str, step: int) -> dict[str, Any]:
        opts = self.opts
        training = {
            **asdict(opts.config),
            "steps": opts.steps,
            "seed": opts.seed,
            "fsdp": opts.fsdp,
            "processes": self.trainer.processes,
            "eval_every": opts.eval_every,
            "eval_batches": opts.eval_batches,
        }
        return export.lineage_record(
            version=version,
            dataset_url=opts.data_url,
            dataset_sha256=index_sha256(opts.data_url),
            eval_dataset_url=opts.eval_data_url,
            eval_dataset_sha256=index_sha256(opts.eval_data_url) if opts.eval_data_url else None,
            training=training,
            checkpoint_step=step,
            checkpoint_url=self.opts.checkpoint_url,
            provenance=opts.provenance,
        )

    def export(self, step: int, host_params: Any | None = None) -> None:
        if self.models is None:
            return
        self.guard.flush()
        params = host_params if host_params is not None else state.to_host(self.current["params"])
        if self.primary:
            name = export.bundle_version(step, self.opts.version, final=step == self.opts.steps)
            metrics = dict(self.last_metrics)
            if self.last_eval is not None:
                metrics["eval"] = self.last_eval
            version = export.export_bundle(
                self.models,
                self.opts.workdir / "export",
                step=step,
                params=state.flatten(params),
                config=self.opts.config,
                metrics=metrics,
                dataset_url=self.opts.data_url,
                version=name,
                lineage=self._lineage(name, step),
            )
            self.result.exported = version
            self.log(
                "export", step=step, version=version, url=self.models.url(f"versions/{version}")
            )

    def record(self, step: int, metrics: dict[str, jax.Array], window: _Window) -> None:
        loss = float(metrics["loss"])
        steps = window.steps
        elapsed = window.reset()
        tokens_per_s = steps * self.trainer.tokens_per_step / elapsed if steps else 0.0
        self.last_metrics = {
            "step": step,
            "loss": round(loss, 5),
            "grad_norm": round(float(metrics["grad_norm"]), 5),
            "learning_rate": float(np.asarray(self.trainer.schedule(step - 1))),
            "tokens_per_s": round(tokens_per_s, 1),
            "step_time_s": round(elapsed / steps, 5) if steps else None,
            "mfu": self.trainer.mfu(tokens_per_s) if steps else None,
        }
        self.result.losses.append((step, loss))
        self.log("train", **self.last_metrics)

    def loop(self, start: int, preemption: Preemption) -> int:
        """Train from `start`; the last step done. Stops early when preempted."""
        opts, trainer = self.opts, self.trainer
        cfg = opts.config
        step = start
        loader = Loader(
            opts.data_url,
            seq_len=cfg.model.seq_len,
            global_batch_size=cfg.global_batch_size,
            process_index=trainer.process,
            process_count=trainer.processes,
            seed=opts.seed,
            cache_dir=opts.workdir / "data",
        )
        window = _Window()
        with loader:
            for index, local in loader.iterate(start):
                if index >= opts.steps:
                    break
                self.current, metrics = trainer.train_step(
                    self.current, trainer.global_batch(local)
                )
                step = index + 1
                window.steps += 1
                self.guard.push(step, metrics)
                if not window.compiled:
                    float(metrics["loss"])
                    self.log("compiled", step=step, seconds=round(window.reset(), 3))
                    window.compiled = True
                if step % opts.log_every == 0 or step == opts.steps:
                    self.record(step, metrics, window)
                if opts.eval_every and step % opts.eval_every == 0:
                    self.evaluate(step)
                if preemption.reached(step):
                    self.result.preempted = True
                    return step
                if step % opts.checkpoint_every == 0 and step < opts.steps:
                    self.save(step)
                if opts.export_every and step % opts.export_every == 0 and step < opts.steps:
                    self.export(step)
        return step

    def _exported(self, step: int) -> bool:
        """Whether the final export is already there (a run restarted after it finished)."""
        assert self.models is not None
        if self.opts.version is None:
            return export.latest_version(self.models) == export.bundle_version(step)
        # A named version: `latest` may have moved on (another candidate of the pipeline
        # exports to the same model), so look for the version itself.
        return self.models.exists(f"versions/{self._final_version()}/{export.MANIFEST}")

    def finish(self, step: int) -> None:
        """Commit the last step (and export it, unless preempted)."""
        self.result.final_step = step
        self.guard.flush()
        host = state.to_host(self.current)
        if step > self.result.start_step or self.ckpt.latest_step() != step:
            self.save(step, host)
        self.result.committed_step = self.ckpt.wait()
        if self.result.preempted:
            self.log("preempted", step=step, committed=self.result.committed_step)
            return
        if self.last_eval is None or self.last_eval["step"] != step:
            self.evaluate(step)
        if self.models is not None and not self._exported(step):
            self.export(step, host["params"])
        self.log(
            "done", step=step, committed=self.result.committed_step, exported=self.result.exported
        )


def train_and_evaluate(opts: RunOptions, log: MetricsLog | None = None) -> RunResult:
    """Train to `opts.steps`, resuming from the newest committed checkpoint; export at the end.

    A preemption (SIGTERM) stops every process at one agreed step, which is then committed;
    the result says `preempted` and the caller exits non-zero so the JobSet restarts it.
    """
    run = _Run(opts, log)
    preemption = Preemption(run.distributed)
    try:
        start = run.start()
        step = run.loop(start, preemption) if start < opts.steps else start
        run.finish(step)
    finally:
        preemption.close()
        run.ckpt.close()
    if run.distributed:
        # Nobody leaves before process 0 has committed and exported. Only after a run that
        # finished: a process that failed skips it and exits with its error at once, since its
        # peers may be waiting in another collective (a step's) that it will never join, and a
        # barrier there would hold every process forever.
        multihost_utils.sync_global_devices("mlstack-train-exit")
    return run.result
