"""A byte-level decoder-only transformer in Flax NNX.

Pre-norm blocks (LayerNorm, causal multi-head attention, GELU MLP), learned positions, and an
output head tied to the token embedding. Parameters are float32; `ModelConfig.dtype` sets the
compute dtype (bfloat16 on GPUs), and the logits come back in float32 for the loss.
"""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import nnx

from workloads.train.configs import ModelConfig

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
        batch, length, d = x.shape
        qkv = self.qkv(self.attn_norm(x)).reshape(batch, length, 3, self.n_heads, -1)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        attn = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=_attention(q))
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
        x = self.final_norm(x)
        return self.embed.attend(x).astype(jnp.float32)


def init_model(cfg: ModelConfig, seed: int) -> Transformer:
    return Transformer(cfg, nnx.Rngs(params=seed))


def abstract_model(cfg: ModelConfig) -> Transformer:
    """The model's structure with shapes only (no parameter memory)."""
    return nnx.eval_shape(lambda: init_model(cfg, 0))


def param_count(params: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))
