"""workloads.serve.generate: the KV-cache decode agrees with the training forward pass, a row's
tokens do not depend on its batch, sampling follows the seed, and the buckets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.workloads.serve.conftest import LENGTH_BUCKETS, MAX_BATCH, Bundle
from workloads.serve.engine import shared_generator
from workloads.serve.generate import BundleMismatchError, Generator, Row, make_buckets
from workloads.storage import open_store
from workloads.train.configs import EOS_ID, TOKENIZER_VOCAB, ModelConfig, get_config
from workloads.train.data import encode
from workloads.train.export import read_bundle
from workloads.train.model import Transformer, abstract_model
from workloads.train.state import unflatten


@pytest.fixture(scope="module")
def loaded(tiny_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Any:
    _, config, flat = read_bundle(
        open_store(tiny_bundle.url), tiny_bundle.version, tmp_path_factory.mktemp("read")
    )
    buckets = make_buckets(
        config, max_batch=MAX_BATCH, max_new_tokens=256, length_buckets=LENGTH_BUCKETS
    )
    generator = shared_generator(config, buckets)
    generator.compile(threads=2)
    return config, flat, generator, generator.place(flat)


def _model(config: ModelConfig, flat: dict[str, np.ndarray]) -> Transformer:
    graphdef, like = nnx.split(abstract_model(config))
    return nnx.merge(graphdef, unflatten(flat, nnx.to_pure_dict(like)))


def _greedy_reference(model: Transformer, prompt: np.ndarray, new: int) -> list[int]:
    """Greedy decoding with the training forward pass over the whole (causal, so zero-padded
    to the context) sequence each step."""
    forward = nnx.jit(lambda m, t: m(t))
    tokens = np.zeros((1, model.cfg.seq_len), np.int32)
    tokens[0, : len(prompt)] = prompt
    length = len(prompt)
    out = []
    for _ in range(new):
        logits = np.asarray(forward(model, jnp.asarray(tokens)))[0, length - 1]
        token = int(np.argmax(logits[:TOKENIZER_VOCAB]))
        out.append(token)
        if token == EOS_ID or length == model.cfg.seq_len:
            break
        tokens[0, length] = token
        length += 1
    return out


def test_cached_greedy_decoding_matches_the_training_forward_pass(loaded: Any) -> None:
    config, flat, generator, params = loaded
    model = _model(config, flat)
    prompts = [encode("import os\n"), encode("def main("), encode("class Message:\n    " * 2)]
    rows = [Row(p, config.seq_len - len(p), 0.0, 0, 0) for p in prompts]
    for row, got in zip(rows, generator.run(params, rows), strict=True):
        assert got.tolist() == _greedy_reference(model, row.prompt, row.max_new)


@pytest.mark.parametrize(
    ("temperature", "top_k"), [(0.0, 0), (1.0, 0), (0.7, 5)], ids=["greedy", "sampled", "top-k"]
)
def test_a_row_gets_the_same_tokens_alone_and_in_any_batch(
    loaded: Any, temperature: float, top_k: int
) -> None:
    _, _, generator, params = loaded
    row = Row(encode("import "), 40, temperature, top_k, 1234)
    # Others of every length bucket and other settings: the batch pads to 64 tokens and 4 rows.
    long = Row(encode("from email import message\n" * 2), 8, 1.0, 0, 7)
    short = Row(encode("x"), 60, 0.0, 0, 0)
    sampled = Row(encode("def f(self):"), 50, 1.5, 40, 99)
    (alone,) = generator.run(params, [row])
    for batch, index in (([long, row], 1), ([short, sampled, long, row], 3), ([row, short], 0)):
        assert generator.run(params, batch)[index].tolist() == alone.tolist()


def test_the_seed_decides_the_sample(loaded: Any) -> None:
    _, _, generator, params = loaded
    prompt = encode("import ")
    a, b, c = generator.run(
        params, [Row(prompt, 48, 1.0, 0, 1), Row(prompt, 48, 1.0, 0, 1), Row(prompt, 48, 1.0, 0, 2)]
    )
    assert a.tolist() == b.tolist()
    assert a.tolist() != c.tolist()


def test_top_k_of_one_is_greedy_at_any_temperature(loaded: Any) -> None:
    _, _, generator, params = loaded
    prompt = encode("from email")
    greedy, top1 = generator.run(params, [Row(prompt, 40, 0.0, 0, 0), Row(prompt, 40, 2.0, 1, 5)])
    assert top1.tolist() == greedy.tolist()


def test_each_row_gets_its_own_number_of_tokens(loaded: Any) -> None:
    _, _, generator, params = loaded
    rows = [Row(encode("import "), n, 1.0, 0, n) for n in (1, 7, 30)]
    for row, got in zip(rows, generator.run(params, rows), strict=True):
        ended = got.size and got[-1] == EOS_ID
        assert got.size == row.max_new or (ended and got.size < row.max_new)
        assert EOS_ID not in got[:-1].tolist()
        assert int(got.max()) < TOKENIZER_VOCAB


def test_default_buckets_double_up_to_the_batch_and_the_context() -> None:
    tiny = get_config("tiny").model
    buckets = make_buckets(tiny, max_batch=32, max_new_tokens=256)
    assert buckets.batch == (1, 2, 4, 8, 16, 32)
    assert buckets.length == (16, 32, 64)
    assert buckets.new_tokens == 63
    odd = make_buckets(tiny, max_batch=24, max_new_tokens=20, length_buckets=(40, 8, 500))
    assert odd.batch == (1, 2, 4, 8, 16, 24)
    assert odd.length == (8, 40, 64)
    assert odd.new_tokens == 20
    assert (odd.batch_for(17), odd.length_for(9)) == (24, 40)
    with pytest.raises(ValueError, match="25 rows is more than the largest bucket, 24"):
        odd.batch_for(25)


def test_parameters_that_do_not_fit_the_config_are_refused(loaded: Any, tmp_path: Path) -> None:
    config, flat, _, _ = loaded
    generator = Generator(config, make_buckets(config, max_batch=1, max_new_tokens=4))
    missing = {k: v for k, v in flat.items() if k != "pos"}
    with pytest.raises(BundleMismatchError, match=r"do not fit its config: .*pos"):
        generator.place(missing)
    wrong = {**flat, "pos": np.zeros((8, config.d_model), np.float32)}
    with pytest.raises(BundleMismatchError, match=r"parameter pos has shape \(8, 64\)"):
        generator.place(wrong)
