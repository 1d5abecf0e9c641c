"""Config checks of `workloads.pipelines[]`: each mistake is one line at its path with the fix,
and all of them come at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mlstack.stacks.errors import ConfigError
from mlstack.stacks.validate import load_platform
from tests.stacks.test_pipelines import nightly

Edit = Callable[[dict[str, Any]], None]


def lines(lab_config: dict[str, Any], edit: Edit) -> list[str]:
    pipeline = nightly()
    edit(pipeline)
    lab_config["workloads"]["pipelines"] = [pipeline]
    with pytest.raises(ConfigError) as exc:
        load_platform(lab_config)
    return [str(p) for p in exc.value.problems]


def at(path: str) -> str:
    return f"platform.workloads.pipelines[0].{path}"


def test_the_nightly_pipeline_is_sound(lab_config: dict[str, Any]) -> None:
    lab_config["workloads"]["pipelines"] = [nightly()]
    assert load_platform(lab_config).workloads.pipelines[0].name == "nightly"


def test_every_graph_mistake_is_reported_at_once(lab_config: dict[str, Any]) -> None:
    def edit(p: dict[str, Any]) -> None:
        steps = p["steps"]
        steps[1]["after"] = ["data", "small-b"]  # small-a <-> small-b: a cycle
        steps[2]["after"] = ["data", "small-a"]
        steps[3]["after"] = ["data"]  # evaluate with no train step
        steps[4]["metric"] = "train.loss"  # no evaluate of the train split
        steps[5]["after"] = ["eval"]  # promote with no select
        steps.append({"name": "late", "kind": "select", "after": ["missing"]})

    found = lines(lab_config, edit)
    assert found == [
        at(
            "steps[6].after: names no step of the pipeline: 'missing' (got ['missing']); "
            "fix: use step names: data, small-a, small-b, eval, pick, ship, late"
        ),
        at(
            "steps: steps wait for each other in a cycle: small-a -> small-b -> small-a; fix: "
            "remove small-b from the after of small-a, or another edge of the cycle"
        ),
        at(
            "steps[3].after: An evaluate step reads the candidates it evaluates from a train "
            "step it waits for, and waits for none (got ['data']); fix: add one of small-a, "
            "small-b to after"
        ),
        at(
            "steps[4].metric: no evaluate step it waits for produces it: they evaluate the "
            "test split (got 'train.loss'); fix: use test.loss, or set split: train on the "
            "evaluate step"
        ),
        at(
            "steps[5].after: A promote step reads the version it promotes from a select step "
            "it waits for, and waits for none (got ['eval']); fix: add one of pick, late to "
            "after"
        ),
        at(
            "steps[6].after: A select step reads the evaluations it ranks from an evaluate "
            "step it waits for, and waits for none (got ['missing']); fix: add eval to after"
        ),
    ]


def test_duplicate_and_self_waiting_steps(lab_config: dict[str, Any]) -> None:
    def edit(p: dict[str, Any]) -> None:
        p["steps"][2]["name"] = "small-a"
        p["steps"][0]["after"] = ["data"]

    found = lines(lab_config, edit)
    assert at("steps[2].name: the pipeline has 2 steps of this name") in found[0]
    assert found[1].startswith(at("steps[0].after: the step waits for itself"))
    # The renamed step is gone: who waited for it waits for an unknown step.
    assert found[2] == at(
        "steps[3].after: names no step of the pipeline: 'small-b' (got ['small-a', "
        "'small-b']); fix: use step names: data, small-a, eval, pick, ship"
    )
    assert len(found) == 3, found


def test_two_pipelines_of_one_name_in_a_team(lab_config: dict[str, Any]) -> None:
    lab_config["workloads"]["pipelines"] = [nightly(), nightly(), nightly() | {"team": "vision"}]
    with pytest.raises(ConfigError) as exc:
        load_platform(lab_config)
    assert [str(p) for p in exc.value.problems] == [
        "platform.workloads.pipelines[1].name: team language has 2 pipelines of this name "
        "(got 'nightly'); fix: give each of the team's pipelines its own name"
    ]


def test_a_train_step_is_checked_as_the_training_job_it_runs_as(
    lab_config: dict[str, Any],
) -> None:
    def edit(p: dict[str, Any]) -> None:
        p["steps"][1] |= {"num_hosts": 2, "gpus_per_host": 8}  # 16 A100s; the team has 8
        p["steps"][2] |= {"pool": "h100"}
        p["steps"][1]["priority"] = "mlstack-serving"

    found = lines(lab_config, edit)
    assert found == [
        at(
            "steps[1].priority: is the model servers' priority: when the quota is short, Kueue "
            "would let the job preempt the team's serving pods (got 'mlstack-serving'); fix: "
            "use mlstack-training, or mlstack-best-effort"
        ),
        at(
            "steps[1].num_hosts: the job needs 16 GPUs of pool 'a100' at once (2 hosts x 8) "
            "but team language may hold at most 8 there, so Kueue would never admit it (got 2); "
            "fix: lower num_hosts or gpus_per_host, or raise platform.teams[1].quota.gpus.a100 "
            "to 16"
        ),
        at(
            "steps[1].num_hosts: a global batch of 8 sequences does not split evenly over the "
            "job's 16 devices (2 hosts x 8) (got 2); fix: set global_batch_size to a multiple "
            "of 16, or change num_hosts"
        ),
        at("steps[2].pool: names no node pool (got 'h100'); fix: use one of: cpu, a100, l40s"),
    ]


def test_the_pipeline_pool_runs_the_runner_on_cpu(lab_config: dict[str, Any]) -> None:
    found = lines(lab_config, lambda p: p.update(pool="a100"))
    assert found == [
        at(
            "pool: pool 'a100' is a GPU pool: the runner and the prepare, evaluate, select and "
            "promote steps use no GPUs, and its nodes take only pods that do (got 'a100'); fix: "
            "use a CPU pool: cpu"
        )
    ]
    assert lines(lab_config, lambda p: p.update(pool="gpu", team="ml")) == [
        at("team: names no team (got 'ml'); fix: use one of: language, research-infra, vision"),
        at("pool: names no node pool (got 'gpu'); fix: use a CPU pool: cpu"),
    ]


def test_a_step_that_fits_the_quota_alone_but_not_beside_the_runner(
    lab_config: dict[str, Any],
) -> None:
    # The team has 512 GiB: the prepare step alone fits, beside the runner's 1 GiB it never
    # would be admitted while the runner waits for it.
    found = lines(lab_config, lambda p: p["steps"][0].update(memory_gib=511.5))
    assert found == [
        at(
            "steps[0].memory_gib: the step (1 pods) and the runner need 512.5 GiB at once, "
            "above team language's quota of 512 GiB, so Kueue would never admit the step while "
            "the runner waits for it (got 511.5); fix: lower the step's or the runner's "
            "memory_gib, or raise the team's quota.memory_gib"
        )
    ]


def test_promote_aliases_and_prepare_dataset(lab_config: dict[str, Any]) -> None:
    def edit(p: dict[str, Any]) -> None:
        p["steps"][5] |= {"alias": "champion", "then_alias": "champion"}
        p["steps"][0]["dataset"] = "../other-team"

    found = lines(lab_config, edit)
    assert [line.split(":")[0] for line in found] == [
        at("steps[0].dataset"),
        at("steps[5].then_alias"),
    ]
    only = lines(lab_config, lambda p: p["steps"][5].update(then_alias=None, soak_s=600))
    assert only == [
        at(
            "steps[5].soak_s: is only read with then_alias (the wait before it moves) (got "
            "600); fix: set then_alias, or remove soak_s"
        )
    ]


@pytest.mark.parametrize(
    ("field", "value", "fix"),
    [
        ("schedule", "0 25 * * *", "hour '25': '25' is not in 0-23"),
        (
            "time_zone",
            "Mars/Olympus",
            "use a tz database name such as 'Etc/UTC' or 'Europe/Berlin'",
        ),
    ],
)
def test_schedule_and_time_zone_are_checked_as_fields(
    lab_config: dict[str, Any], field: str, value: str, fix: str
) -> None:
    found = lines(lab_config, lambda p: p.update({field: value}))
    assert found == [at(f"{field}: invalid value (got {value!r}); fix: {fix}")]
