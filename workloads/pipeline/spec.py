"""The runtime form of a pipeline: what the engine, both executors and every step read.

The stack side (`workloads.pipelines[]` in the stack config) builds a `Pipeline` and hands it
to the runner as JSON (a ConfigMap on the cluster, a file or the config itself locally); each
run stores its own copy (`runs/<run-id>/pipeline.json`), so a run always reads the pipeline it
started with. Nothing here imports the Pulumi side.

Layout in the store (`work_url` is `<checkpoints>/<team prefix>/pipelines/<pipeline>`, and
`model_url` is `<models>/<team prefix>/<model>`, the model's registry):

    <work_url>/runs/<run-id>/pipeline.json            this run's Pipeline (written first)
    <work_url>/runs/<run-id>/state.json               the run's state (atomically, last)
    <work_url>/runs/<run-id>/steps/<step>/output.json a finished step's outputs
    <work_url>/data/<cache-key>/{train,test}/         a prepare step's splits
    <work_url>/cache/<cache-key>.json                 a finished cacheable step's outputs
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

FORMAT = "mlstack-pipeline"
FORMAT_VERSION = 1
StepKind = Literal["prepare", "train", "evaluate", "select", "promote"]
STEP_KINDS: tuple[str, ...] = get_args(StepKind)
#: Kinds whose result depends only on their inputs, so a finished one is reused by cache key;
#: select and promote read the registry's aliases, which move, and always run.
CACHEABLE_KINDS = frozenset({"prepare", "train", "evaluate"})
#: A step, pipeline or run name: one path segment.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


class SpecError(ValueError):
    """A pipeline document that cannot be read; the message is one line with the fix."""


@dataclass(frozen=True)
class Step:
    """One step: its kind, the steps it waits for, its kind's settings, its retries, and on
    the cluster the manifest (a Job or JobSet) it runs as."""

    name: str
    kind: StepKind
    after: tuple[str, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)
    #: Attempts after the first failure before the run fails.
    retries: int = 1
    #: Cluster only: the Job or JobSet (plain Kubernetes object) the step runs as; the runner
    #: names it per run and fills in the run's URLs.
    manifest: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "after": list(self.after),
            "config": dict(self.config),
            "retries": self.retries,
            "manifest": dict(self.manifest) if self.manifest is not None else None,
        }


@dataclass(frozen=True)
class Pipeline:
    """A pipeline of one team: its steps and where its runs and its model live."""

    name: str
    team: str
    #: The registry model (a directory under the team's prefix in the models bucket).
    model: str
    #: The run area: `<checkpoints>/<team prefix>/pipelines/<name>`.
    work_url: str
    #: The model's registry: `<models>/<team prefix>/<model>`.
    model_url: str
    #: Where source datasets are read: the datasets bucket (`<datasets>`).
    datasets_url: str
    #: The training image reference (part of every cache key); locally "local".
    image: str
    steps: tuple[Step, ...]
    schedule: str | None = None

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "team": self.team,
            "model": self.model,
            "work_url": self.work_url,
            "model_url": self.model_url,
            "datasets_url": self.datasets_url,
            "image": self.image,
            "schedule": self.schedule,
            "steps": [step.to_json() for step in self.steps],
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, data: Any, where: str) -> Pipeline:
        """The pipeline a document describes; SpecError names `where` and what is wrong."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise SpecError(f"{where}: not an mlstack pipeline document; fix: rewrite it")
        if data.get("format_version") != FORMAT_VERSION:
            raise SpecError(
                f"{where}: pipeline format version {data.get('format_version')!r} is not "
                f"{FORMAT_VERSION}; fix: start a new run with this mlstack"
            )
        try:
            steps = tuple(_step(raw) for raw in data["steps"])
            pipeline = cls(
                name=str(data["name"]),
                team=str(data["team"]),
                model=str(data["model"]),
                work_url=str(data["work_url"]),
                model_url=str(data["model_url"]),
                datasets_url=str(data["datasets_url"]),
                image=str(data["image"]),
                steps=steps,
                schedule=data.get("schedule"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(
                f"{where}: malformed pipeline document ({type(exc).__name__}: {exc}); "
                "fix: rewrite it"
            ) from None
        problems = dag_problems(pipeline.steps)
        if problems:
            raise SpecError(f"{where}: {problems[0]}; fix: correct the pipeline's steps")
        return pipeline

    @classmethod
    def loads(cls, text: str | bytes, where: str) -> Pipeline:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SpecError(f"{where}: not JSON ({exc}); fix: rewrite it") from None
        return cls.from_json(data, where)


def _step(raw: Any) -> Step:
    kind = raw["kind"]
    if kind not in STEP_KINDS:
        raise ValueError(f"unknown step kind {kind!r}")
    return Step(
        name=str(raw["name"]),
        kind=kind,
        after=tuple(str(name) for name in raw.get("after", ())),
        config=dict(raw.get("config") or {}),
        retries=int(raw.get("retries", 1)),
        manifest=raw.get("manifest"),
    )


def dag_problems(steps: Sequence[Step]) -> list[str]:
    """Every structural problem of `steps` (duplicate or bad names, unknown `after` names,
    cycles), one phrase each; empty when the steps form a DAG."""
    problems: list[str] = []
    names = [step.name for step in steps]
    seen: set[str] = set()
    for name in names:
        if not NAME.fullmatch(name):
            problems.append(f"step name {name!r} is not a plain name")
        if name in seen:
            problems.append(f"step name {name!r} is used twice")
        seen.add(name)
    for step in steps:
        for upstream in step.after:
            if upstream not in seen:
                problems.append(f"step {step.name!r} waits for unknown step {upstream!r}")
            elif upstream == step.name:
                problems.append(f"step {step.name!r} waits for itself")
    cycle = find_cycle(steps)
    if cycle:
        problems.append("steps wait for each other in a cycle: " + " -> ".join(cycle))
    return problems


def find_cycle(steps: Sequence[Step]) -> list[str] | None:
    """One cycle of `after` edges as a path that starts and ends at the same step, or None."""
    after = {step.name: [name for name in step.after if name != step.name] for step in steps}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for upstream in after.get(name, ()):
            if upstream not in after:
                continue
            if state.get(upstream) == 1:
                return [*path[path.index(upstream) :], upstream]
            if upstream not in state:
                found = visit(upstream)
                if found:
                    return found
        path.pop()
        state[name] = 2
        return None

    for step in steps:
        if step.name not in state:
            found = visit(step.name)
            if found:
                return found
    return None


def topological_order(steps: Sequence[Step]) -> list[str]:
    """Step names so that every step comes after all it waits for; ties keep declared order.
    The steps must form a DAG (`dag_problems` empty)."""
    remaining = {step.name: set(step.after) for step in steps}
    order: list[str] = []
    while remaining:
        ready = [step.name for step in steps if step.name in remaining and not remaining[step.name]]
        if not ready:
            raise ValueError("the steps have a cycle")
        for name in ready:
            del remaining[name]
            order.append(name)
        for waits in remaining.values():
            waits.difference_update(ready)
    return order
