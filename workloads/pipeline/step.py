"""What a pipeline step runs, and the entry point of the steps that are not training.

`command_for(step, ctx)` is the one place where a step becomes a command and its environment
contract: the local executor runs it as processes on this machine, the cluster executor puts it
into the step's Job or JobSet. train runs the training entry point
(`python -m mlstack.workloads.train.main`); prepare, evaluate, select and promote run

    python -m mlstack.workloads.pipeline.step --run-url URL --step NAME

which reads the run's pipeline.json, state.json (its cache key) and the `output.json` of the
steps it waits for, does the step, and writes its own `steps/<name>/output.json` last (exit 0),
or prints one `error:` line and exits non-zero (2: the run's files are unreadable or the
step's inputs missing; 1: the step itself failed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mlstack.workloads import contract
from mlstack.workloads.pipeline.executor import StepCommand, StepContext
from mlstack.workloads.pipeline.spec import Pipeline, SpecError, Step
from mlstack.workloads.storage import NotFound, StoreError, open_store

if TYPE_CHECKING:
    pass

#: The interpreter in the image; the local executor runs its own (`sys.executable`) instead.
PYTHON = "python"
RUN_URL = "MLSTACK_PIPELINE_RUN_URL"
STEP = "MLSTACK_PIPELINE_STEP"
#: The test split a train step evaluates on every `eval_every_steps` (D's training loop).
EVAL_DATA_URL = contract.EVAL_DATA_URL
#: Lineage written next to the exported bundle (D's export).
IMAGE = "MLSTACK_IMAGE"
GIT_COMMIT = "MLSTACK_GIT_COMMIT"
PIPELINE_RUN = "MLSTACK_PIPELINE_RUN"
PARENT_VERSION = "MLSTACK_PARENT_VERSION"
#: Training flags from a train step's config (None: the model config's default).
TRAIN_FLAGS = {
    "steps": "--steps",
    "global_batch_size": "--global-batch-size",
    "learning_rate": "--learning-rate",
    "checkpoint_every_steps": "--checkpoint-every",
    "eval_every_steps": "--eval-every",
    "fsdp": "--fsdp",
    "dtype": "--dtype",
    "seed": "--seed",
}
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class StepError(Exception):
    """The step cannot do its work; one line (what, where, the fix)."""


def version_name(run_id: str, step: str) -> str:
    """The registry version a train step exports."""
    return f"{run_id}.{step}"


def exported_outputs(step: Step, ctx: StepContext) -> dict[str, Any] | None:
    """A finished train step's outputs, as both executors report them: the version it exported
    (`versions/<run>.<step>/` in the model's registry), the registry URL and the training step
    it was exported at (bundle.json's `training.step`, workloads/train/export.py); None when
    that version's bundle.json is missing or unreadable (the step exported nothing)."""
    version = version_name(ctx.run_id, step.name)
    models = open_store(ctx.pipeline.model_url)
    try:
        bundle = json.loads(models.get_bytes(f"versions/{version}/bundle.json"))
    except (NotFound, ValueError):
        return None
    training = bundle.get("training") if isinstance(bundle, dict) else None
    return {
        "version": version,
        "model_url": ctx.pipeline.model_url,
        "step": training.get("step") if isinstance(training, dict) else None,
    }


def command_for(step: Step, ctx: StepContext) -> StepCommand:
    """The command and environment of one attempt of `step`."""
    env = {RUN_URL: ctx.run_url, STEP: step.name}
    if step.kind != "train":
        argv = (PYTHON, "-m", "mlstack.workloads.pipeline.step", "--run-url", ctx.run_url)
        return StepCommand(argv=(*argv, "--step", step.name), env=env)
    config = step.config
    argv = [PYTHON, "-m", "mlstack.workloads.train.main", "--config", str(config["model"])]
    for name, flag in TRAIN_FLAGS.items():
        if config.get(name) is not None:
            argv += [flag, str(config[name])]
    argv += ["--version", version_name(ctx.run_id, step.name)]
    prepared = _prepared(ctx.inputs)
    if prepared is None:
        raise StepError(
            f"train step {step.name!r} waits for no prepare step; fix: add the prepare step "
            "to its `after`"
        )
    env |= {
        contract.DATA_URL: prepared["train_url"],
        EVAL_DATA_URL: prepared["test_url"],
        contract.CHECKPOINT_URL: f"{ctx.run_url}/steps/{step.name}/checkpoints",
        contract.MODEL_URL: ctx.pipeline.model_url,
        IMAGE: ctx.pipeline.image,
        PIPELINE_RUN: f"{ctx.pipeline.name}/{ctx.run_id}/{step.name}",
    }
    if os.environ.get(GIT_COMMIT):
        env[GIT_COMMIT] = os.environ[GIT_COMMIT]
    champion = _champion(ctx.pipeline.model_url)
    if champion:
        env[PARENT_VERSION] = champion
    return StepCommand(argv=tuple(argv), env=env, processes=int(config.get("num_hosts") or 1))


def _prepared(inputs: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The outputs of the prepare step among `inputs` (the one with the splits)."""
    return next((out for out in inputs.values() if "train_url" in out and "test_url" in out), None)


def _champion(model_url: str) -> str | None:
    """The version the model's `champion` alias names, None when it was never set; a corrupt
    alias file is a StepError naming it (the registry's own reading and checks)."""
    from mlstack.workloads.registry import Registry, RegistryError

    try:
        found = Registry(open_store(model_url)).alias("champion")
    except RegistryError as exc:
        raise StepError(str(exc)) from None
    return found.version if found is not None else None


class _Run:
    """The run a step process belongs to, read from the store."""

    def __init__(self, run_url: str, name: str) -> None:
        self.store = open_store(run_url)
        self.pipeline = Pipeline.loads(
            self._read("pipeline.json", "the run has no pipeline.json"),
            self.store.url("pipeline.json"),
        )
        try:
            self.step = self.pipeline.step(name)
        except KeyError:
            names = ", ".join(step.name for step in self.pipeline.steps)
            raise StepError(
                f"run {run_url} has no step {name!r}; fix: use one of {names}"
            ) from None
        state = self._json("state.json")
        self.run_id = str(state["run_id"])
        self.key = str(state["steps"][name].get("key") or "")

    def _read(self, key: str, why: str) -> bytes:
        try:
            return self.store.get_bytes(key)
        except NotFound:
            raise StepError(
                f"{self.store.url(key)} is missing ({why}); fix: rerun the run"
            ) from None

    def _json(self, key: str) -> Any:
        raw = self._read(key, "written by the engine before the step starts")
        try:
            return json.loads(raw)
        except ValueError:
            raise StepError(f"{self.store.url(key)} is not JSON; fix: rerun the run") from None

    def output(self, name: str) -> dict[str, Any]:
        return self._json(f"steps/{name}/output.json")

    def ancestors(self, name: str) -> list[Step]:
        """Every step `name` waits for, directly or not, nearest first."""
        found: list[Step] = []
        frontier = list(self.pipeline.step(name).after)
        while frontier:
            upstream = self.pipeline.step(frontier.pop(0))
            if upstream not in found:
                found.append(upstream)
                frontier += upstream.after
        return found

    def test_url(self) -> str:
        prepare = next((s for s in self.ancestors(self.step.name) if s.kind == "prepare"), None)
        if prepare is None:
            raise StepError(
                f"step {self.step.name!r} has no prepare step before it, so no test split; "
                "fix: make it wait (through its train steps) for a prepare step"
            )
        return str(self.output(prepare.name)["test_url"])

    def write_output(self, outputs: Mapping[str, Any]) -> None:
        self.store.put_bytes(
            f"steps/{self.step.name}/output.json", (json.dumps(outputs, indent=2) + "\n").encode()
        )


def prepare_step(run: _Run) -> dict[str, Any]:
    from mlstack.workloads.train.data import split_dataset

    config = run.step.config
    source = f"{run.pipeline.datasets_url.rstrip('/')}/{config['dataset']}"
    data = f"{run.pipeline.work_url.rstrip('/')}/data/{run.key}"
    train_url, test_url = f"{data}/train", f"{data}/test"
    result = split_dataset(
        source,
        train_url,
        test_url,
        test_fraction=float(config.get("test_fraction", 0.05)),
        seed=int(config.get("seed", 0)),
    )
    from mlstack.workloads.pipeline.engine import read_source_sha256

    return {
        "train_url": train_url,
        "test_url": test_url,
        "source_sha256": read_source_sha256(source),
        "train_sha256": result.train_index_sha256,
        "test_sha256": result.test_index_sha256,
    }


def evaluate_step(run: _Run) -> dict[str, Any]:
    from mlstack.workloads.train.evaluate import evaluate_version

    config = run.step.config
    split = str(config.get("split", "test"))
    data_url = run.test_url()
    evals: dict[str, dict[str, float]] = {}
    for name in run.step.after:
        if run.pipeline.step(name).kind != "train":
            continue
        version = str(run.output(name)["version"])
        result = evaluate_version(
            run.pipeline.model_url,
            version,
            data_url,
            split=split,
            max_batches=config.get("max_batches"),
            batch_size=int(config.get("batch_size", 8)),
        )
        evals[version] = {
            f"{split}.loss": result["loss"],
            f"{split}.perplexity": result["perplexity"],
        }
    if not evals:
        raise StepError(
            f"evaluate step {run.step.name!r} waits for no train step; fix: list the train "
            "steps in its `after`"
        )
    return {"evals": evals}


def _eval_value(run: _Run, version: str, metric: str) -> float:
    """`metric` ("<split>.loss") of `version` from its evals/<split>.json; evaluated on the
    run's test split first when the version has no such eval (an older champion)."""
    split, _, measure = metric.partition(".")
    models = open_store(run.pipeline.model_url)
    key = f"versions/{version}/evals/{split}.json"
    try:
        return float(json.loads(models.get_bytes(key))[measure])
    except NotFound:
        from mlstack.workloads.train.evaluate import evaluate_version

        result = evaluate_version(
            run.pipeline.model_url,
            version,
            run.test_url(),
            split=split,
            max_batches=None,
            batch_size=8,
        )
        return float(result[measure])
    except (ValueError, KeyError, TypeError):
        raise StepError(
            f"{models.url(key)} has no number {measure!r}; fix: evaluate again"
        ) from None


def select_step(run: _Run) -> dict[str, Any]:
    config = run.step.config
    metric = str(config.get("metric", "test.loss"))
    margin = float(config.get("min_improvement", 0.0))
    candidates: dict[str, float] = {}
    for name in run.step.after:
        if run.pipeline.step(name).kind == "evaluate":
            for version, values in run.output(name)["evals"].items():
                if metric not in values:
                    raise StepError(
                        f"step {name!r} measured {', '.join(values)}, not {metric!r}; fix: "
                        "select by one of those"
                    )
                candidates[version] = float(values[metric])
    if not candidates:
        raise StepError(
            f"select step {run.step.name!r} waits for no evaluate step; fix: list one in `after`"
        )
    best = min(candidates, key=lambda version: (candidates[version], version))
    champion = _champion(run.pipeline.model_url)
    result: dict[str, Any] = {
        "selected": best,
        "metric": metric,
        "value": candidates[best],
        "champion": champion,
        "champion_value": None,
    }
    if champion is None:
        return result | {"reason": f"{best} has the lowest {metric} and there is no champion"}
    value = candidates[champion] if champion in candidates else _eval_value(run, champion, metric)
    result["champion_value"] = value
    if candidates[best] <= value - margin and best != champion:
        return result | {
            "reason": f"{best}'s {metric} {candidates[best]:.4f} beats champion {champion}'s "
            f"{value:.4f} by at least {margin}"
        }
    return result | {
        "selected": None,
        "reason": f"the best candidate {best} ({metric} {candidates[best]:.4f}) does not beat "
        f"champion {champion} ({value:.4f}) by {margin}",
    }


def promote_step(run: _Run) -> dict[str, Any]:
    from mlstack.workloads.registry import Registry

    config = run.step.config
    select = next((n for n in run.step.after if run.pipeline.step(n).kind == "select"), None)
    if select is None:
        raise StepError(
            f"promote step {run.step.name!r} waits for no select step; fix: add one to `after`"
        )
    chosen = run.output(select)
    version = chosen.get("selected")
    if not version:
        return {"moves": [], "skipped": chosen.get("reason") or "nothing selected"}
    registry = Registry(open_store(run.pipeline.model_url))
    by = f"pipeline {run.pipeline.name}/{run.run_id}/{run.step.name}"
    alias = str(config.get("alias", "canary"))
    moves = _move(registry, alias, version, by, str(chosen.get("reason") or "selected"))
    then = config.get("then_alias")
    if not then:
        return {"moves": moves, "skipped": None}
    soak_s = float(config.get("soak_s", 0))
    time.sleep(soak_s)
    current = registry.alias(alias)
    if current is None or current.version != version:
        return {
            "moves": moves,
            "skipped": f"{alias} no longer names {version} after the {soak_s:g} s soak (rolled "
            f"back); {then} not moved",
        }
    return {
        "moves": moves + _move(registry, str(then), version, by, f"soaked {soak_s:g} s"),
        "skipped": None,
    }


def _move(registry: Any, alias: str, version: str, by: str, reason: str) -> list[dict[str, Any]]:
    """Move `alias` to `version` (the move, or none when it names it already). The registry's
    compare-and-swap refuses a move when the alias moved since it was read: AliasRaced, whose
    message names the winner, fails the step."""
    current = registry.alias(alias)
    if current is not None and current.version == version:
        return []
    registry.move_alias(
        alias, version, expect=current.version if current else None, by=by, reason=reason
    )
    return [{"alias": alias, "from": current.version if current else None, "to": version}]


KINDS = {
    "prepare": prepare_step,
    "evaluate": evaluate_step,
    "select": select_step,
    "promote": promote_step,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlstack.workloads.pipeline.step",
        description="Run one prepare, evaluate, select or promote step of a pipeline run.",
    )
    parser.add_argument("--run-url", required=True, help="<work_url>/runs/<run-id>")
    parser.add_argument("--step", required=True, help="the step's name")
    args = parser.parse_args(argv)
    try:
        run = _Run(args.run_url, args.step)
    except (StepError, SpecError, StoreError, KeyError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    action = KINDS.get(run.step.kind)
    if action is None:
        print(
            f"error: step {args.step!r} is a {run.step.kind} step, which runs the training "
            "entry point, not this one; fix: run the command `command_for` gives",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    try:
        outputs = action(run)
    except Exception as exc:  # one line for the engine's log: the step failed, and why
        print(f"error: {run.step.kind} step {args.step!r}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    run.write_output(outputs)
    return 0


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, StepError | StoreError) else f"{type(exc).__name__}: {text}"


if __name__ == "__main__":
    sys.exit(main())
