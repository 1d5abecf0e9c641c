"""The model the server answers with: loaded from the models bucket, compiled and warmed up for
every bucket before it serves, and replaced by a newer bundle without a pause.

`Engine.start` loads in a background thread: the newest bundle (`latest`), the pinned version,
or the version a registry alias names (`aliases/<NAME>.json`, field "version"), then compiles
the executables of every batch and length bucket and runs each once; only then does `ready`
turn true. The same thread then checks for a newer bundle every `reload_interval_s` seconds and
whenever `request_reload` is called (SIGHUP): it loads and warms the new one while the old one
keeps serving, then swaps them in one assignment. A batch (`EngineSession`) belongs to the
model it started on: the batcher stops admitting to it once a newer model is served, so
requests in flight finish on the model they started with. A bundle with the same model config
reuses the compiled executables (only its parameters change, and the warm-up runs them once
with the new ones); a new config compiles its own set first.

An alias is read again at every check, so the server follows it when it moves; until it
exists the server is not ready (the log and /readyz say which alias is missing and how to make
it), and a corrupt alias file is logged with its URL while the served model stays.

Loading failures (the store is unreachable, no bundle yet, a broken bundle, one with a NaN or
an infinity in its parameters, which `read_bundle` refuses) are logged and retried at the next
check; a server that has a model keeps serving it, and one without never becomes ready.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlstack.workloads.serve.generate import Buckets, Generator, Row, make_buckets
from mlstack.workloads.serve.metrics import EventLog
from mlstack.workloads.serve.protocol import (
    Completion,
    CompletionRequest,
    RequestError,
    check_fits,
    finish,
)
from mlstack.workloads.storage import NotFound, Store, open_store
from mlstack.workloads.train.configs import ModelConfig
from mlstack.workloads.train.export import VERSION_NAME, latest_version, read_bundle

#: Where the registry keeps its aliases, under the model URL (`workloads.registry`).
ALIASES = "aliases/"


def alias_key(alias: str) -> str:
    return f"{ALIASES}{alias}.json"


@dataclass(frozen=True)
class EngineOptions:
    """What to serve and the shapes to compile for it."""

    model_url: str
    #: Serve this version only (a canary's); None follows `latest` (or the alias).
    model_version: str | None = None
    #: Follow this registry alias (exclusive with model_version).
    model_alias: str | None = None
    max_batch: int = 32
    #: The most tokens one request may ask for (capped at the context less one).
    max_tokens_limit: int = 256
    #: Prompt length buckets; None: 16, 32, 64, ... up to the context.
    length_buckets: tuple[int, ...] | None = None
    #: Seconds between checks for a newer bundle (and between retries of a failed load).
    reload_interval_s: float = 60.0
    #: Buckets compiled at once (XLA's compiler is single-threaded per executable).
    compile_threads: int = 2


@dataclass(frozen=True)
class LoadedModel:
    """One bundle, on the device and compiled for every bucket."""

    version: str
    config: ModelConfig
    generator: Generator
    params: Any
    manifest: dict[str, Any] = field(repr=False)

    @property
    def context(self) -> int:
        return self.config.seq_len

    @property
    def max_tokens(self) -> int:
        return self.generator.buckets.new_tokens


_GENERATORS: dict[tuple[ModelConfig, Buckets], Generator] = {}
_GENERATORS_LOCK = threading.Lock()


def shared_generator(config: ModelConfig, buckets: Buckets) -> Generator:
    """The process's generator for a model config and buckets: engines (a reload to a bundle
    of the same config, several servers in one process) share its compiled executables. One
    entry per (config, buckets) ever served: a handful."""
    with _GENERATORS_LOCK:
        key = (config, buckets)
        if key not in _GENERATORS:
            _GENERATORS[key] = Generator(config, buckets)
        return _GENERATORS[key]


class Engine:
    """The current model, its loader thread, and batched completion on it."""

    def __init__(self, options: EngineOptions, log: EventLog | None = None) -> None:
        self.options = options
        self.log = log or EventLog()
        self.store: Store = open_store(options.model_url)
        self._current: LoadedModel | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._staging = Path(tempfile.mkdtemp(prefix="mlstack-serve-"))
        self._lock = threading.Lock()
        #: The last load failure, for readiness messages; None after a success.
        self.last_error: str | None = None
        self.reloads = 0

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    @property
    def ready(self) -> bool:
        return self._current is not None

    def start(self) -> None:
        """Load, compile and warm up in the background, then watch for newer bundles."""
        self._thread = threading.Thread(target=self._run, name="mlstack-engine", daemon=True)
        self._thread.start()

    def request_reload(self) -> None:
        """Check for a newer bundle now (SIGHUP)."""
        self._wake.set()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop watching for bundles; a load in progress gets `timeout_s` to finish."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        shutil.rmtree(self._staging, ignore_errors=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check_for_update()
            self._wake.wait(self.options.reload_interval_s)
            self._wake.clear()

    def check_for_update(self) -> bool:
        """Load the wanted version if it is not the one served; whether a model was swapped
        in. Failures are logged, kept in `last_error`, and return False."""
        with self._lock:
            try:
                return self._update()
            except Exception as err:  # Any failure leaves the served model as it is.
                self.last_error = f"{type(err).__name__}: {err}".splitlines()[0]
                self.log("load_failed", url=self.store.url(), error=self.last_error)
                return False

    def _wanted(self) -> tuple[str | None, str]:
        """The version to serve now, or None and why there is none (for the log)."""
        if self.options.model_version:
            return self.options.model_version, ""
        if self.options.model_alias:
            return self._alias_version(self.options.model_alias)
        return latest_version(self.store), "no bundle exported yet"

    def _alias_version(self, alias: str) -> tuple[str | None, str]:
        """The version `aliases/<alias>.json` names (written by the registry); None while it
        does not exist. ValueError, naming the file, when it is not an alias."""
        key = alias_key(alias)
        try:
            raw = self.store.get_bytes(key)
        except NotFound:
            return None, (
                f"alias {alias!r} does not exist ({self.store.url(key)}); fix: move it to a "
                "version with `mlstack models promote` (or a pipeline's promote step)"
            )
        try:
            version = json.loads(raw)["version"]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"{self.store.url(key)} is not an alias file ({type(err).__name__}: {err}); "
                "the served model stays; fix: move the alias again with `mlstack models promote`"
            ) from None
        if not isinstance(version, str) or not VERSION_NAME.fullmatch(version):
            raise ValueError(
                f"{self.store.url(key)} names no valid version ({version!r}); the served model "
                "stays; fix: move the alias again with `mlstack models promote`"
            )
        return version, ""

    def _update(self) -> bool:
        wanted, why = self._wanted()
        if wanted is None:
            if self.last_error is None:
                self.log("waiting", url=self.store.url(), reason=why)
            self.last_error = (
                why if self.options.model_alias else f"no bundle at {self.store.url()} yet"
            )
            return False
        current = self._current
        if current is not None and current.version == wanted:
            self.last_error = None
            return False
        model = self._load(wanted)
        self._current = model
        self.last_error = None
        if current is not None:
            self.reloads += 1
            extra = {"alias": self.options.model_alias} if self.options.model_alias else {}
            self.log("reloaded", version=model.version, previous=current.version, **extra)
        return True

    def _load(self, version: str) -> LoadedModel:
        start = time.perf_counter()
        try:
            manifest, config, flat = read_bundle(self.store, version, self._staging)
        except NotFound:
            raise NotFound(
                f"no bundle {version} at {self.store.url()}; export one or pin another version"
            ) from None
        generator = shared_generator(config, self.buckets_for(config))
        params = generator.place(flat)
        self.log(
            "loaded",
            version=version,
            url=self.store.url(f"versions/{version}"),
            model=_describe(config),
            seconds=round(time.perf_counter() - start, 3),
        )
        start = time.perf_counter()
        total = len(generator.executables())
        done = 0

        def on_compiled(executable: str, seconds: float) -> None:
            nonlocal done
            done += 1
            self.log(
                "compiled",
                executable=executable,
                seconds=round(seconds, 3),
                done=done,
                total=total,
            )

        compiled = generator.compile(self.options.compile_threads, on_compiled)
        generator.warm_up(params)
        self.log(
            "warmed",
            version=version,
            buckets={
                "batch": list(generator.buckets.batch),
                "length": list(generator.buckets.length),
                "new_tokens": generator.buckets.new_tokens,
            },
            compile_seconds=round(compiled, 3),
            seconds=round(time.perf_counter() - start, 3),
        )
        return LoadedModel(version, config, generator, params, manifest)

    def buckets_for(self, config: ModelConfig) -> Buckets:
        return make_buckets(
            config,
            max_batch=self.options.max_batch,
            max_new_tokens=self.options.max_tokens_limit,
            length_buckets=self.options.length_buckets,
        )

    def session(self) -> EngineSession:
        """A continuous batch on the model served now (see `batcher.Session`)."""
        model = self._current
        if model is None:
            raise RuntimeError("no model is loaded")
        return EngineSession(self, model)


class EngineSession:
    """Completion requests decoding together on one loaded model."""

    def __init__(self, engine: Engine, model: LoadedModel) -> None:
        self.engine = engine
        self.model = model
        self.batch = model.generator.batch(model.params)
        #: Slot -> (key, request) of the rows running.
        self._rows: dict[int, tuple[int, CompletionRequest]] = {}

    @property
    def current(self) -> bool:
        return self.engine.current is self.model

    def admit(
        self, items: Sequence[tuple[int, CompletionRequest]]
    ) -> dict[int, Completion | RequestError]:
        """Start the requests that fit this model; a RequestError for those that do not (a
        reload changed the context or the token limit since they were checked)."""
        model = self.model
        refused: dict[int, Completion | RequestError] = {}
        fitting: list[tuple[int, CompletionRequest]] = []
        for key, request in items:
            try:
                check_fits(request, model.context)
                if request.max_tokens > model.max_tokens:
                    raise RequestError(
                        422, f"max_tokens {request.max_tokens} is over {model.max_tokens}"
                    )
            except RequestError as err:
                refused[key] = err
            else:
                fitting.append((key, request))
        rows = [
            Row(
                prompt=request.prompt_ids,
                max_new=request.max_tokens,
                temperature=request.temperature,
                top_k=request.top_k,
                seed=request.seed,
            )
            for _, request in fitting
        ]
        for slot, item in zip(self.batch.admit(rows), fitting, strict=True):
            self._rows[slot] = item
        return refused

    def step(self) -> dict[int, Completion | RequestError]:
        """Decode for every running request; the completions of those that ended, by key."""
        answered: dict[int, Completion | RequestError] = {}
        for slot, tokens in self.batch.step().items():
            key, request = self._rows.pop(slot)
            answered[key] = finish(request, tokens, self.model.version)
        return answered


def _describe(config: ModelConfig) -> dict[str, Any]:
    return {
        "d_model": config.d_model,
        "n_layers": config.n_layers,
        "n_heads": config.n_heads,
        "seq_len": config.seq_len,
        "dtype": config.dtype,
        "params": config.num_params,
    }
