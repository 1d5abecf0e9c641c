"""The runtime pipeline document: round trip, refusals, DAG checks, ordering."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlstack.workloads.pipeline.spec import (
    Pipeline,
    SpecError,
    Step,
    dag_problems,
    find_cycle,
    topological_order,
)


def _pipeline(*steps: Step) -> Pipeline:
    return Pipeline(
        name="nightly",
        team="language",
        model="lm",
        work_url="file:///s/checkpoints/language/pipelines/nightly",
        model_url="file:///s/models/language/lm",
        datasets_url="file:///s/datasets",
        image="local",
        steps=steps,
        schedule="0 2 * * *",
    )


LOOP = (
    Step("data", "prepare", config={"dataset": "pystdlib", "test_fraction": 0.05, "seed": 0}),
    Step("a", "train", after=("data",), config={"model": "tiny", "learning_rate": 0.001}),
    Step("b", "train", after=("data",), config={"model": "tiny", "learning_rate": 0.003}),
    Step("eval", "evaluate", after=("a", "b"), config={"split": "test"}),
    Step("pick", "select", after=("eval",), config={"metric": "test.loss"}),
    Step("ship", "promote", after=("pick",), config={"alias": "canary"}),
)


def test_round_trip_keeps_every_field() -> None:
    pipeline = _pipeline(*LOOP)
    again = Pipeline.loads(pipeline.dumps(), "pipeline.json")
    assert again == pipeline
    assert [step.name for step in again.steps] == ["data", "a", "b", "eval", "pick", "ship"]
    assert again.step("b").config["learning_rate"] == 0.003


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.update(format="other"), "not an mlstack pipeline document"),
        (lambda d: d.update(format_version=99), "format version 99"),
        (lambda d: d.pop("model_url"), "malformed pipeline document (KeyError"),
        (lambda d: d["steps"][0].update(kind="deploy"), "unknown step kind 'deploy'"),
        (lambda d: d["steps"][0].update(after=["ship"]), "cycle: "),
    ],
)
def test_a_bad_document_is_one_line_naming_where(mutate: object, expected: str) -> None:
    data = _pipeline(*LOOP).to_json()
    mutate(data)  # type: ignore[operator]
    with pytest.raises(SpecError) as caught:
        Pipeline.from_json(data, "s3://b/runs/r/pipeline.json")
    message = str(caught.value)
    assert message.startswith("s3://b/runs/r/pipeline.json: ")
    assert expected in message
    assert "\n" not in message and "fix: " in message


def test_not_json_is_refused() -> None:
    with pytest.raises(SpecError, match=r"^x\.json: not JSON"):
        Pipeline.loads(b"{", "x.json")


def test_dag_problems_names_each_problem() -> None:
    steps = (
        Step("a", "prepare"),
        Step("a", "train", after=("nope",)),
        Step("b/c", "train"),
        Step("self", "evaluate", after=("self",)),
    )
    problems = dag_problems(steps)
    assert "step name 'a' is used twice" in problems
    assert "step 'a' waits for unknown step 'nope'" in problems
    assert "step name 'b/c' is not a plain name" in problems
    assert "step 'self' waits for itself" in problems


def test_find_cycle_returns_the_cycle_as_a_path() -> None:
    steps = (
        Step("x", "prepare"),
        Step("a", "train", after=("x", "c")),
        Step("b", "evaluate", after=("a",)),
        Step("c", "select", after=("b",)),
    )
    cycle = find_cycle(steps)
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}
    assert find_cycle(LOOP) is None


@st.composite
def dags(draw: st.DrawFn) -> tuple[Step, ...]:
    """Random DAGs: step i may wait only for steps before it in a random permutation."""
    count = draw(st.integers(min_value=1, max_value=12))
    names = [f"s{i}" for i in range(count)]
    rank = draw(st.permutations(names))
    steps = []
    for name in names:
        earlier = [other for other in rank[: rank.index(name)]]
        after = draw(st.lists(st.sampled_from(earlier), unique=True)) if earlier else []
        steps.append(Step(name, "train", after=tuple(after)))
    return tuple(steps)


@given(dags())
def test_topological_order_puts_every_step_after_what_it_waits_for(steps: tuple[Step, ...]) -> None:
    assert dag_problems(steps) == []
    order = topological_order(steps)
    assert sorted(order) == sorted(step.name for step in steps)
    position = {name: index for index, name in enumerate(order)}
    for step in steps:
        for upstream in step.after:
            assert position[upstream] < position[step.name]


@given(dags(), st.data())
def test_an_added_back_edge_is_always_found(steps: tuple[Step, ...], data: st.DataObject) -> None:
    with_edges = [step for step in steps if step.after]
    if not with_edges:
        return
    step = data.draw(st.sampled_from(with_edges))
    upstream = data.draw(st.sampled_from(step.after))
    bent = tuple(
        Step(s.name, s.kind, after=(*s.after, step.name)) if s.name == upstream else s
        for s in steps
    )
    cycle = find_cycle(bent)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert any("cycle" in problem for problem in dag_problems(bent))
    with pytest.raises(ValueError, match="cycle"):
        topological_order(bent)


def test_documents_are_stable_json() -> None:
    text = _pipeline(*LOOP).dumps()
    assert json.loads(text)["steps"][3]["after"] == ["a", "b"]
    assert text == _pipeline(*LOOP).dumps()
