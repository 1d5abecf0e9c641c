"""Named model and training configs of the reference workload.

Plain data, no JAX: the stack config's validation reads the names and sizes from here without
importing the training code.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

#: Byte-level tokenizer: ids 0-255 are bytes, 256 ends a document.
BYTE_VOCAB = 256
EOS_ID = 256
TOKENIZER_VOCAB = 257
#: The model's embedding table is padded to a multiple of 128 for the matrix units.
PADDED_VOCAB = 384

Dtype = Literal["float32", "bfloat16"]


class RunError(ValueError):
    """A run's settings do not fit its config or its devices; the message says the fix."""


@dataclass(frozen=True)
class ModelConfig:
    """A decoder-only transformer over bytes."""

    d_model: int
    n_layers: int
    n_heads: int
    seq_len: int
    mlp_ratio: int = 4
    vocab_size: int = PADDED_VOCAB
    #: Compute dtype; parameters and optimizer state stay float32.
    dtype: Dtype = "float32"

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def num_params(self) -> int:
        """Trainable parameters: embeddings, blocks (attention, MLP, norms), final norm."""
        d, f = self.d_model, self.d_model * self.mlp_ratio
        block = 4 * d * d + 2 * d * f + 4 * d
        return self.vocab_size * d + self.seq_len * d + self.n_layers * block + 2 * d

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6 per parameter plus attention scores (PaLM, appendix B)."""
        return 6 * self.num_params + 12 * self.n_layers * self.d_model * self.seq_len


@dataclass(frozen=True)
class TrainConfig:
    """One named training setup: a model and how to train it."""

    name: str
    model: ModelConfig
    global_batch_size: int
    learning_rate: float
    warmup_steps: int
    total_steps: int
    weight_decay: float = 0.1
    grad_clip_norm: float = 1.0
    b1: float = 0.9
    b2: float = 0.95
    #: Final learning rate as a fraction of the peak (cosine decay floor).
    min_lr_ratio: float = 0.1

    def with_overrides(self, **overrides: Any) -> TrainConfig:
        """A copy with training fields replaced; `dtype` and `seq_len` go to the model."""
        model_fields = {k: overrides.pop(k) for k in ("dtype", "seq_len") if k in overrides}
        model = replace(self.model, **model_fields) if model_fields else self.model
        return replace(self, model=model, **overrides)


CONFIGS: dict[str, TrainConfig] = {
    # Seconds on a CPU: the tests and `mlstack local` use it.
    "tiny": TrainConfig(
        name="tiny",
        model=ModelConfig(d_model=64, n_layers=2, n_heads=4, seq_len=64),
        global_batch_size=8,
        learning_rate=3e-3,
        warmup_steps=10,
        total_steps=200,
    ),
    # About 125M parameters (GPT-2 small's size; bytes need a deeper stack for it).
    "small": TrainConfig(
        name="small",
        model=ModelConfig(d_model=768, n_layers=18, n_heads=12, seq_len=1024, dtype="bfloat16"),
        global_batch_size=64,
        learning_rate=6e-4,
        warmup_steps=1000,
        total_steps=50_000,
    ),
    # About 350M parameters.
    "medium": TrainConfig(
        name="medium",
        model=ModelConfig(d_model=1024, n_layers=28, n_heads=16, seq_len=1024, dtype="bfloat16"),
        global_batch_size=64,
        learning_rate=3e-4,
        warmup_steps=2000,
        total_steps=100_000,
    ),
}


def get_config(name: str) -> TrainConfig:
    try:
        return CONFIGS[name]
    except KeyError:
        raise RunError(
            f"unknown model config {name!r}; fix: use one of {', '.join(CONFIGS)}"
        ) from None
