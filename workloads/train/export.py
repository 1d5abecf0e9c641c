"""Serving bundles: what the serving workload loads, written to the models bucket.

A bundle lives at `<model url>/versions/<version>/` and holds `params.npz` (the parameters,
one array per dotted name) and `bundle.json` (format, version, the model config, the tokenizer
facts, the training run's step, config and last metrics). `<model url>/latest` is a small JSON
pointer to the newest version, written after every object of that version, so a reader that
follows it always finds a whole bundle.

A bundle never holds a non-finite parameter: `export_bundle` refuses to write one and
`read_bundle` refuses to return one (a bundle written before this check, or damaged in the
store), so a server never becomes ready on it and keeps the model it has.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
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


def bundle_version(step: int) -> str:
    return f"step-{step:08d}"


def export_bundle(
    store: Store,
    staging: Path,
    *,
    step: int,
    params: dict[str, np.ndarray],
    config: TrainConfig,
    metrics: dict[str, Any],
    dataset_url: str | None,
) -> str:
    """Write a bundle of `params` (flat host arrays) and point `latest` at it; its version.
    Raises ExportError, writing nothing, when a parameter is not finite."""
    version = bundle_version(step)
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
