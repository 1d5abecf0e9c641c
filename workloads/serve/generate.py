"""Continuous batching with a KV cache, compiled ahead of time for a fixed set of shapes.

Rows decode together in a `Batch`: a fixed number of slots on the device, each holding one
request's KV cache, its next-token logits and its settings. A request joins a running batch
between decode calls (`Batch.admit`: a prefill of its prompt, then its cache is written into a
free slot) and leaves it when it ends, so a slot freed by a finished request takes the next
one at once instead of waiting for the whole batch to end. A decode call runs up to
`steps_per_call` steps inside one executable (`lax.while_loop`) and returns early when a row
ends, so the host syncs about once per finished request, not once per token.

Shapes come from `Buckets`: batch buckets (slots in a batch, rows in an admission), length
buckets (prompt tokens, right-padded) and one new-token bound. The batch lives at the
smallest batch bucket that holds its highest busy slot (a new row takes the lowest free slot,
so that is at most the number of rows running at once): one request decodes in a batch of one.
`Generator.compile` lowers and compiles every executable: a prefill per (rows, length) pair, a
decode per batch size, an empty batch per size, and an insert per (rows, batch size) pair that
also moves a batch to another size; serving only calls them, so it never traces or compiles.

A row's result depends on its own prompt, settings and seed only: its keys and values sit in
its slot's cache at the slots of their positions (counted from its first token) and every
query attends over the whole cache (`Transformer.forward_cached`), so neither padding nor the
other rows enter what it computes, and its random numbers come from a key made from its seed
and its own token count. What remains is floating-point rounding: executables of other shapes
may round a logit differently in its last bits, which changes a greedy or Gumbel-max pick only
at a near-exact tie (about one token in a million).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mlstack.workloads.train import state
from mlstack.workloads.train.configs import EOS_ID, TOKENIZER_VOCAB, ModelConfig
from mlstack.workloads.train.model import LayerCache, abstract_model

#: The shortest length bucket: prompts are padded to at least this many tokens.
MIN_LENGTH_BUCKET = 16


class BundleMismatchError(ValueError):
    """A bundle's parameters do not fit its own model config."""


@dataclass(frozen=True)
class Buckets:
    """The shapes that are compiled: batch sizes, prompt lengths, and the new-token bound."""

    batch: tuple[int, ...]
    length: tuple[int, ...]
    new_tokens: int

    def batch_for(self, rows: int) -> int:
        return _smallest_at_least(self.batch, rows, "rows")

    def length_for(self, tokens: int) -> int:
        return _smallest_at_least(self.length, tokens, "prompt tokens")


def _smallest_at_least(buckets: tuple[int, ...], n: int, what: str) -> int:
    for bucket in buckets:
        if bucket >= n:
            return bucket
    raise ValueError(f"{n} {what} is more than the largest bucket, {buckets[-1]}")


def _powers_of_two(start: int, stop: int) -> list[int]:
    """start, 2*start, ... below `stop`, then `stop` itself."""
    values = []
    value = start
    while value < stop:
        values.append(value)
        value *= 2
    return [*values, stop]


def make_buckets(
    cfg: ModelConfig,
    *,
    max_batch: int,
    max_new_tokens: int,
    length_buckets: Sequence[int] | None = None,
) -> Buckets:
    """Batch buckets 1, 2, 4, ... up to `max_batch`; length buckets 16, 32, ... up to the
    context (or `length_buckets`, with the context added as the last); a new-token bucket of
    `max_new_tokens`, at most the context less one prompt token."""
    if max_batch < 1:
        raise ValueError(f"max batch {max_batch} must be at least 1")
    context = cfg.seq_len
    if length_buckets:
        lengths = sorted({n for n in length_buckets if 0 < n < context} | {context})
    else:
        lengths = _powers_of_two(min(MIN_LENGTH_BUCKET, context), context)
    return Buckets(
        batch=tuple(_powers_of_two(1, max_batch)),
        length=tuple(lengths),
        new_tokens=max(1, min(max_new_tokens, context - 1)),
    )


