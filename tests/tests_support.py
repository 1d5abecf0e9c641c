"""Helpers shared by test modules in different folders (tests/ is on sys.path via conftest)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from moto.server import ThreadedMotoServer

from mlstack.stacks import offline
from mlstack.stacks.catalog import MachineType
from mlstack.stacks.errors import ConfigError, Problem
from mlstack.stacks.plan import Plan, PlannedResource
from mlstack.stacks.stackfile import read_stack
from mlstack.stacks.validate import load_platform
from mlstack.workloads.storage import FileStore, PathLike, TransferSettings

#: Variables that would send boto3 somewhere else than the test's server, or to real credentials.
_AWS_VARS = (
    *("MLSTACK_S3_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"),
    *("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN"),
)


@contextmanager
def moto_server(
    region: str = "us-east-1", wrap: Callable[[Any], Any] | None = None
) -> Iterator[str]:
    """moto's AWS server on 127.0.0.1 (an ephemeral port), with dummy credentials and no
    config files in the environment while it runs; yields its URL and stops it after.

    `wrap` gets moto's WSGI application and returns the one to serve (a middleware that
    models an AWS behaviour moto lacks)."""
    with pytest.MonkeyPatch.context() as env:
        for var in _AWS_VARS:
            env.delenv(var, raising=False)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", region)
        env.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        if wrap is not None:
            # werkzeug's server reads `.app` for each request.
            server._server.app = wrap(server._server.app)  # type: ignore[union-attr]
        try:
            host, port = server.get_host_and_port()
            url = f"http://{host}:{port}"
            # moto keeps its backends per process, not per server: without a reset, buckets
            # (and their policies) from an earlier test's server are still there.
            requests.post(f"{url}/moto-api/reset", timeout=10).raise_for_status()
            yield url
        finally:
            server.stop()


def problems(config: Any) -> list[Problem]:
    """Every problem of a config that must not load."""
    with pytest.raises(ConfigError) as exc:
        load_platform(config)
    return list(exc.value.problems)


def only_problem(config: Any) -> Problem:
    """The config's single problem, checked to read as one line with a fix."""
    found = problems(config)
    assert len(found) == 1, [str(p) for p in found]
    p = found[0]
    line = str(p)
    assert "\n" not in line and line.startswith(f"{p.path}: ") and "; fix: " in line, line
    assert p.fix.strip()
    return p


@dataclass(frozen=True)
class Options:
    """Resource options of one registration (not part of PlannedResource)."""

    protect: bool
    retain_on_delete: bool
    ignore_changes: tuple[str, ...]
    dependencies: frozenset[str]
    replace_on_changes: tuple[str, ...] = ()
    delete_before_replace: bool = False


@dataclass(frozen=True)
class PlanWithOptions:
    """A shipped stack's offline plan with each resource's options, by URN."""

    stack: str
    plan: Plan
    options: Mapping[str, Options]

    def get(self, type_: str, name: str) -> PlannedResource:
        return self.plan.get(type_, name)

    def of_type(self, type_: str) -> list[PlannedResource]:
        return self.plan.of_type(type_)

    def opts(self, resource: PlannedResource) -> Options:
        return self.options[resource.urn]

    def children(self, parent: PlannedResource, type_: str) -> list[PlannedResource]:
        return [r for r in self.of_type(type_) if r.parent == parent.urn]


def plan_with_options(stack: str) -> tuple[Plan, dict[str, Options]]:
    """Plan a shipped stack (or a stack file) with a RecordingMonitor that also keeps each
    registration's protect, retainOnDelete, ignoreChanges, dependencies, replaceOnChanges and
    deleteBeforeReplace."""
    options: dict[str, Options] = {}

    class OptionsMonitor(offline.RecordingMonitor):
        def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
            response = super().RegisterResource(request)
            options[response.urn] = Options(
                protect=bool(request.protect),
                retain_on_delete=bool(request.retainOnDelete),
                ignore_changes=tuple(request.ignoreChanges),
                dependencies=frozenset(request.dependencies),
                replace_on_changes=tuple(request.replaceOnChanges),
                delete_before_replace=bool(request.deleteBeforeReplace),
            )
            return response

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(offline, "RecordingMonitor", OptionsMonitor)
        plan = offline.run_plan(read_stack(stack))
    return plan, options


def bad_extra_manifests() -> list[dict[str, Any]]:
    """Extra objects for the lab stack that break several rules at once: a privileged GPU Job
    with a :latest image from Docker Hub, no queue label and no GPU toleration, and a wildcard
    ClusterRole bound to a group as cluster-admin."""
    return [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "rogue", "namespace": "vision"},
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "train",
                                "image": "docker.io/library/python:latest",
                                "securityContext": {"privileged": True},
                                "resources": {"limits": {"nvidia.com/gpu": 8}},
                            }
                        ],
                    }
                }
            },
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "everything"},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "vision-admins"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "lab-vision"}
            ],
        },
    ]


class RecordingStore(FileStore):
    """A directory store that records each write, delete and download once it is done, in
    order: ("put" | "upload" | "delete" | "download", key)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, TransferSettings())
        self.calls: list[tuple[str, str]] = []

    @property
    def writes(self) -> list[str]:
        return [key for op, key in self.calls if op in ("put", "upload")]

    def put_bytes(self, key: str, data: bytes) -> None:
        super().put_bytes(key, data)
        self.calls.append(("put", key))

    def upload_file(self, local_path: PathLike, key: str) -> None:
        super().upload_file(local_path, key)
        self.calls.append(("upload", key))

    def delete(self, key: str) -> None:
        super().delete(key)
        self.calls.append(("delete", key))

    def download_file(self, key: str, local_path: PathLike) -> None:
        super().download_file(key, local_path)
        self.calls.append(("download", key))


def wire_ints(value: Any) -> Any:
    """Wire form carries every number as a float; the provider sends integral ones as ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: wire_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [wire_ints(v) for v in value]
    return value


def machine_samples(table: str) -> list[MachineType]:
    """Machine shapes written as the clouds' pages list them, one per line:
    `name vCPUs memory-GiB [GPUs accelerator]`."""
    machines = []
    for line in table.strip().splitlines():
        name, vcpus, memory, *gpu = line.split()
        gpus, accelerator = (int(gpu[0]), gpu[1]) if gpu else (0, None)
        machines.append(MachineType(name, int(vcpus), float(memory), gpus, accelerator))
    return machines
