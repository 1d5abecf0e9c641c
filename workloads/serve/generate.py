"""Batched generation with a KV cache, compiled ahead of time for a fixed set of shapes.

One call generates for a batch of rows: a prefill of the right-padded prompts, then a decode
loop inside the same executable (`lax.while_loop`) that stops when every row has ended or the
new-token bucket is full, so the host syncs once per batch, not once per token.

Shapes come from `Buckets`: a batch bucket (rows, padded with rows that generate nothing), a
length bucket (prompt tokens, right-padded) and one new-token bucket (the most tokens a request
may ask for). `Generator.compile` lowers and compiles one executable per (batch, length) pair;
`Generator.run` only calls those executables, so serving never traces or compiles.

A row's result depends on its own prompt, settings and seed only: its keys and values sit in the
cache at the slots of their positions (counted from its first token) and every query attends
over the whole cache (`Transformer.forward_cached`), so neither padding nor the other rows enter
what it computes, and its random numbers come from a key made from its seed and the step. What
remains is floating-point rounding: executables of other shapes may round a logit differently
in its last bits, which changes a greedy or Gumbel-max pick only at a near-exact tie (about one
token in a million).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from workloads.train import state
from workloads.train.configs import EOS_ID, TOKENIZER_VOCAB, ModelConfig
from workloads.train.model import abstract_model

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

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return [(b, p) for b in self.batch for p in self.length]


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
    logits: jax.Array, temperature: jax.Array, top_k: jax.Array, keys: jax.Array, step: jax.Array
) -> jax.Array:
    """The next token of each row from its logits [rows, vocab]: greedy where the temperature
    is 0, else sampled among its top_k (0: all) with its own key folded with `step`. The top-k
    and sampling work runs only when some row of the batch asks for it."""
    vocab = logits.shape[-1]
    # The padded ids past the tokenizer's never occur in training; never produce them.
    logits = jnp.where(jnp.arange(vocab) < TOKENIZER_VOCAB, logits, -jnp.inf)
    logits = jax.lax.cond(
        jnp.any(top_k > 0),
        lambda: jnp.where(_top_k_keep(logits, top_k), logits, -jnp.inf),
        lambda: logits,
    )
    greedy = _greedy(logits)
    step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, step)
    chosen = jax.lax.cond(
        jnp.any(temperature > 0),
        lambda: jnp.where(temperature > 0, _sample(logits, temperature, step_keys), greedy),
        lambda: greedy,
    )
    return chosen.astype(jnp.int32)


@dataclass(frozen=True)
class _Inputs:
    """One batch: the prompts [B, P] and each row's settings [B] (host arrays going in,
    traced arrays inside, shapes when compiling)."""

    prompts: Any
    lengths: Any
    max_new: Any
    temperature: Any
    top_k: Any
    seeds: Any


jax.tree_util.register_dataclass(_Inputs)


def make_generate(graphdef: nnx.GraphDef[Any], cfg: ModelConfig, new_tokens: int) -> Callable:
    """generate(params, inputs) -> (tokens [B, new_tokens], steps): row b's first max_new[b]
    tokens are its output (an EOS, where it comes, ends it earlier); `steps` is how many
    tokens the loop produced for every row."""
    context = cfg.seq_len

    def generate(params: Any, inputs: _Inputs) -> tuple[jax.Array, jax.Array]:
        model = nnx.merge(graphdef, params)
        batch, prompt_len = inputs.prompts.shape
        keys = jax.vmap(jax.random.key)(inputs.seeds)
        positions = jnp.broadcast_to(jnp.arange(prompt_len), (batch, prompt_len))
        hidden, cache = model.forward_cached(
            inputs.prompts, positions, model.empty_cache(batch, context)
        )
        logits = model.head(hidden[jnp.arange(batch), inputs.lengths - 1])
        out = jnp.zeros((batch, new_tokens), jnp.int32)
        # Rows past the request's (batch padding) generate nothing.
        done = inputs.max_new < 1

        def more(carry: tuple[jax.Array, ...]) -> jax.Array:
            step, _, _, done, _ = carry
            return (step < new_tokens) & ~jnp.all(done)

        # One token per step: pick it from the last logits, then run it through the model
        # (the last step's forward pass goes unused; one shared sampler compiles faster than
        # a second copy for the prefill).
        def decode_step(carry: tuple[Any, ...]) -> tuple[Any, ...]:
            step, out, cache, done, logits = carry
            token = sample_tokens(logits, inputs.temperature, inputs.top_k, keys, step)
            out = jax.lax.dynamic_update_index_in_dim(out, token, step, axis=1)
            done = done | (token == EOS_ID) | (step + 1 >= inputs.max_new)
            # Rows that have ended keep computing (nobody reads their results); clip their
            # positions so that they stay inside the cache.
            position = jnp.minimum(inputs.lengths + step, context - 1)[:, None]
            hidden, cache = model.forward_cached(token[:, None], position, cache)
            return step + 1, out, cache, done, model.head(hidden[:, 0])

        steps, out, _, _, _ = jax.lax.while_loop(
            more, decode_step, (jnp.int32(0), out, cache, done, logits)
        )
        return out, steps

    return generate


class Generator:
    """One model config's generation executables, one per (batch, length) bucket."""

    def __init__(self, cfg: ModelConfig, buckets: Buckets) -> None:
        self.cfg = cfg
        self.buckets = buckets
        graphdef, abstract_params = nnx.split(abstract_model(cfg))
        self._like = nnx.to_pure_dict(abstract_params)
        self._fn = jax.jit(make_generate(graphdef, cfg, buckets.new_tokens))
        self._compiled: dict[tuple[int, int], Any] = {}
        self._lock = threading.Lock()

    @property
    def compiled(self) -> bool:
        return all(pair in self._compiled for pair in self.buckets.pairs)

    def compile(
        self,
        threads: int = 1,
        on_compiled: Callable[[tuple[int, int], float], None] | None = None,
    ) -> float:
        """Compile every bucket not compiled yet, `threads` at once; the seconds it took.
        `on_compiled((batch, length), seconds)` follows each one."""
        start = time.perf_counter()
        with self._lock, ThreadPoolExecutor(max(1, threads)) as pool:
            pending = [pair for pair in self.buckets.pairs if pair not in self._compiled]
            for pair, (compiled, seconds) in zip(
                pending, pool.map(self._compile_one, pending), strict=True
            ):
                self._compiled[pair] = compiled
                if on_compiled is not None:
                    on_compiled(pair, seconds)
        return time.perf_counter() - start

    def _compile_one(self, pair: tuple[int, int]) -> tuple[Any, float]:
        start = time.perf_counter()
        batch, length = pair
        params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), self._like)
        rows = jax.ShapeDtypeStruct((batch,), jnp.int32)
        inputs = _Inputs(
            prompts=jax.ShapeDtypeStruct((batch, length), jnp.int32),
            lengths=rows,
            max_new=rows,
            temperature=jax.ShapeDtypeStruct((batch,), jnp.float32),
            top_k=rows,
            seeds=jax.ShapeDtypeStruct((batch,), jnp.uint32),
        )
        compiled = self._fn.lower(params, inputs).compile()
        return compiled, time.perf_counter() - start

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

    def run(self, params: Any, rows: Sequence[Row]) -> list[np.ndarray]:
        """Each row's generated tokens: its first max_new, cut after an EOS. Only calls
        executables compiled by `compile` (a KeyError for a shape outside the buckets)."""
        batch = self.buckets.batch_for(len(rows))
        length = self.buckets.length_for(max(len(row.prompt) for row in rows))
        prompts = np.zeros((batch, length), np.int32)
        lengths = np.ones(batch, np.int32)
        max_new = np.zeros(batch, np.int32)
        temperature = np.zeros(batch, np.float32)
        top_k = np.zeros(batch, np.int32)
        seeds = np.zeros(batch, np.uint32)
        for i, row in enumerate(rows):
            prompts[i, : len(row.prompt)] = row.prompt
            lengths[i] = len(row.prompt)
            max_new[i] = row.max_new
            temperature[i] = row.temperature
            top_k[i] = row.top_k
            seeds[i] = row.seed
        inputs = _Inputs(prompts, lengths, max_new, temperature, top_k, seeds)
        out, _ = self._compiled[(batch, length)](params, inputs)
        tokens = np.asarray(out)
        results = []
        for i, row in enumerate(rows):
            generated = tokens[i, : row.max_new]
            ends = np.flatnonzero(generated == EOS_ID)
            results.append(generated[: ends[0] + 1] if ends.size else generated)
        return results

    def warm_up(self, params: Any) -> None:
        """Run every executable once, on full buckets with a decode step and top-k sampling."""
        for batch, length in self.buckets.pairs:
            row = Row(np.zeros(length, np.int32), 2, 1.0, 1, 0)
            self.run(params, [row] * batch)