@dataclass(frozen=True)
class Row:
    """One request as the device sees it."""

    #: Prompt token ids: at least one, and with `max_new`, at most the context length.
    prompt: np.ndarray
    max_new: int
    #: 0 picks the most likely token.
    temperature: float
    #: Sample among the k most likely tokens; 0 for all.
    top_k: int
    #: 0 <= seed < 2**32.
    seed: int


def _sortable(x: jax.Array) -> jax.Array:
    """float32 -> uint32 keys in the same order (negative floats' bits flipped, positive ones'
    sign bit set)."""
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(0x80000000))


def _top_k_keep(logits: jax.Array, top_k: jax.Array) -> jax.Array:
    """Which logits are among their row's top_k largest (all where top_k is 0; ties with the
    k-th are kept). The k-th largest comes from a bisection over the logits' sortable bits:
    exact, and far cheaper on XLA's CPU backend than a sort or top-k of the vocabulary, which
    also compile slowly."""
    vocab = logits.shape[-1]
    k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab)
    keys = _sortable(logits)

    def halve(_: int, bounds: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        # Invariant: at least k keys are >= low, and the k-th largest is <= high.
        low, high = bounds
        mid = low + (high - low) // 2 + ((high - low) & 1)
        enough = jnp.sum(keys >= mid[:, None], axis=-1) >= k
        return jnp.where(enough, mid, low), jnp.where(enough, high, mid - 1)

    kth, _ = jax.lax.fori_loop(0, 32, halve, (keys.min(axis=-1), keys.max(axis=-1)))
    return keys >= kth[:, None]


def _greedy(logits: jax.Array) -> jax.Array:
    """The first index of each row's largest logit (a max and a min: XLA's CPU argmax, a
    variadic reduction, is about 3x slower)."""
    ids = jnp.arange(logits.shape[-1])
    best = jnp.max(logits, axis=-1, keepdims=True)
    return jnp.min(jnp.where(logits == best, ids, logits.shape[-1]), axis=-1)


def _uniforms(keys: jax.Array, vocab: int) -> jax.Array:
    """[rows, vocab] uniforms in (0, 1): one threefry draw per row, spread over the ids by an
    integer hash (Wellons' lowbias32 of draw + id * golden ratio). A threefry draw per id costs
    about 5x more on XLA's CPU backend; the hash is plenty for sampling."""
    bits = jax.vmap(lambda key: jax.random.bits(key, (), jnp.uint32))(keys)
    x = bits[:, None] + jnp.arange(vocab, dtype=jnp.uint32)[None, :] * jnp.uint32(0x9E3779B9)
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    x = x ^ (x >> 16)
    return ((x >> 8).astype(jnp.float32) + 0.5) * 2.0**-24


def _sample(logits: jax.Array, temperature: jax.Array, keys: jax.Array) -> jax.Array:
    """One token per row drawn from softmax(logits / temperature): the Gumbel-max trick.
    Rounding noise in the logits (another batch size compiles to other kernels) changes the
    pick only when the two best perturbed scores are within it, about one token in a million;
    inverting the cumulative distribution flips at any of the vocabulary's boundaries, a
    hundred times as often."""
    scaled = logits / jnp.where(temperature > 0, temperature, 1.0)[:, None]
    return _greedy(scaled - jnp.log(-jnp.log(_uniforms(keys, logits.shape[-1]))))


def sample_tokens(
    logits: jax.Array, temperature: jax.Array, top_k: jax.Array, keys: jax.Array, count: jax.Array
) -> jax.Array:
    """The next token of each row from its logits [rows, vocab]: greedy where the temperature
    is 0, else sampled among its top_k (0: all) with its own key folded with its token count
    `count` [rows]. The top-k and sampling work runs only when some row asks for it."""
    vocab = logits.shape[-1]
    # The padded ids past the tokenizer's never occur in training; never produce them.
    logits = jnp.where(jnp.arange(vocab) < TOKENIZER_VOCAB, logits, -jnp.inf)
    logits = jax.lax.cond(
        jnp.any(top_k > 0),
        lambda: jnp.where(_top_k_keep(logits, top_k), logits, -jnp.inf),
        lambda: logits,
    )
    greedy = _greedy(logits)
    step_keys = jax.vmap(jax.random.fold_in)(keys, count)
    chosen = jax.lax.cond(
        jnp.any(temperature > 0),
        lambda: jnp.where(temperature > 0, _sample(logits, temperature, step_keys), greedy),
        lambda: greedy,
    )
    return chosen.astype(jnp.int32)


@dataclass(frozen=True)
class _Prompts:
    """Rows to admit: the prompts [n, P] and each row's settings [n] (host arrays going in,
    traced arrays inside, shapes when compiling)."""

    prompts: Any
    lengths: Any
    max_new: Any
    temperature: Any
    top_k: Any
    seeds: Any


@dataclass(frozen=True)
class _Slots:
    """A batch on the device: per slot [b, ...], its cache, the logits of its next token, its
    settings, how many tokens it has generated and whether it has ended (free slots have)."""

    cache: Any
    logits: Any
    lengths: Any
    count: Any
    max_new: Any
    temperature: Any
    top_k: Any
    seeds: Any
    done: Any


jax.tree_util.register_dataclass(_Prompts)
jax.tree_util.register_dataclass(_Slots)


def _rows_of(fill: Callable[[tuple[int, ...], Any], Any], cfg: ModelConfig, rows: int) -> _Slots:
    """A `_Slots` of `rows` slots whose leaves are `fill(shape, dtype)`: zeros, or shapes."""
    cache_shape = (rows, cfg.n_heads, cfg.seq_len, cfg.head_dim)
    dtype = jnp.dtype(cfg.dtype)
    row = (rows,)
    return _Slots(
        cache=[
            LayerCache(fill(cache_shape, dtype), fill(cache_shape, dtype))
            for _ in range(cfg.n_layers)
        ],
        logits=fill((rows, cfg.vocab_size), jnp.float32),
        lengths=fill(row, jnp.int32),
        count=fill(row, jnp.int32),
        max_new=fill(row, jnp.int32),
        temperature=fill(row, jnp.float32),
        top_k=fill(row, jnp.int32),
        seeds=fill(row, jnp.uint32),
        done=fill(row, jnp.bool_),
    )


def make_functions(graphdef: nnx.GraphDef[Any], cfg: ModelConfig, steps_per_call: int) -> dict:
    """The traced functions behind the executables: `prefill(params, prompts) -> slots`,
    `decode(params, slots, max_steps) -> (slots, tokens [b, steps_per_call], done [b])`,
    `empty(rows) -> slots` and `insert(slots, new, at) -> slots`."""
    context = cfg.seq_len

    def prefill(params: Any, inputs: _Prompts) -> _Slots:
        model = nnx.merge(graphdef, params)
        rows, prompt_len = inputs.prompts.shape
        positions = jnp.broadcast_to(jnp.arange(prompt_len), (rows, prompt_len))
        hidden, cache = model.forward_cached(
            inputs.prompts, positions, model.empty_cache(rows, context)
        )
        return _Slots(
            cache=cache,
            logits=model.head(hidden[jnp.arange(rows), inputs.lengths - 1]),
            lengths=inputs.lengths,
            count=jnp.zeros_like(inputs.lengths),
            max_new=inputs.max_new,
            temperature=inputs.temperature,
            top_k=inputs.top_k,
            seeds=inputs.seeds,
            # Padding rows (max_new 0) generate nothing.
            done=inputs.max_new < 1,
        )

    def decode(params: Any, slots: _Slots, max_steps: jax.Array) -> tuple[_Slots, Any, Any]:
        model = nnx.merge(graphdef, params)
        rows = slots.done.shape[0]
        keys = jax.vmap(jax.random.key)(slots.seeds)
        out = jnp.full((rows, steps_per_call), -1, jnp.int32)

        def more(carry: tuple[Any, ...]) -> jax.Array:
            step, slots, _, ended = carry
            return (step < max_steps) & ~ended & ~jnp.all(slots.done)

        # One token per step: pick it from the slot's logits, then run it through the model
        # (a row's last step's forward pass goes unused). Slots that have ended keep computing
        # (nobody reads their results); their positions are clipped to stay inside the cache.
        def step_fn(carry: tuple[Any, ...]) -> tuple[Any, ...]:
            step, s, out, _ = carry
            live = ~s.done
            token = sample_tokens(s.logits, s.temperature, s.top_k, keys, s.count)
            out = jax.lax.dynamic_update_index_in_dim(out, jnp.where(live, token, -1), step, axis=1)
            count = s.count + live.astype(jnp.int32)
            ended = live & ((token == EOS_ID) | (count >= s.max_new))
            position = jnp.minimum(s.lengths + s.count, context - 1)[:, None]
            hidden, cache = model.forward_cached(token[:, None], position, s.cache)
            s = replace(
                s, cache=cache, logits=model.head(hidden[:, 0]), count=count, done=s.done | ended
            )
            # A row that ended frees its slot: return, so that the host answers it and admits
            # the next request.
            return step + 1, s, out, jnp.any(ended)

        _, slots, out, _ = jax.lax.while_loop(
            more, step_fn, (jnp.int32(0), slots, out, jnp.bool_(False))
        )
        return slots, out, slots.done

    def empty(rows: int) -> _Slots:
        slots = _rows_of(jnp.zeros, cfg, rows)
        return replace(slots, lengths=jnp.ones_like(slots.lengths), done=~slots.done)

    def insert(slots: _Slots, new: _Slots, at: jax.Array) -> _Slots:
        # An index past the end (padding rows, or rows past a smaller batch) is dropped.
        return jax.tree.map(lambda s, x: s.at[at].set(x, mode="drop"), slots, new)

    return {"prefill": prefill, "decode": decode, "empty": empty, "insert": insert}


#: Decode steps per call at most: a call also returns as soon as a row ends.
DEFAULT_STEPS_PER_CALL = 8


class Generator:
    """One model config's executables for every bucket, and the batches that run on them."""

    def __init__(
        self, cfg: ModelConfig, buckets: Buckets, steps_per_call: int = DEFAULT_STEPS_PER_CALL
    ) -> None:
        self.cfg = cfg
        self.buckets = buckets
        self.steps_per_call = steps_per_call
        graphdef, abstract_params = nnx.split(abstract_model(cfg))
        self._like = nnx.to_pure_dict(abstract_params)
        fns = make_functions(graphdef, cfg, steps_per_call)
        self._jit = {
            "prefill": jax.jit(fns["prefill"]),
            "decode": jax.jit(fns["decode"], donate_argnums=1),
            "empty": jax.jit(fns["empty"], static_argnums=0),
            "insert": jax.jit(fns["insert"], donate_argnums=0),
        }
        self._compiled: dict[tuple[str, int, int], Any] = {}
        self._lock = threading.Lock()

    @property
    def max_batch(self) -> int:
        return self.buckets.batch[-1]

    def executables(self) -> list[tuple[str, int, int]]:
        """(kind, a, b) of every executable: ("prefill", rows, length), ("decode", rows, 0),
        ("empty", rows, 0), ("insert", rows, batch rows)."""
        batch, length = self.buckets.batch, self.buckets.length
        return [
            *(("prefill", n, p) for n in batch for p in length),
            *(("decode", b, 0) for b in batch),
            *(("empty", b, 0) for b in batch),
            *(("insert", n, b) for n in batch for b in batch),
        ]

    def compile(
        self,
        threads: int = 1,
        on_compiled: Callable[[str, float], None] | None = None,
    ) -> float:
        """Compile every executable not compiled yet, `threads` at once; the seconds it took.
        `on_compiled(name, seconds)` follows each one (name: "prefill 4x16", "decode 8", ...)."""
        start = time.perf_counter()
        with self._lock, ThreadPoolExecutor(max(1, threads)) as pool:
            pending = [key for key in self.executables() if key not in self._compiled]
            for key, (compiled, seconds) in zip(
                pending, pool.map(self._compile_one, pending), strict=True
            ):
                self._compiled[key] = compiled
                if on_compiled is not None:
                    on_compiled(executable_name(key), seconds)
        return time.perf_counter() - start

    def _compile_one(self, key: tuple[str, int, int]) -> tuple[Any, float]:
        start = time.perf_counter()
        kind, a, b = key
        params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), self._like)
        shapes = lambda rows: _rows_of(jax.ShapeDtypeStruct, self.cfg, rows)  # noqa: E731
        if kind == "prefill":
            rows = jax.ShapeDtypeStruct((a,), jnp.int32)
            prompts = _Prompts(
                prompts=jax.ShapeDtypeStruct((a, b), jnp.int32),
                lengths=rows,
                max_new=rows,
                temperature=jax.ShapeDtypeStruct((a,), jnp.float32),
                top_k=rows,
                seeds=jax.ShapeDtypeStruct((a,), jnp.uint32),
            )
            lowered = self._jit["prefill"].lower(params, prompts)
        elif kind == "decode":
            lowered = self._jit["decode"].lower(
                params, shapes(a), jax.ShapeDtypeStruct((), jnp.int32)
            )
        elif kind == "empty":
            lowered = self._jit["empty"].lower(a)
        else:
            at = jax.ShapeDtypeStruct((a,), jnp.int32)
            lowered = self._jit["insert"].lower(shapes(b), shapes(a), at)
        return lowered.compile(), time.perf_counter() - start

    def call(self, key: tuple[str, int, int], *args: Any) -> Any:
        """Run a compiled executable (a KeyError for one that `compile` did not make)."""
        return self._compiled[key](*args)

    def place(self, flat: dict[str, np.ndarray]) -> Any:
        """A bundle's flat parameters as the model's tree on the default device; raises
        BundleMismatchError when a name or shape differs from the config's."""
        try:
            tree = state.unflatten(flat, self._like)
        except KeyError as err:
            raise BundleMismatchError(
                f"the bundle's parameters do not fit its config: {err}"
            ) from None
        wanted = state.flatten(self._like)
        for name, value in state.flatten(tree).items():
            if tuple(value.shape) != tuple(wanted[name].shape):
                raise BundleMismatchError(
                    f"parameter {name} has shape {tuple(value.shape)}, its config says "
                    f"{tuple(wanted[name].shape)}"
                )
        return jax.device_put(jax.tree.map(lambda x: np.asarray(x, np.float32), tree))

    def batch(self, params: Any) -> Batch:
        """An empty batch on `params`."""
        return Batch(self, params)

    def run(self, params: Any, rows: Sequence[Row]) -> list[np.ndarray]:
        """Each row's generated tokens, all admitted at once and decoded to their ends: its
        first max_new, cut after an EOS. At most `max_batch` rows."""
        batch = self.batch(params)
        slots = batch.admit(rows)
        results: dict[int, np.ndarray] = {}
        while batch.active:
            results.update(batch.step())
        return [results[slot] for slot in slots]

    def warm_up(self, params: Any) -> None:
        """Run every executable once: each prefill, each insert (admissions and moves between
        sizes), and each decode with sampled top-k rows."""
        buckets = self.buckets
        for length in buckets.length:
            for rows in buckets.batch:
                self.batch(params).admit([Row(np.zeros(length, np.int32), 2, 1.0, 1, 0)] * rows)
        for rows in buckets.batch:
            for size in buckets.batch:
                batch = self.batch(params)
                batch.admit([Row(np.zeros(1, np.int32), 2, 1.0, 1, 0)] * rows)
                if size >= rows:
                    batch.resize(size)
                while batch.active:
                    batch.step()
                batch.resize(size)


