"""Serving bundles: what the serving workload loads, written to the models bucket.

A bundle lives at `<model url>/versions/<version>/` and holds `params.npz` (the parameters,
one array per dotted name) and `bundle.json` (format, version, the model config, the tokenizer
facts, the training run's step, config and last metrics). `<model url>/latest` is a small JSON
pointer to the newest version, written after every object of that version, so a reader that
follows it always finds a whole bundle.
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
    """Write a bundle of `params` (flat host arrays) and point `latest` at it; its version."""
    version = bundle_version(step)
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
    return manifest, ModelConfig(**manifest["model"]), params
