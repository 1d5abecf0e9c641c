"""The offline plan: the real program under Pulumi's SDK mock runtime, every resource recorded.

No Pulumi CLI, provider plugin, network or credentials: `set_mocks` replaces the engine and the
resource monitor with in-process fakes, and `RecordingMonitor` keeps each registration (type,
name, URN, parent, provider, inputs in wire form). Secrets the CLI would decrypt are replaced by
a placeholder and marked secret, so what the program does with them is still visible.
"""

from __future__ import annotations

import gc
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any, cast

import pulumi
from pulumi.runtime import mocks as _mocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

from mlstack.components.backend import get_backend
from mlstack.stacks import program
from mlstack.stacks.errors import ConfigError, Problem
from mlstack.stacks.plan import SECRET_SIG, SECRET_VALUE, Plan, PlannedResource
from mlstack.stacks.stackfile import PROJECT, StackFile
from mlstack.stacks.validate import load_platform
from mlstack.workloads.deploy.checks import workload_notes

SECRET_PLACEHOLDER = "offline-placeholder"


#: (resource type, logical name, inputs) -> placeholder outputs the cloud would compute.
ComputedOutputs = Callable[[str, str, Mapping[str, Any]], Mapping[str, Any]]
#: (invoke token, arguments) -> placeholder results.
CallOutputs = Callable[[str, Mapping[str, Any]], Mapping[str, Any]]


class PlanMocks(pulumi.runtime.Mocks):
    """Every resource is created with its inputs as its state, plus the backend's placeholders
    for what the cloud computes; invokes return nothing."""

    def __init__(
        self, computed: ComputedOutputs | None = None, calls: CallOutputs | None = None
    ) -> None:
        self._computed = computed
        self._calls = calls

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict]:
        state = dict(args.inputs)
        if self._computed is not None:
            state.update(self._computed(args.typ, args.name, args.inputs))
        # A placeholder 'id' (a GCP resource path) is the resource's id, not a property.
        return str(state.pop("id", None) or f"{args.name}-id"), state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list[tuple[str, str]]]:
        if self._calls is None:
            return {}, []
        return dict(self._calls(args.token, args.args)), []


