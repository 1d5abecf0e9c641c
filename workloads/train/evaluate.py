"""Evaluate an exported version on a dataset: its mean next-token loss and perplexity.

`evaluate_version` loads a bundle (`export.read_bundle`), runs the model over the dataset's
windows (seq_len + 1 tokens at every multiple of seq_len, in dataset order: the windows the
training loader draws from, without its shuffle), and writes
`<model url>/versions/<version>/evals/<split>.json`:

    {"split", "loss", "perplexity", "tokens", "dataset", "dataset_sha256", "evaluated", "version"}

`loss` is the mean over every target token (each window has seq_len of them), `tokens` their
count. With `max_batches`, the first `max_batches * batch_size` windows (cycling through a
dataset that has fewer): the same rows the training loop's in-run evaluation reads with
`--eval-batches max_batches` and a global batch of `batch_size`, so the two numbers agree.
An existing eval of the same dataset (index.json's sha256) and the same token count is
returned as it is; one of another dataset is replaced. One process, any device (the CPU is
fine): a pipeline's evaluate step.

CLI: `python -m mlstack.workloads.train.evaluate --model-url URL --version V --data-url URL
[--split test] [--max-batches K] [--batch-size B]` prints the eval as one JSON line; bad input
(no such version or dataset, a bad flag) is one `error:` line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mlstack.workloads.storage import NotFound, Store, StoreError, open_store
from mlstack.workloads.train.configs import ModelConfig
from mlstack.workloads.train.data import DataError, Loader, index_sha256
from mlstack.workloads.train.export import read_bundle

EXIT_BAD_INPUT = 2
EVALS = "evals"


class EvaluateError(ValueError):
    """A version or dataset that cannot be evaluated; one line with the fix."""


def eval_key(version: str, split: str) -> str:
    """The key, under the model URL, of a version's eval on `split`."""
    return f"versions/{version}/{EVALS}/{split}.json"


def _existing(store: Store, key: str) -> dict[str, Any] | None:
    """A previous eval, or None when there is none or it cannot be read (it is redone)."""
    try:
        found = json.loads(store.get_bytes(key))
    except (NotFound, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _rows(num_windows: int, max_batches: int | None, batch_size: int) -> int:
    return num_windows if max_batches is None else max_batches * batch_size


def _perplexity(loss: float) -> float | None:
    if not math.isfinite(loss) or loss > 700:  # exp(710) overflows a double
        return None
    return math.exp(loss)


def _mean_loss(
    config: ModelConfig, flat: dict[str, np.ndarray], loader: Loader, rows: int
) -> float:
    """The mean next-token loss over the first `rows` rows of the loader's sequential order."""
    import jax
    import optax
    from flax import nnx

    from mlstack.workloads.train import state
    from mlstack.workloads.train.model import abstract_model

    graphdef, abstract = nnx.split(abstract_model(config))
    params = jax.device_put(
        jax.tree.map(
            lambda x: np.asarray(x, np.float32),
            state.unflatten(flat, nnx.to_pure_dict(abstract)),
        )
    )

    @jax.jit
    def row_losses(params: Any, tokens: jax.Array) -> jax.Array:
        logits = nnx.merge(graphdef, params)(tokens[:, :-1])
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
        return losses.astype(np.float32).mean(axis=1)

    batch_size = loader.global_batch_size
    total = 0.0
    for number in range(math.ceil(rows / batch_size)):
        batch_rows = np.asarray(row_losses(params, loader.batch(number)), dtype=np.float64)
        # The last batch of a whole-dataset pass is filled with repeated windows: not counted.
        total += float(batch_rows[: rows - number * batch_size].sum())
    return total / rows


def evaluate_version(
    model_url: str,
    version: str,
    data_url: str,
    *,
    split: str = "test",
    max_batches: int | None = None,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Evaluate `version` of the model at `model_url` on the dataset at `data_url`, write
    `versions/<version>/evals/<split>.json` and return it (see the module docstring)."""
    if batch_size < 1 or (max_batches is not None and max_batches < 1):
        raise EvaluateError(
            f"batch_size={batch_size} and max_batches={max_batches} must be positive; "
            "fix: pass positive numbers (max_batches None: the whole dataset)"
        )
    if not split or "/" in split:
        raise EvaluateError(f"split {split!r} is not a name; fix: use e.g. 'test'")
    store = open_store(model_url)
    data_store = open_store(data_url)
    dataset_sha = index_sha256(data_store)
    staging = Path(tempfile.mkdtemp(prefix="mlstack-evaluate-"))
    try:
        try:
            _, config, flat = read_bundle(store, version, staging)
        except NotFound:
            raise EvaluateError(
                f"no version {version} at {store.url()} (versions/{version}/bundle.json is "
                "missing); fix: pass a version that `mlstack models list` shows"
            ) from None
        with Loader(
            data_store,
            seq_len=config.seq_len,
            global_batch_size=batch_size,
            shuffle=False,
            cache_dir=staging / "data",
        ) as loader:
            rows = _rows(loader.num_windows, max_batches, batch_size)
            key = eval_key(version, split)
            previous = _existing(store, key)
            if (
                previous is not None
                and previous.get("dataset_sha256") == dataset_sha
                and previous.get("tokens") == rows * config.seq_len
            ):
                return previous
            loss = _mean_loss(config, flat, loader, rows)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    finite = math.isfinite(loss)
    record: dict[str, Any] = {
        "split": split,
        # JSON has no NaN: a non-finite loss is null and says what it was.
        "loss": round(loss, 6) if finite else None,
        "perplexity": _perplexity(loss),
        "tokens": rows * config.seq_len,
        "dataset": data_store.base_url,
        "dataset_sha256": dataset_sha,
        "evaluated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "version": version,
    }
    if not finite:
        record["non_finite"] = str(loss)
    store.put_bytes(key, (json.dumps(record, indent=2) + "\n").encode())
    return record


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mlstack.workloads.train.evaluate",
        description="Evaluate an exported version on a dataset; writes "
        "versions/<version>/evals/<split>.json and prints it as one JSON line.",
    )
    parser.add_argument("--model-url", required=True, help="the model's store URL")
    parser.add_argument("--version", required=True, help="the version to evaluate")
    parser.add_argument("--data-url", required=True, help="a prepared dataset (a test split)")
    parser.add_argument("--split", default="test", help="the eval's name (default: test)")
    parser.add_argument(
        "--max-batches", type=int, default=None, help="the first K batches (default: all)"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        record = evaluate_version(
            args.model_url,
            args.version,
            args.data_url,
            split=args.split,
            max_batches=args.max_batches,
            batch_size=args.batch_size,
        )
    except (EvaluateError, DataError, StoreError, ValueError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
