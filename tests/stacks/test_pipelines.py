"""Pipelines in the stack config: the fields each step kind takes, the one-line refusals of
misspelt ones, and the runtime form (`stacks.pipelines.runtime_pipeline`) the runner and
`mlstack local pipeline` read."""

from __future__ import annotations

from typing import Any, TypedDict

import pytest

from mlstack.stacks.errors import ConfigError
from mlstack.stacks.parse import parse_platform
from mlstack.stacks.pipelines import PipelineNotFound, find_pipeline, runtime_pipeline
from mlstack.stacks.schema import Platform, PromoteStep, TrainStep
from mlstack.workloads.pipeline.spec import Pipeline as RuntimePipeline


def nightly() -> dict[str, Any]:
    return {
        "name": "nightly",
        "team": "language",
        "model": "lm-nightly",
        "schedule": "0 2 * * *",
        "pool": "cpu",
        "steps": [
            {"name": "data", "kind": "prepare", "dataset": "pystdlib", "test_fraction": 0.1},
            {"name": "small-a", "kind": "train", "after": ["data"], "pool": "a100"},
            {
                "name": "small-b",
                "kind": "train",
                "after": ["data"],
                "pool": "a100",
                "model": "small",
                "learning_rate": 1e-3,
                "steps": 200,
                "retries": 2,
            },
            {"name": "eval", "kind": "evaluate", "after": ["small-a", "small-b"]},
            {"name": "pick", "kind": "select", "after": ["eval"], "min_improvement": 0.01},
            {"name": "ship", "kind": "promote", "after": ["pick"], "then_alias": "champion"},
        ],
    }


def with_pipelines(lab_config: dict[str, Any], *pipelines: dict[str, Any]) -> dict[str, Any]:
    lab_config["workloads"]["pipelines"] = list(pipelines)
    return lab_config


def refusals(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_platform(raw)
    return [str(p) for p in exc.value.problems]


# --- the schema -------------------------------------------------------------------------------


def test_each_step_kind_reads_its_own_fields_with_defaults(lab_config: dict[str, Any]) -> None:
    platform = parse_platform(with_pipelines(lab_config, nightly()))
    (pipeline,) = platform.workloads.pipelines
    assert pipeline.time_zone == "Etc/UTC"
    assert pipeline.starting_deadline_s == 3600
    kinds = [type(step).__name__ for step in pipeline.steps]
    assert kinds == [
        "PrepareStep",
        "TrainStep",
        "TrainStep",
        "EvaluateStep",
        "SelectStep",
        "PromoteStep",
    ]
    a, b = pipeline.steps[1], pipeline.steps[2]
    assert isinstance(a, TrainStep) and isinstance(b, TrainStep)
    # The training job's knobs, with the training job's defaults.
    assert (a.model, a.num_hosts, a.checkpoint_every_steps, a.priority) == (
        "tiny",
        1,
        500,
        "mlstack-training",
    )
    assert (b.learning_rate, b.retries, a.retries) == (1e-3, 2, 1)
    promote = pipeline.steps[-1]
    assert isinstance(promote, PromoteStep)
    assert (promote.alias, promote.then_alias, promote.soak_s) == ("canary", "champion", 0)


def test_a_train_step_refuses_what_a_training_job_refuses(lab_config: dict[str, Any]) -> None:
    cfg = nightly()
    cfg["steps"][1] |= {"num_hosts": 0, "dtype": "float16"}
    lines = refusals(with_pipelines(lab_config, cfg))
    assert [line.split(":")[0] for line in lines] == [
        "platform.workloads.pipelines[0].steps[1].num_hosts",
        "platform.workloads.pipelines[0].steps[1].dtype",
    ]


def test_a_field_of_another_kind_is_refused_at_the_step_with_its_kind_s_fields(
    lab_config: dict[str, Any],
) -> None:
    cfg = nightly()
    cfg["steps"][1]["metric"] = "test.loss"  # a select step's field on a train step
    (line,) = refusals(with_pipelines(lab_config, cfg))
    # The path names the step as written, with no union tag ('steps[1].train.metric').
    assert line.startswith("platform.workloads.pipelines[0].steps[1].metric: unknown field")
    assert "allowed here: name, after, retries, kind, pool, model" in line


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (
            {"name": "x", "kind": "deploy"},
            "steps[6].kind: invalid value (got 'deploy'); fix: use one of: prepare, train, "
            "evaluate, select, promote",
        ),
        (
            {"name": "x"},
            "steps[6].kind: required field is missing; fix: add kind: prepare, train, "
            "evaluate, select, promote",
        ),
        (
            {"name": "x", "kind": "select", "metric": "test.accuracy"},
            "steps[6].metric: invalid value (got 'test.accuracy'); fix: use '<split>.loss' or "
            "'<split>.perplexity'",
        ),
        (
            {"name": "x", "kind": "promote", "alias": "latest"},
            "steps[6].alias: invalid value (got 'latest'); fix: 'latest' is the export pointer",
        ),
        ({"name": "Bad_Name", "kind": "prepare"}, "steps[6].name: invalid value"),
        ({"name": "x", "kind": "prepare", "test_fraction": 0.5}, "steps[6].test_fraction"),
    ],
)
def test_a_bad_step_is_one_line_at_its_path(
    lab_config: dict[str, Any], step: dict[str, Any], expected: str
) -> None:
    cfg = nightly()
    cfg["steps"].append(step)
    (line,) = refusals(with_pipelines(lab_config, cfg))
    assert line.startswith("platform.workloads.pipelines[0]." + expected), line


