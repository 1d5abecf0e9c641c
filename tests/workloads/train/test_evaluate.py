"""workloads.train.evaluate: a version's loss and perplexity on a dataset, written next to the
bundle as evals/<split>.json, reused for the same dataset and redone for another; the CLI
prints one JSON line, and bad input is one `error:` line and exit 2."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from mlstack.workloads.storage import open_store
from mlstack.workloads.train import state
from mlstack.workloads.train.configs import get_config
from mlstack.workloads.train.data import DatasetIndex, index_sha256, split_dataset
from mlstack.workloads.train.evaluate import EvaluateError, eval_key, evaluate_version
from mlstack.workloads.train.export import export_bundle
from mlstack.workloads.train.model import init_model

REPO = Path(__file__).resolve().parents[3]
VERSION = "r.init"


@pytest.fixture(scope="module")
def setup(dataset_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """(model URL with one untrained tiny version, a small test split, the train split)."""
    root = tmp_path_factory.mktemp("evaluate")
    train_url, test_url = (root / "train").as_uri(), (root / "test").as_uri()
    split_dataset(dataset_url, train_url, test_url, test_fraction=0.02, seed=0)
    cfg = get_config("tiny")
    params = nnx.to_pure_dict(nnx.state(init_model(cfg.model, 0), nnx.Param))
    flat = {k: np.asarray(v) for k, v in state.flatten(params).items()}
    model_url = (root / "models").as_uri()
    export_bundle(
        open_store(model_url),
        root / "staging",
        step=0,
        params=flat,
        config=cfg,
        metrics={},
        dataset_url=train_url,
        version=VERSION,
    )
    return model_url, test_url, train_url


def test_the_whole_dataset_is_evaluated_and_written_next_to_the_bundle(
    setup: tuple[str, str, str],
) -> None:
    model_url, test_url, _ = setup
    record = evaluate_version(model_url, VERSION, test_url)

    windows = (DatasetIndex.load(test_url).total_tokens - 1) // 64
    assert record["tokens"] == windows * 64
    assert (record["split"], record["version"]) == ("test", VERSION)
    assert (record["dataset"], record["dataset_sha256"]) == (test_url, index_sha256(test_url))
    # An untrained model over 257 byte ids: about ln(257) = 5.55.
    assert 5.0 < record["loss"] < 6.5
    assert record["perplexity"] == pytest.approx(math.exp(record["loss"]), rel=1e-5)
    stored = json.loads(open_store(model_url).get_bytes(eval_key(VERSION, "test")))
    assert stored == record

    # Every window counts once, whatever the batch size (the last batch's filler does not).
    other = evaluate_version(model_url, VERSION, test_url, split="test-b5", batch_size=5)
    assert windows % 5 and windows % 8
    assert other["loss"] == pytest.approx(record["loss"], rel=1e-5)


def test_an_eval_of_the_same_dataset_is_reused_and_of_another_redone(
    setup: tuple[str, str, str],
) -> None:
    model_url, test_url, train_url = setup
    first = evaluate_version(model_url, VERSION, test_url, split="reuse", max_batches=1)
    assert first["tokens"] == 8 * 64
    assert evaluate_version(model_url, VERSION, test_url, split="reuse", max_batches=1) == first

    redone = evaluate_version(model_url, VERSION, train_url, split="reuse", max_batches=1)
    assert redone["dataset_sha256"] == index_sha256(train_url) != first["dataset_sha256"]
    stored = json.loads(open_store(model_url).get_bytes(eval_key(VERSION, "reuse")))
    assert stored == redone


def test_a_missing_version_is_one_line_with_the_fix(setup: tuple[str, str, str]) -> None:
    model_url, test_url, _ = setup
    with pytest.raises(EvaluateError, match=r"no version nope at .*; fix: pass a version"):
        evaluate_version(model_url, "nope", test_url)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlstack.workloads.train.evaluate", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"},
        check=False,
    )


def test_the_cli_prints_one_json_line(setup: tuple[str, str, str]) -> None:
    model_url, test_url, _ = setup
    proc = _cli(
        "--model-url", model_url, "--version", VERSION, "--data-url", test_url,
        "--split", "cli", "--max-batches", "2",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()
    record = json.loads(line)
    assert (record["split"], record["tokens"]) == ("cli", 2 * 8 * 64)


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("version", "error: no version nope at"),
        ("data", "no dataset here (index.json is missing"),
        ("batches", "must be positive; fix:"),
    ],
)
def test_cli_bad_input_is_one_error_line_and_exit_2(
    setup: tuple[str, str, str], tmp_path: Path, which: str, message: str
) -> None:
    model_url, test_url, _ = setup
    args = {"--model-url": model_url, "--version": VERSION, "--data-url": test_url}
    if which == "version":
        args["--version"] = "nope"
    elif which == "data":
        args["--data-url"] = (tmp_path / "none").as_uri()
    else:
        args["--max-batches"] = "0"
    proc = _cli(*[part for pair in args.items() for part in pair])
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr
