"""workloads.train.model and configs: sizes, shapes, causality."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mlstack.workloads.train.configs import CONFIGS, PADDED_VOCAB, TOKENIZER_VOCAB, get_config
from mlstack.workloads.train.model import abstract_model, init_model, param_count


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parameter_count_matches_the_config_formula(name: str) -> None:
    cfg = CONFIGS[name].model
    _, params = nnx.split(abstract_model(cfg), nnx.Param)
    assert param_count(params) == cfg.num_params


@pytest.mark.parametrize(("name", "target"), [("small", 125e6), ("medium", 350e6)])
def test_named_sizes_are_what_they_say(name: str, target: float) -> None:
    assert abs(CONFIGS[name].model.num_params - target) / target < 0.05


def test_vocabulary_covers_the_tokenizer_in_whole_tiles() -> None:
    assert PADDED_VOCAB >= TOKENIZER_VOCAB
    assert PADDED_VOCAB % 128 == 0


def test_logits_shape_and_dtype() -> None:
    cfg = CONFIGS["tiny"].model
    logits = init_model(cfg, 0)(jnp.zeros((3, 10), jnp.int32))
    assert logits.shape == (3, 10, cfg.vocab_size)
    assert logits.dtype == jnp.float32


def test_a_position_sees_no_later_token() -> None:
    cfg = CONFIGS["tiny"].model
    model = init_model(cfg, 0)
    tokens = np.random.default_rng(0).integers(0, 256, (1, 16)).astype(np.int32)
    changed = tokens.copy()
    changed[0, 10:] = (changed[0, 10:] + 1) % 256
    a, b = model(jnp.asarray(tokens)), model(jnp.asarray(changed))
    np.testing.assert_allclose(a[0, :10], b[0, :10], rtol=1e-6, atol=1e-6)
    assert not np.allclose(a[0, 10:], b[0, 10:])


def test_bfloat16_computes_in_bfloat16_with_float32_parameters() -> None:
    cfg = get_config("tiny").with_overrides(dtype="bfloat16").model
    model = init_model(cfg, 0)
    _, params = nnx.split(model, nnx.Param)
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("float32")}
    assert model(jnp.zeros((1, 4), jnp.int32)).dtype == jnp.float32


def test_same_seed_same_parameters() -> None:
    cfg = CONFIGS["tiny"].model
    a = nnx.to_pure_dict(nnx.state(init_model(cfg, 7), nnx.Param))
    b = nnx.to_pure_dict(nnx.state(init_model(cfg, 7), nnx.Param))
    c = nnx.to_pure_dict(nnx.state(init_model(cfg, 8), nnx.Param))
    assert all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )
    assert not all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(c), strict=True)
    )


def test_unknown_config_names_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match="unknown model config 'huge'; fix: use one of tiny, small, medium"
    ):
        get_config("huge")


def test_flops_per_token_counts_six_per_parameter_plus_attention() -> None:
    cfg = CONFIGS["small"].model
    assert cfg.flops_per_token() == 6 * cfg.num_params + 12 * 18 * 768 * 1024