def test_a_pipeline_without_steps_is_one_line(lab_config: dict[str, Any]) -> None:
    cfg = nightly() | {"steps": []}
    assert refusals(with_pipelines(lab_config, cfg)) == [
        "platform.workloads.pipelines[0].steps: invalid value (got []); fix: declare at "
        "least one step, e.g. {name: data, kind: prepare}"
    ]


def test_a_refused_step_does_not_also_report_the_pipeline_empty(
    lab_config: dict[str, Any],
) -> None:
    cfg = nightly() | {"steps": [{"name": "x", "kind": "nope"}]}
    assert len(refusals(with_pipelines(lab_config, cfg))) == 1


# --- the runtime form -------------------------------------------------------------------------


def lab_platform(lab_config: dict[str, Any], *pipelines: dict[str, Any]) -> Platform:
    return parse_platform(with_pipelines(lab_config, *pipelines))


class Urls(TypedDict):
    datasets_url: str
    checkpoints_url: str
    models_url: str
    image: str


URLS = Urls(
    datasets_url="s3://lab-ml-datasets/",
    checkpoints_url="s3://lab-ml-checkpoints",
    models_url="s3://lab-ml-models",
    image="harbor.lab.internal/ml/train:0.1.0",
)


def test_the_runtime_pipeline_lives_under_the_team_s_prefix(lab_config: dict[str, Any]) -> None:
    lab_config["teams"][1]["storage_prefix"] = "research/language"
    pipeline = runtime_pipeline(lab_platform(lab_config, nightly()), "nightly", **URLS)
    assert pipeline.work_url == "s3://lab-ml-checkpoints/research/language/pipelines/nightly"
    assert pipeline.model_url == "s3://lab-ml-models/research/language/lm-nightly"
    assert pipeline.datasets_url == "s3://lab-ml-datasets"
    assert (pipeline.team, pipeline.model, pipeline.schedule) == (
        "language",
        "lm-nightly",
        "0 2 * * *",
    )
    assert pipeline.image == URLS["image"]


def test_the_model_defaults_to_the_pipeline_name(lab_config: dict[str, Any]) -> None:
    cfg = nightly()
    del cfg["model"], cfg["schedule"]
    pipeline = runtime_pipeline(lab_platform(lab_config, cfg), "nightly", **URLS)
    assert pipeline.model_url == "s3://lab-ml-models/language/nightly"
    assert pipeline.schedule is None


def test_step_configs_take_the_shapes_the_step_entry_points_read(
    lab_config: dict[str, Any],
) -> None:
    pipeline = runtime_pipeline(lab_platform(lab_config, nightly()), "nightly", **URLS)
    assert pipeline.step("data").config == {
        "dataset": "pystdlib",
        "test_fraction": 0.1,
        "seed": 0,
    }
    assert pipeline.step("small-b").config == {
        "model": "small",
        "steps": 200,
        "global_batch_size": None,
        "learning_rate": 1e-3,
        "num_hosts": 1,
        "checkpoint_every_steps": 500,
        "eval_every_steps": None,
        "fsdp": None,
        "dtype": None,
        "seed": 0,
    }
    assert pipeline.step("small-b").retries == 2
    assert pipeline.step("eval").config == {"split": "test", "max_batches": None}
    assert pipeline.step("eval").after == ("small-a", "small-b")
    assert pipeline.step("pick").config == {"metric": "test.loss", "min_improvement": 0.01}
    assert pipeline.step("ship").config == {
        "alias": "canary",
        "then_alias": "champion",
        "soak_s": 0,
    }
    assert all(step.manifest is None for step in pipeline.steps)


def test_manifests_ride_with_their_steps_and_the_spec_round_trips(
    lab_config: dict[str, Any],
) -> None:
    manifest = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "placeholder"}}
    pipeline = runtime_pipeline(
        lab_platform(lab_config, nightly()), "nightly", **URLS, manifests={"data": manifest}
    )
    assert pipeline.step("data").manifest == manifest
    assert pipeline.step("pick").manifest is None
    assert RuntimePipeline.loads(pipeline.dumps(), "pipeline.json") == pipeline


def test_an_unknown_pipeline_is_one_line_naming_the_declared_ones(
    lab_config: dict[str, Any],
) -> None:
    platform = lab_platform(lab_config, nightly())
    with pytest.raises(PipelineNotFound) as exc:
        find_pipeline(platform, "nighty")
    assert str(exc.value) == (
        "the stack declares no pipeline 'nighty'; fix: use one of: language/nightly "
        "(platform.workloads.pipelines)"
    )
    with pytest.raises(PipelineNotFound, match="use one of: none"):
        find_pipeline(lab_platform(lab_config), "nightly")


def test_a_name_two_teams_use_needs_the_team(lab_config: dict[str, Any]) -> None:
    other = nightly() | {"team": "vision"}
    platform = lab_platform(lab_config, nightly(), other)
    with pytest.raises(PipelineNotFound) as exc:
        find_pipeline(platform, "nightly")
    assert "declared by teams language, vision; fix: name it as team/name" in str(exc.value)
    assert find_pipeline(platform, "vision/nightly").team == "vision"
    assert runtime_pipeline(platform, "language/nightly", **URLS).team == "language"
