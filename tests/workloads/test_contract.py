"""workloads.contract: the environment the deploy side sets and the workloads read."""

from __future__ import annotations

import pytest

from mlstack.workloads.contract import (
    CHECKPOINT_URL,
    COORDINATOR_ADDRESS,
    DATA_URL,
    EVAL_DATA_URL,
    GIT_COMMIT,
    IMAGE,
    MODEL_ALIAS,
    MODEL_URL,
    NUM_PROCESSES,
    PIPELINE_RUN,
    PROCESS_ID,
    ContractError,
    Environment,
    read_environment,
)


def test_nothing_set_is_one_process() -> None:
    env = read_environment({})
    assert env == Environment()
    assert not env.distributed


def test_round_trip_through_the_variables() -> None:
    env = Environment(
        num_processes=4,
        process_id=3,
        coordinator_address="job-workers-0-0.job:8476",
        data_url="s3://d/pystdlib",
        checkpoint_url="s3://c/team/job",
        model_url="s3://m/team/job",
        model_version="step-00000100",
    )
    assert read_environment(env.as_env()) == env
    assert env.as_env()[PROCESS_ID] == "3"


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({NUM_PROCESSES: "two"}, "MLSTACK_NUM_PROCESSES='two' is not an integer; fix:"),
        ({NUM_PROCESSES: "0"}, "MLSTACK_NUM_PROCESSES=0 is below 1; fix: set it to >= 1"),
        (
            {NUM_PROCESSES: "2", PROCESS_ID: "2", COORDINATOR_ADDRESS: "h:1"},
            "MLSTACK_PROCESS_ID=2 is not below MLSTACK_NUM_PROCESSES=2; fix: process ids run "
            "from 0 to 1",
        ),
        (
            {NUM_PROCESSES: "2", PROCESS_ID: "0"},
            "MLSTACK_COORDINATOR_ADDRESS=None must be host:port for 2 processes; fix:",
        ),
        (
            {NUM_PROCESSES: "2", COORDINATOR_ADDRESS: "host-without-port"},
            "must be host:port",
        ),
    ],
)
def test_bad_environments_are_one_line_with_the_fix(
    variables: dict[str, str], message: str
) -> None:
    with pytest.raises(ContractError) as info:
        read_environment(variables)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_urls_are_read_and_blank_ones_ignored() -> None:
    env = read_environment({DATA_URL: " file:///d ", CHECKPOINT_URL: "", MODEL_URL: "gs://m/x"})
    assert (env.data_url, env.checkpoint_url, env.model_url) == ("file:///d", None, "gs://m/x")


def test_the_pipeline_and_lineage_variables_round_trip() -> None:
    env = Environment(
        model_alias="champion",
        eval_data_url="file:///s/checkpoints/p/data/k/test",
        image="registry/mlstack:1.2",
        git_commit="0123abc",
        pipeline_run="nightly/20261203T020000Z-ab12/small-a",
        parent_version="20261202T020000Z-cd34.small-b",
    )
    variables = env.as_env()
    assert variables[EVAL_DATA_URL] == "file:///s/checkpoints/p/data/k/test"
    assert variables[MODEL_ALIAS] == "champion"
    assert variables[PIPELINE_RUN] == "nightly/20261203T020000Z-ab12/small-a"
    assert read_environment(variables) == env
    # Blank is unset.
    assert read_environment({IMAGE: "  ", GIT_COMMIT: ""}) == Environment()