class RecordingMonitor(_mocks.MockMonitor):
    """The SDK's MockMonitor, keeping each registration with its parent and provider."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.records: dict[str, PlannedResource] = {}
        self._lock = threading.Lock()

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
        if request.type == "pulumi:pulumi:Stack":
            return super().RegisterResource(request)
        urn = self.make_urn(request.parent, request.type, request.name)
        _ensure_event_loop()
        inputs = rpc.deserialize_properties(request.object)
        new_id, state = self.mocks.new_resource(
            _mocks.MockResourceArgs(
                typ=request.type,
                name=request.name,
                inputs=inputs,
                provider=request.provider,
                resource_id=request.importId,
                custom=request.custom or False,
            )
        )
        record = PlannedResource(
            type=request.type,
            name=request.name,
            urn=urn,
            parent=request.parent or None,
            custom=bool(request.custom),
            provider=request.provider or None,
            inputs=inputs,
        )
        resource_id = new_id or ""
        with self._lock:
            if urn in self.records:
                # The engine refuses a second registration of a URN; so does the plan.
                raise ValueError(f"duplicate resource URN {urn}")
            self.records[urn] = record
            self.resources[urn] = _mocks.MockMonitor.ResourceRegistration(urn, resource_id, state)
        state_proto = _sync_await(rpc.serialize_properties(state, {}))
        return resource_pb2.RegisterResourceResponse(urn=urn, id=resource_id, object=state_proto)


def pulumi_config(
    stack: StackFile, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> tuple[dict[str, str], list[str], list[str]]:
    """The config map the CLI would hand the program, with secrets as placeholders.

    Returns (config, secret config keys, notes for the user).
    """
    config: dict[str, str] = {}
    secret: list[str] = []
    notes: list[str] = []
    clear = [
        full
        for key in (*required, *optional)
        if (full := f"{PROJECT}:{key}") in stack.config
        and not (isinstance(stack.config[full], Mapping) and "secure" in stack.config[full])
    ]
    if clear:
        # `pulumi config set --secret` writes `key: {secure: v1:...}`; anything else is the
        # secret itself, in clear text in a file that is committed. The value is never shown.
        raise ConfigError(
            [
                Problem(
                    full,
                    "is a secret but is written in clear text",
                    f"remove it from the file and run: pulumi config set --secret {full} "
                    f"<value> -s {stack.name} (then rotate it: it was in the file)",
                )
                for full in clear
            ],
            source=str(stack.path),
        )
    for key, value in stack.config.items():
        if isinstance(value, Mapping) and "secure" in value:
            config[key] = SECRET_PLACEHOLDER
            secret.append(key)
            notes.append(f"{key} is encrypted in {stack.path.name}; the plan uses a placeholder")
        else:
            config[key] = value if isinstance(value, str) else json.dumps(value)
    for key in (*required, *optional):
        full = f"{PROJECT}:{key}"
        if full in config:
            secret.append(full)
        elif key in required:
            config[full] = SECRET_PLACEHOLDER
            secret.append(full)
            notes.append(
                f"{full} is not set; the plan uses a placeholder. Before `pulumi up`: "
                f"pulumi config set --secret {full} <value> -s {stack.name}"
            )
    return config, sorted(set(secret)), notes


def run_program(
    stack_name: str,
    config: dict[str, str],
    secret_keys: list[str],
    computed: ComputedOutputs | None = None,
    calls: CallOutputs | None = None,
) -> tuple[list[PlannedResource], dict[str, Any]]:
    """Run `stacks.program.main` under the mock runtime; returns the records and the outputs."""
    settings.reset_options(project=PROJECT, stack=stack_name, preview=True)
    # Tasks left by an earlier plan in this process must not be awaited by this one.
    cast(Any, settings.SETTINGS).outputs.clear()
    pulumi.runtime.set_all_config(config, secret_keys)
    monitor = RecordingMonitor(PlanMocks(computed, calls))
    pulumi.runtime.set_mocks(
        monitor.mocks, project=PROJECT, stack=stack_name, preview=True, monitor=monitor
    )
    # The runtime allocates many small objects per resource; the default GC thresholds walk
    # the growing heap over and over (about 40% of plan time at 3,000 resources).
    thresholds = gc.get_threshold()
    gc.set_threshold(50_000, 20, 20)
    try:
        _sync_await(run_pulumi_func(program.main))
    finally:
        gc.set_threshold(*thresholds)
    root = settings.get_root_resource()
    exported: dict[str, Any] = dict(getattr(root, "outputs", {}) or {})
    outputs = {k: _resolve(v) for k, v in exported.items()}
    return list(monitor.records.values()), outputs


def _resolve(value: Any) -> Any:
    output = pulumi.Output.from_input(value)
    resolved = _sync_await(output.future())
    if _sync_await(output.is_secret()):
        return {SECRET_SIG: SECRET_VALUE, "value": resolved}
    return resolved


def run_plan(stack: StackFile, secrets: Mapping[str, str] | None = None) -> Plan:
    """Validate the stack's platform, then run the real program on it offline.

    `secrets` are decrypted secret config values by key ("registryPassword"), as `pulumi up`
    hands them to the program; the CLI passes none (the plan uses placeholders), tests pass
    some to see where a value goes. Raises ConfigError (with every problem) before anything
    is declared.
    """
    platform = load_platform(stack.platform, source=str(stack.path))
    backend = get_backend(platform.cloud)
    config, secret_keys, notes = pulumi_config(
        stack, backend.required_secret_keys(platform), backend.optional_secrets
    )
    for key, value in (secrets or {}).items():
        full = f"{PROJECT}:{key}"
        config[full] = value
        secret_keys = sorted({*secret_keys, full})
        notes = [n for n in notes if not n.startswith(f"{full} is not set")]
    notes += backend.notes(platform)
    notes += workload_notes(platform)
    resources, outputs = run_program(
        stack.name,
        config,
        secret_keys,
        lambda type_, name, inputs: backend.offline_outputs(platform, type_, name, inputs),
        lambda token, args: backend.offline_call(platform, token, args),
    )
    return Plan(stack.name, platform, resources, outputs, notes)
