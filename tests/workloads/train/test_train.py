"""workloads.train.train in this process: the loss falls, a finished run resumes as a no-op,
and the optimizer follows its schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlstack.workloads.storage import open_store
from mlstack.workloads.train import train
from mlstack.workloads.train.configs import get_config
from mlstack.workloads.train.export import latest_version
from mlstack.workloads.train.main import EXIT_NON_FINITE, run
from mlstack.workloads.train.train import (
    NonFiniteError,
    NonFiniteGuard,
    RunOptions,
    Trainer,
    make_optimizer,
    train_and_evaluate,
)


def _options(tmp_path: Path, dataset_url: str, steps: int, **extra: object) -> RunOptions:
    fields: dict[str, object] = {
        "config": get_config("tiny"),
        "steps": steps,
        "data_url": dataset_url,
        "checkpoint_url": (tmp_path / "ckpt").as_uri(),
        "model_url": (tmp_path / "models").as_uri(),
        "workdir": tmp_path / "work",
        "log_every": 5,
        "checkpoint_every": 20,
    }
    fields.update(extra)
    return RunOptions(**fields)  # type: ignore[arg-type]


def test_loss_falls_then_a_finished_run_resumes_as_a_no_op(
    tmp_path: Path, dataset_url: str
) -> None:
    result = train_and_evaluate(_options(tmp_path, dataset_url, steps=80))
    losses = [loss for _, loss in result.losses]
    assert [step for step, _ in result.losses] == list(range(5, 81, 5))
    # From about ln(257) = 5.5 at the start to well under 3.5 for a byte model after 80 steps.
    assert losses[0] > 4.5
    assert np.mean(losses[-3:]) < 3.5
    assert result.committed_step == 80
    assert result.exported == "step-00000080"
    assert latest_version(open_store((tmp_path / "models").as_uri())) == "step-00000080"
    assert open_store((tmp_path / "ckpt").as_uri()).exists("step_00000080/COMMIT")

    again = train_and_evaluate(_options(tmp_path, dataset_url, steps=80))
    assert (again.start_step, again.final_step, again.losses) == (80, 80, [])
    assert again.exported is None


def test_learning_rate_warms_up_then_decays_to_the_floor() -> None:
    cfg = get_config("tiny")
    _, schedule = make_optimizer(cfg)
    assert float(np.asarray(schedule(0))) == 0.0
    assert float(np.asarray(schedule(cfg.warmup_steps))) == pytest.approx(cfg.learning_rate)
    assert float(np.asarray(schedule(cfg.total_steps))) == pytest.approx(
        cfg.learning_rate * cfg.min_lr_ratio
    )


def _poison_the_initial_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run initializes one parameter array as NaN (a damaged restore, as it were)."""
    real = train.make_init

    def poisoned(cfg: Any, tx: Any, seed: int) -> Any:
        init = real(cfg, tx, seed)

        def wrapped() -> Any:
            current = init()
            leaves, treedef = jax.tree.flatten(current["params"])
            leaves[0] = leaves[0] * jnp.nan
            return {**current, "params": jax.tree.unflatten(treedef, leaves)}

        return wrapped

    monkeypatch.setattr(train, "make_init", poisoned)


def test_a_nan_in_the_parameters_stops_the_run_before_it_commits_or_exports(
    tmp_path: Path,
    dataset_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _poison_the_initial_parameters(monkeypatch)
    opts = _options(tmp_path, dataset_url, steps=6, checkpoint_every=2, export_every=2)
    assert run(opts) == EXIT_NON_FINITE
    lines = capsys.readouterr().err.splitlines()
    assert [line for line in lines if not line.startswith("WARNING:")] == [
        "error: step 1: loss nan, gradient norm nan, non-finite 1 step(s) in a row "
        "(--non-finite-patience 0); stopped before committing or exporting it; fix: check the "
        "data and the newest checkpoint, lower the learning rate, or raise "
        "--non-finite-patience to skip such steps"
    ]
    assert open_store((tmp_path / "ckpt").as_uri()).list() == []
    assert latest_version(open_store((tmp_path / "models").as_uri())) is None


def test_non_finite_steps_are_skipped_up_to_the_patience(
    capsys: pytest.CaptureFixture[str],
) -> None:
    guard = NonFiniteGuard(patience=2)

    def metrics(loss: float) -> dict[str, jax.Array]:
        value = jnp.asarray(loss)
        return {"loss": value, "grad_norm": value, "finite": jnp.isfinite(value)}

    for step, loss in enumerate([1.0, float("nan"), float("inf"), 2.0, float("nan")], 1):
        guard.push(step, metrics(loss))
    guard.flush()
    assert guard.run == 1
    assert capsys.readouterr().err.splitlines() == [
        "warning: step 2: loss nan, gradient norm nan: skipped (1 in a row, "
        "--non-finite-patience 2)",
        "warning: step 3: loss inf, gradient norm inf: skipped (2 in a row, "
        "--non-finite-patience 2)",
        "warning: step 5: loss nan, gradient norm nan: skipped (1 in a row, "
        "--non-finite-patience 2)",
    ]
    for step in (6, 7):
        guard.push(step, metrics(float("nan")))
    with pytest.raises(NonFiniteError, match=r"^step 7: loss nan, .* non-finite 3 step\(s\)"):
        guard.flush()


def test_a_non_finite_step_leaves_the_state_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    """What makes a patience useful: a skipped step changes neither the parameters nor the
    optimizer's moments and count, only the step."""
    _poison_the_initial_parameters(monkeypatch)
    cfg = get_config("tiny")
    trainer = Trainer(
        RunOptions(
            config=cfg,
            steps=1,
            data_url="file:///unused",
            checkpoint_url="file:///unused",
            model_url=None,
            workdir=Path("/unused"),
        )
    )
    current = trainer.init_state()
    before = jax.tree.map(np.asarray, current)  # The step donates `current`.
    tokens = np.zeros((cfg.global_batch_size, cfg.model.seq_len + 1), np.int32)
    after, metrics = trainer.train_step(current, trainer.global_batch(tokens))
    assert not bool(metrics["finite"])
    assert int(after["step"]) == 1
    for old, new in zip(
        jax.tree.leaves((before["params"], before["opt"])),
        jax.tree.leaves((after["params"], after["opt"])),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(new), old)


def test_a_run_resumes_from_the_previous_step_when_the_newest_is_damaged(
    tmp_path: Path, dataset_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    train_and_evaluate(_options(tmp_path, dataset_url, steps=4, checkpoint_every=2, model_url=None))
    step_dir = tmp_path / "ckpt" / "step_00000004"
    files = [p for p in step_dir.rglob("*") if p.is_file() and p.name != "COMMIT"]
    biggest = max(files, key=lambda p: p.stat().st_size)
    data = bytearray(biggest.read_bytes())
    data[len(data) // 3] ^= 0x01
    biggest.write_bytes(bytes(data))
    capsys.readouterr()
    resumed = train_and_evaluate(
        _options(tmp_path, dataset_url, steps=6, checkpoint_every=2, model_url=None)
    )
    assert (resumed.start_step, resumed.final_step, resumed.committed_step) == (2, 6, 6)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    name = biggest.relative_to(step_dir).as_posix()
    assert len(warnings) == 1
    assert warnings[0].startswith(f"warning: checkpoint step 4 is damaged: {name} does not match")
    assert warnings[0].endswith("resuming from step 2, the newest intact one")
