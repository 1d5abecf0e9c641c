"""Evaluation in training, named versions and lineage: the loop logs the held-out loss every N
steps and at the end (the same number `evaluate_version` computes), a named run exports NAME
(and NAME.step-<8> in between) with a lineage.json, and its flags' bad input is one line."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests_support import RecordingStore

from mlstack.workloads.storage import open_store
from mlstack.workloads.train import train
from mlstack.workloads.train.configs import get_config
from mlstack.workloads.train.data import index_sha256, split_dataset
from mlstack.workloads.train.evaluate import evaluate_version
from mlstack.workloads.train.export import (
    LINEAGE,
    Provenance,
    bundle_version,
    check_version_name,
    export_bundle,
    latest_version,
    read_bundle,
)
from mlstack.workloads.train.main import main
from mlstack.workloads.train.metrics import MetricsLog
from mlstack.workloads.train.train import RunOptions, train_and_evaluate

PROVENANCE = Provenance(
    image="registry.local/mlstack:test",
    git_commit="0123456789abcdef",
    pipeline_run="nightly/20261203T020000Z-ab12/cand-a",
    parent_version="old.champion",
)


@pytest.fixture(scope="module")
def splits(dataset_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("splits")
    train_url, test_url = (root / "train").as_uri(), (root / "test").as_uri()
    split_dataset(dataset_url, train_url, test_url, test_fraction=0.1, seed=0)
    return train_url, test_url


def _options(tmp_path: Path, splits: tuple[str, str], steps: int, **extra: Any) -> RunOptions:
    fields: dict[str, Any] = {
        "config": get_config("tiny"),
        "steps": steps,
        "data_url": splits[0],
        "checkpoint_url": (tmp_path / "ckpt").as_uri(),
        "model_url": (tmp_path / "models").as_uri(),
        "workdir": tmp_path / "work",
        "log_every": 5,
        "checkpoint_every": 100,
        "eval_data_url": splits[1],
    }
    fields.update(extra)
    return RunOptions(**fields)


def _events(stream: io.StringIO, kind: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [e for e in lines if e["event"] == kind]


def test_the_loop_evaluates_every_n_steps_and_at_the_end_into_a_named_export(
    tmp_path: Path, splits: tuple[str, str]
) -> None:
    stream = io.StringIO()
    opts = _options(
        tmp_path,
        splits,
        25,
        eval_every=10,
        eval_batches=2,
        export_every=10,
        version="run1.cand-a",
        provenance=PROVENANCE,
    )
    result = train_and_evaluate(opts, MetricsLog(True, stream))

    evals = _events(stream, "eval")
    assert [e["step"] for e in evals] == [10, 20, 25]
    for event in evals:
        assert event["split"] == "test"
        assert event["tokens"] == 2 * 8 * 64
        assert event["perplexity"] == pytest.approx(np.exp(event["loss"]), rel=1e-4)
    # Learning shows on held-out text too.
    assert evals[-1]["loss"] < evals[0]["loss"]
    assert result.exported == "run1.cand-a"
    exports = [e["version"] for e in _events(stream, "export")]
    assert exports == ["run1.cand-a.step-00000010", "run1.cand-a.step-00000020", "run1.cand-a"]

    models = open_store(opts.model_url or "")
    assert latest_version(models) == "run1.cand-a"
    manifest, _, params = read_bundle(models, "run1.cand-a", tmp_path)
    last = {k: v for k, v in evals[-1].items() if k not in ("event", "time")}
    assert manifest["training"]["metrics"]["eval"] == last

    # The same windows, evaluated from the exported bundle on its own: the same loss.
    alone = evaluate_version(opts.model_url or "", "run1.cand-a", splits[1], max_batches=2)
    assert alone["loss"] == pytest.approx(evals[-1]["loss"], rel=1e-4)
    assert alone["tokens"] == evals[-1]["tokens"]

    lineage = json.loads(models.get_bytes(f"versions/run1.cand-a/{LINEAGE}"))
    assert lineage["version"] == "run1.cand-a"
    assert lineage["dataset"] == splits[0]
    assert lineage["dataset_sha256"] == index_sha256(splits[0])
    assert lineage["eval_dataset"] == splits[1]
    assert lineage["eval_dataset_sha256"] == index_sha256(splits[1])
    assert lineage["image"] == PROVENANCE.image
    assert lineage["git_commit"] == PROVENANCE.git_commit
    assert lineage["pipeline_run"] == PROVENANCE.pipeline_run
    assert lineage["parent_version"] == "old.champion"
    assert (lineage["checkpoint_step"], lineage["checkpoint_url"]) == (25, opts.checkpoint_url)
    assert lineage["training"]["name"] == "tiny"
    assert lineage["training"]["steps"] == 25
    assert lineage["training"]["learning_rate"] == get_config("tiny").learning_rate
    assert lineage["created"].endswith("Z")
    intermediate = json.loads(models.get_bytes(f"versions/run1.cand-a.step-00000010/{LINEAGE}"))
    assert intermediate["checkpoint_step"] == 10

    # Another candidate exports to the same model and moves `latest`; this run, started
    # again, finds its own version and exports nothing.
    export_bundle(
        models,
        tmp_path / "x",
        step=1,
        params=params,
        config=get_config("tiny"),
        metrics={},
        dataset_url=None,
        version="run1.cand-b",
    )
    again = train_and_evaluate(opts, MetricsLog(False))
    assert again.exported is None
    assert latest_version(models) == "run1.cand-b"


def test_a_non_finite_eval_loss_is_reported_not_hidden(
    tmp_path: Path,
    splits: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(train.Evaluator, "loss", lambda self, params: float("nan"))
    stream = io.StringIO()
    train_and_evaluate(
        _options(tmp_path, splits, 3, eval_batches=1, model_url=None), MetricsLog(True, stream)
    )
    (event,) = _events(stream, "eval")
    assert (event["step"], event["loss"], event["perplexity"]) == (3, None, None)
    assert event["non_finite"] == "nan"
    assert "warning: step 3: the eval loss on" in capsys.readouterr().err


def test_without_an_eval_dataset_nothing_is_evaluated(
    tmp_path: Path, splits: tuple[str, str]
) -> None:
    stream = io.StringIO()
    result = train_and_evaluate(
        _options(tmp_path, splits, 2, eval_data_url=None, model_url=None),
        MetricsLog(True, stream),
    )
    assert result.evals == [] and _events(stream, "eval") == []


def test_the_lineage_is_written_after_the_bundle_and_before_latest(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path / "models")
    params = {"w": np.ones((2, 2), np.float32)}
    export_bundle(
        store,
        tmp_path / "staging",
        step=5,
        params=params,
        config=get_config("tiny"),
        metrics={},
        dataset_url="file:///d",
        version="r.a",
        lineage={"dataset": "file:///d"},
    )
    writes = store.writes
    assert writes[-2:] == ["versions/r.a/lineage.json", "latest"]
    assert set(writes[:-2]) == {"versions/r.a/bundle.json", "versions/r.a/params.npz"}
    assert json.loads(store.get_bytes("versions/r.a/lineage.json")) == {
        "dataset": "file:///d",
        "version": "r.a",
    }


def test_version_names() -> None:
    assert bundle_version(7) == "step-00000007"
    assert bundle_version(7, "r.a") == "r.a"
    assert bundle_version(7, "r.a", final=False) == "r.a.step-00000007"
    assert check_version_name("20261203T020000Z-ab12.small-a") == "20261203T020000Z-ab12.small-a"
    for bad in ("", "../x", "a/b", ".hidden", "a..b", "x" * 129, "a b"):
        with pytest.raises(ValueError, match="is not a version name; fix:"):
            check_version_name(bad)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--eval-every", "-1"], "--eval-every -1 is negative; fix: use 0 or more"),
        (["--eval-batches", "0"], "--eval-batches 0 must be at least 1"),
        (["--version", "../x"], "--version '../x' is not a version name; fix:"),
        (
            ["--eval-every", "5", "--data", "file:///d", "--checkpoint-url", "file:///c"],
            "--eval-every 5 needs an eval dataset and neither --eval-data nor "
            "$MLSTACK_EVAL_DATA_URL is set; fix:",
        ),
    ],
)
def test_bad_eval_and_version_flags_are_one_line_and_exit_2(
    argv: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("MLSTACK_DATA_URL", "MLSTACK_CHECKPOINT_URL", "MLSTACK_EVAL_DATA_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("MLSTACK_NUM_PROCESSES", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert message in err
