"""A byte-level decoder-only transformer in Flax NNX.

Pre-norm blocks (LayerNorm, causal multi-head attention, GELU MLP), learned positions, and an
output head tied to the token embedding. Parameters are float32; `ModelConfig.dtype` sets the
compute dtype (bfloat16 on GPUs), and the logits come back in float32 for the loss.

Serving runs the same modules through `Transformer.forward_cached`: each row's keys and values
live in a cache at the slot of their position (counted from the row's first token), and every
query attends over the whole cache with a mask, so neither the other rows of its batch nor its
own padding enter what a row computes.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from mlstack.workloads.train.configs import ModelConfig

_INIT_STD = 0.02


def _dense(d_in: int, d_out: int, cfg: ModelConfig, rngs: nnx.Rngs, std: float) -> nnx.Linear:
    return nnx.Linear(
        d_in,
        d_out,
        use_bias=False,
        dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.float32,
        kernel_init=nnx.initializers.normal(std),
        rngs=rngs,
    )


def _norm(cfg: ModelConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(
        cfg.d_model, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.float32, rngs=rngs
    )


def _attention(q: jax.Array) -> Literal["cudnn"] | None:
    """cuDNN's fused (flash) attention on GPUs in 16-bit: XLA's own keeps the [heads, length,
    length] scores of every layer for the backward pass (about 120 GiB for `medium`)."""
    if jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16):
        return "cudnn"
    return None


class LayerCache(NamedTuple):
    """One block's keys and values, [batch, heads, cache length, head dim]; slot = position."""

    keys: jax.Array
    values: jax.Array


def _cached_attention(q: jax.Array, cache: LayerCache, positions: jax.Array) -> jax.Array:
    """Queries [batch, length, heads, head dim] at `positions` [batch, length] over every cache
    slot at or before their own. Einsums in the cache's heads-first layout: XLA's CPU backend
    runs `jax.nn.dot_product_attention`'s transposes and grouped batch dots several times slower
    for one-token steps."""
    scores = jnp.einsum("blnh,bnsh->bnls", q, cache.keys, preferred_element_type=jnp.float32)
    scores = scores * q.shape[-1] ** -0.5
    slots = jnp.arange(cache.keys.shape[2])
    visible = slots[None, None, None, :] <= positions[:, None, :, None]
    weights = jax.nn.softmax(jnp.where(visible, scores, -jnp.inf), axis=-1)
    return jnp.einsum("bnls,bnsh->blnh", weights.astype(cache.values.dtype), cache.values)


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs) -> None:
        d, f = cfg.d_model, cfg.d_model * cfg.mlp_ratio
        # GPT-2's scaled init for the projections that write into the residual stream.
        out_std = _INIT_STD / (2 * cfg.n_layers) ** 0.5
        self.n_heads = cfg.n_heads
        self.attn_norm = _norm(cfg, rngs)
        self.qkv = _dense(d, 3 * d, cfg, rngs, _INIT_STD)
        self.attn_out = _dense(d, d, cfg, rngs, out_std)
        self.mlp_norm = _norm(cfg, rngs)
        self.mlp_in = _dense(d, f, cfg, rngs, _INIT_STD)
        self.mlp_out = _dense(f, d, cfg, rngs, out_std)

    def __call__(self, x: jax.Array) -> jax.Array:
        q, k, v = self._project(x)
        attn = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=_attention(q))
        return self._finish(x, attn)

    def forward_cached(
        self, x: jax.Array, positions: jax.Array, cache: LayerCache
    ) -> tuple[jax.Array, LayerCache]:
        """`x` [batch, length, d] at `positions` [batch, length]: writes their keys and values
        into `cache` at those slots, then attends over the cache."""
        q, k, v = self._project(x)
        # [rows, :, positions] indexes [batch, length, heads, head dim], the layout of k and v.
        rows = jnp.arange(x.shape[0])[:, None]
        cache = LayerCache(
            cache.keys.at[rows, :, positions].set(k.astype(cache.keys.dtype)),
            cache.values.at[rows, :, positions].set(v.astype(cache.values.dtype)),
        )
        return self._finish(x, _cached_attention(q, cache, positions)), cache

    def _project(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        batch, length, _ = x.shape
        qkv = self.qkv(self.attn_norm(x)).reshape(batch, length, 3, self.n_heads, -1)
        return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]

    def _finish(self, x: jax.Array, attn: jax.Array) -> jax.Array:
        batch, length, d = x.shape
        x = x + self.attn_out(attn.reshape(batch, length, d))
        return x + self.mlp_out(jax.nn.gelu(self.mlp_in(self.mlp_norm(x))))


class Transformer(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs) -> None:
        self.cfg = cfg
        self.embed = nnx.Embed(
            cfg.vocab_size,
            cfg.d_model,
            dtype=jnp.dtype(cfg.dtype),
            param_dtype=jnp.float32,
            embedding_init=nnx.initializers.normal(_INIT_STD),
            rngs=rngs,
        )
        self.pos = nnx.Param(
            nnx.initializers.normal(_INIT_STD)(rngs.params(), (cfg.seq_len, cfg.d_model))
        )
        self.blocks = nnx.List([Block(cfg, rngs) for _ in range(cfg.n_layers)])
        self.final_norm = _norm(cfg, rngs)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """Logits (float32) of the next token at each position of `tokens` [batch, length]."""
        length = tokens.shape[1]
        x = self.embed(tokens) + self.pos[:length].astype(self.cfg.dtype)
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x))

    def head(self, x: jax.Array) -> jax.Array:
        """Logits (float32) of final-normed hidden states."""
        return self.embed.attend(x).astype(jnp.float32)

    def empty_cache(self, batch: int, length: int) -> list[LayerCache]:
        """A zeroed cache of `length` slots per row, one per block, in the compute dtype."""
        cfg = self.cfg
        shape = (batch, cfg.n_heads, length, cfg.head_dim)
        zeros = lambda: jnp.zeros(shape, jnp.dtype(cfg.dtype))  # noqa: E731
        return [LayerCache(zeros(), zeros()) for _ in range(cfg.n_layers)]

    def forward_cached(
        self, tokens: jax.Array, positions: jax.Array, cache: list[LayerCache]
    ) -> tuple[jax.Array, list[LayerCache]]:
        """Final-normed hidden states of `tokens` [batch, length] at `positions` (counted from
        each row's first token, below the cache length), and the cache with their keys and
        values written in; `head` turns the states into logits."""
        x = self.embed(tokens) + self.pos[positions].astype(self.cfg.dtype)
        updated = []
        for block, layer in zip(self.blocks, cache, strict=True):
            x, written = block.forward_cached(x, positions, layer)
            updated.append(written)
        return self.final_norm(x), updated


def init_model(cfg: ModelConfig, seed: int) -> Transformer:
    return Transformer(cfg, nnx.Rngs(params=seed))


def abstract_model(cfg: ModelConfig) -> Transformer:
    """The model's structure with shapes only (no parameter memory)."""
    return nnx.eval_shape(lambda: init_model(cfg, 0))


def param_count(params: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))
