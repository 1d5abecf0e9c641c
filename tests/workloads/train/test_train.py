"""workloads.train.train in this process: the loss falls, a finished run resumes as a no-op,
and the optimizer follows its schedule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlstack.workloads.storage import open_store
from mlstack.workloads.train.configs import get_config
from mlstack.workloads.train.export import latest_version
from mlstack.workloads.train.train import RunOptions, make_optimizer, train_and_evaluate


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
