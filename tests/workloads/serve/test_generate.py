"""workloads.serve.generate: the KV-cache decode agrees with the training forward pass, a row's
tokens do not depend on its batch nor on when it joined it, a freed slot takes the next row,
the batch moves between sizes, sampling follows the seed, and the buckets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mlstack.workloads.serve.engine import shared_generator
from mlstack.workloads.serve.generate import BundleMismatchError, Generator, Row, make_buckets
from mlstack.workloads.storage import open_store
from mlstack.workloads.train.configs import EOS_ID, TOKENIZER_VOCAB, ModelConfig, get_config
from mlstack.workloads.train.data import encode
from mlstack.workloads.train.export import read_bundle
from mlstack.workloads.train.model import Transformer, abstract_model
from mlstack.workloads.train.state import unflatten
from tests.workloads.serve.conftest import LENGTH_BUCKETS, MAX_BATCH, Bundle


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


def _alone(generator: Generator, params: Any, row: Row) -> list[int]:
    (tokens,) = generator.run(params, [row])
    return tokens.tolist()


def test_rows_that_join_a_running_batch_get_what_they_get_alone(loaded: Any) -> None:
    _, _, generator, params = loaded
    first = Row(encode("import "), 50, 1.0, 0, 11)
    joining = [
        Row(encode("from email import message\n" * 2), 20, 0.8, 5, 3),
        Row(encode("x"), 6, 0.0, 0, 0),
        Row(encode("def f(self):"), 30, 1.3, 0, 8),
    ]
    later = Row(encode("class "), 12, 1.0, 0, 4)
    batch = generator.batch(params)
    (slot,) = batch.admit([first])
    done = batch.step(3)
    assert done == {} and batch.active == 1
    slots = batch.admit(joining)
    assert slots == [1, 2, 3]
    results: dict[int, np.ndarray] = {}
    while 2 not in results:
        results.update(batch.step())
    # The short row ended first and freed slot 2; the next row takes it (over its old cache).
    assert set(results) == {2} and batch.active == 3
    assert batch.admit([later]) == [2]
    while batch.active:
        for ended, tokens in batch.step().items():
            results[ended if ended != 2 else -1] = tokens
    expected = {slot: first, 1: joining[0], 2: joining[1], 3: joining[2], -1: later}
    for key, row in expected.items():
        assert results[key].tolist() == _alone(generator, params, row), key


def test_a_decode_call_returns_when_a_row_ends(loaded: Any) -> None:
    _, _, generator, params = loaded
    long = Row(encode("import "), 40, 0.0, 0, 0)
    assert EOS_ID not in _alone(generator, params, long)
    batch = generator.batch(params)
    batch.admit([long, Row(encode("import "), 2, 0.0, 0, 0)])
    # The short row ends after its second token: the call stops there, not at 8 steps.
    ended = batch.step()
    assert list(ended) == [1] and len(ended[1]) == 2
    assert batch.rows == {0: long}
    while not (ended := batch.step()):
        pass
    assert ended[0].tolist() == _alone(generator, params, long)


def test_the_batch_is_the_smallest_bucket_holding_its_highest_busy_slot(loaded: Any) -> None:
    _, _, generator, params = loaded
    assert generator.buckets.batch == (1, 2, 4)
    batch = generator.batch(params)
    short, long = Row(encode("a"), 1, 0.0, 0, 0), Row(encode("a"), 30, 0.0, 0, 0)
    assert batch.admit([short]) == [0] and batch.size == 1
    assert batch.admit([long, short]) == [1, 2] and batch.size == 4
    ended = batch.step()
    assert set(ended) == {0, 2}
    batch.step(1)
    assert batch.size == 2  # Slot 1 is the highest busy one.
    assert batch.admit([short, short]) == [0, 2] and batch.size == 4
    with pytest.raises(ValueError, match="3 rows do not fit in 1 slots"):
        batch.admit([short] * 3)
    with pytest.raises(ValueError, match="slot 2 is running; a batch of 2 drops it"):
        batch.resize(2)


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
