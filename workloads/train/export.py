"""Serving bundles: what the serving workload loads, written to the models bucket.

A bundle lives at `<model url>/versions/<version>/` and holds `params.npz` (the parameters,
one array per dotted name) and `bundle.json` (format, version, the model config, the tokenizer
facts, the training run's step, config and last metrics). `<model url>/latest` is a small JSON
pointer to the newest version, written after every object of that version, so a reader that
follows it always finds a whole bundle.

A version is `step-<8 digits>` by default, or a name given with the training entry point's
`--version NAME` (a pipeline's `<run-id>.<step>`): the final export is NAME, intermediate ones
(`--export-every`) are `NAME.step-<8 digits>`. Next to the bundle, `lineage.json` records what
the version was trained on and by what (`lineage`), written after the bundle's files and before
`latest` moves.

A bundle never holds a non-finite parameter: `export_bundle` refuses to write one and
`read_bundle` refuses to return one (a bundle written before this check, or damaged in the
store), so a server never becomes ready on it and keeps the model it has.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlstack.workloads.storage import NotFound, Store
from mlstack.workloads.train.configs import ModelConfig, TrainConfig
from mlstack.workloads.train.data import tokenizer_facts

BUNDLE_FORMAT = "mlstack-serving-bundle"
BUNDLE_FORMAT_VERSION = 1
LATEST = "latest"
PARAMS = "params.npz"
MANIFEST = "bundle.json"
LINEAGE = "lineage.json"
#: A version name: a path segment of letters, digits, '.', '_' and '-' that starts with a letter
#: or digit (no '..', no '/': it names a directory of the model store).
VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class ExportError(RuntimeError):
    """The parameters cannot make a bundle."""


def non_finite(params: dict[str, np.ndarray]) -> list[str]:
    """The names of the arrays of `params` that hold a NaN or an infinity, sorted."""
    return sorted(
        name
        for name, value in params.items()
        if np.issubdtype(value.dtype, np.inexact) and not np.isfinite(value).all()
    )


def _describe_non_finite(names: list[str]) -> str:
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"{len(names)} parameter array(s) hold NaN or infinity ({shown})"


def bundle_version(step: int, name: str | None = None, *, final: bool = True) -> str:
    """The version of an export at `step`: `step-<8 digits>` without a name; with one, the
    name for the final export and `<name>.step-<8 digits>` for an intermediate one."""
    if name is None:
        return f"step-{step:08d}"
    return name if final else f"{name}.step-{step:08d}"


def check_version_name(name: str) -> str:
    """`name` when it can name a version; ValueError (one line, with the fix) otherwise."""
    if not VERSION_NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"--version {name!r} is not a version name; fix: use up to 128 letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class Provenance:
    """Where a run comes from, beyond its data and config: the contract's MLSTACK_IMAGE,
    MLSTACK_GIT_COMMIT, MLSTACK_PIPELINE_RUN and MLSTACK_PARENT_VERSION (None when unset)."""

    image: str | None = None
    git_commit: str | None = None
    pipeline_run: str | None = None
    parent_version: str | None = None


def lineage_record(
    *,
    version: str,
    dataset_url: str | None,
    dataset_sha256: str | None,
    eval_dataset_url: str | None,
    eval_dataset_sha256: str | None,
    training: dict[str, Any],
    checkpoint_step: int,
    checkpoint_url: str,
    provenance: Provenance,
) -> dict[str, Any]:
    """The contents of a version's `lineage.json`: what it was trained on and by what."""
    return {
        "version": version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dataset": dataset_url,
        "dataset_sha256": dataset_sha256,
        "eval_dataset": eval_dataset_url,
        "eval_dataset_sha256": eval_dataset_sha256,
        "image": provenance.image,
        "git_commit": provenance.git_commit,
        "training": training,
        "checkpoint_step": checkpoint_step,
        "checkpoint_url": checkpoint_url,
        "pipeline_run": provenance.pipeline_run,
        "parent_version": provenance.parent_version,
    }


def export_bundle(
    store: Store,
    staging: Path,
    *,
    step: int,
    params: dict[str, np.ndarray],
    config: TrainConfig,
    metrics: dict[str, Any],
    dataset_url: str | None,
    version: str | None = None,
    lineage: dict[str, Any] | None = None,
) -> str:
    """Write a bundle of `params` (flat host arrays), then its `lineage` (when given), then
    point `latest` at it; its version (default `step-<8 digits>`). Raises ExportError, writing
    nothing, when a parameter is not finite."""
    version = version or bundle_version(step)
    bad = non_finite(params)
    if bad:
        raise ExportError(
            f"refusing to export step {step} to {store.url()}: {_describe_non_finite(bad)}; "
            "fix: resume from an earlier checkpoint (the training diverged or its state is damaged)"
        )
    local = staging / version
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir(parents=True)
    try:
        np.savez(local / PARAMS, **params)  # pyright: ignore[reportArgumentType]
        manifest = {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_FORMAT_VERSION,
            "version": version,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model": asdict(config.model),
            "tokenizer": tokenizer_facts(),
            "training": {
                "config": config.name,
                "step": step,
                "dataset": dataset_url,
                "metrics": metrics,
            },
        }
        (local / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        store.upload_dir(local, f"versions/{version}")
    finally:
        shutil.rmtree(local, ignore_errors=True)
    if lineage is not None:
        record = {**lineage, "version": version}
        store.put_bytes(
            f"versions/{version}/{LINEAGE}", (json.dumps(record, indent=2) + "\n").encode()
        )
    pointer = {"version": version, "path": f"versions/{version}/", "step": step}
    store.put_bytes(LATEST, (json.dumps(pointer) + "\n").encode())
    return version


def latest_version(store: Store) -> str | None:
    """The version `latest` points at, or None when nothing was exported."""
    try:
        return json.loads(store.get_bytes(LATEST))["version"]
    except NotFound:
        return None


def read_bundle(
    store: Store, version: str, staging: Path
) -> tuple[dict[str, Any], ModelConfig, dict[str, np.ndarray]]:
    """(manifest, model config, flat params) of one exported version."""
    manifest = json.loads(store.get_bytes(f"versions/{version}/{MANIFEST}"))
    if manifest.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"{store.url(f'versions/{version}')} is not an mlstack serving bundle")
    local = staging / f"read-{version}.npz"
    store.download_file(f"versions/{version}/{PARAMS}", local)
    try:
        with np.load(local, allow_pickle=False) as archive:
            params = {name: archive[name] for name in archive.files}
    finally:
        local.unlink(missing_ok=True)
    bad = non_finite(params)
    if bad:
        raise ValueError(
            f"{store.url(f'versions/{version}')} is not servable: {_describe_non_finite(bad)}; "
            "fix: export a good version and point latest at it (or pin one)"
        )
    return manifest, ModelConfig(**manifest["model"]), params