def executable_name(key: tuple[str, int, int]) -> str:
    kind, a, b = key
    return f"{kind} {a}x{b}" if kind in ("prefill", "insert") else f"{kind} {a}"


class Batch:
    """Rows decoding together on one set of parameters: admit requests into free slots
    between steps, step, and collect the rows that ended. Used from one thread at a time."""

    def __init__(self, generator: Generator, params: Any) -> None:
        self.generator = generator
        self.params = params
        self._slots: _Slots | None = None
        self._size = 0
        #: Slot -> its row and the tokens it has generated so far.
        self._rows: dict[int, tuple[Row, list[np.ndarray]]] = {}

    @property
    def capacity(self) -> int:
        return self.generator.max_batch

    @property
    def active(self) -> int:
        """Rows running."""
        return len(self._rows)

    @property
    def rows(self) -> dict[int, Row]:
        """The running rows, by slot."""
        return {slot: row for slot, (row, _) in self._rows.items()}

    def partial(self) -> dict[int, np.ndarray]:
        """The tokens each running row has generated so far, by slot."""
        return {
            slot: np.concatenate(generated) if generated else np.zeros(0, np.int32)
            for slot, (_, generated) in self._rows.items()
        }

    @property
    def size(self) -> int:
        """Slots on the device now (a batch bucket; 0 before the first admission)."""
        return self._size

    def admit(self, rows: Sequence[Row]) -> list[int]:
        """Prefill `rows` and put them into the lowest free slots; their slots, which `step`
        names when they end. Raises ValueError past the capacity or the buckets."""
        if not rows:
            return []
        free = [slot for slot in range(self.capacity) if slot not in self._rows][: len(rows)]
        if len(free) < len(rows):
            raise ValueError(f"{len(rows)} rows do not fit in {self.capacity - self.active} slots")
        buckets = self.generator.buckets
        n = buckets.batch_for(len(rows))
        length = buckets.length_for(max(len(row.prompt) for row in rows))
        prompts = np.zeros((n, length), np.int32)
        lengths = np.ones(n, np.int32)
        max_new = np.zeros(n, np.int32)
        temperature = np.zeros(n, np.float32)
        top_k = np.zeros(n, np.int32)
        seeds = np.zeros(n, np.uint32)
        for i, row in enumerate(rows):
            prompts[i, : len(row.prompt)] = row.prompt
            lengths[i] = len(row.prompt)
            max_new[i] = row.max_new
            temperature[i] = row.temperature
            top_k[i] = row.top_k
            seeds[i] = row.seed
        self.resize(buckets.batch_for(max([*self._rows, *free]) + 1))
        new = self.generator.call(
            ("prefill", n, length),
            self.params,
            _Prompts(prompts, lengths, max_new, temperature, top_k, seeds),
        )
        at = np.full(n, self._size, np.int32)
        at[: len(free)] = free
        self._slots = self.generator.call(("insert", n, self._size), self._slots, new, at)
        for slot, row in zip(free, rows, strict=True):
            self._rows[slot] = (row, [])
        return free

    def resize(self, size: int) -> None:
        """Move the batch to `size` slots (a batch bucket holding every running row)."""
        if size == self._size:
            return
        if self._rows and max(self._rows) >= size:
            raise ValueError(f"slot {max(self._rows)} is running; a batch of {size} drops it")
        empty = self.generator.call(("empty", size, 0))
        if self._slots is not None:
            at = np.arange(self._size, dtype=np.int32)
            empty = self.generator.call(("insert", self._size, size), empty, self._slots, at)
        self._slots, self._size = empty, size

    def step(self, max_steps: int | None = None) -> dict[int, np.ndarray]:
        """Decode up to `max_steps` (default and at most `steps_per_call`) tokens for every
        running row, stopping early when one ends; the rows that ended, by slot: their first
        max_new tokens, cut after an EOS."""
        if not self._rows:
            return {}
        # The smallest batch that holds every running row.
        self.resize(self.generator.buckets.batch_for(max(self._rows) + 1))
        steps = min(max_steps or self.generator.steps_per_call, self.generator.steps_per_call)
        self._slots, out, done = self.generator.call(
            ("decode", self._size, 0), self.params, self._slots, np.int32(steps)
        )
        tokens, ended = np.asarray(out), np.asarray(done)
        finished = {}
        for slot, (_, generated) in list(self._rows.items()):
            row_tokens = tokens[slot]
            generated.append(row_tokens[row_tokens >= 0])
            if ended[slot]:
                finished[slot] = np.concatenate(generated)
                del self._rows[slot]
        return finished
