"""The cluster executor: each step of a run as a Job (or a JobSet for train) in the team's
namespace, queued by the team's LocalQueue so that Kueue admits one step at a time and no quota
is held for steps that are not running.

The stack side renders each step's object (`Step.manifest`: the pool, the image, the queue and
priority labels, the static env); this module names it for the run, labels it, puts the step's
command and contract env (`step.command_for`) into its container, creates it, follows it to its
end and reads the step's outputs. It is the runtime layer: the Kubernetes REST API through the
standard library only (`KubeJobsApi`), no client package and nothing of the Pulumi side.

The runner may be restarted mid-run (its pod evicted, the node drained): a step's object carries
the run's and the step's labels, so a restarted runner finds it and follows it instead of
creating a second one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from mlstack.workloads import contract
from mlstack.workloads.pipeline.executor import (
    StepCancelled,
    StepCommand,
    StepContext,
    StepFailed,
)
from mlstack.workloads.pipeline.spec import Step
from mlstack.workloads.pipeline.step import StepError, exported_outputs, version_name
from mlstack.workloads.pipeline.step import command_for as step_command_for
from mlstack.workloads.storage import NotFound, StoreError, open_store

Kind = Literal["Job", "JobSet"]
Propagation = Literal["Background", "Foreground"]

PIPELINE_LABEL = "mlstack.dev/pipeline"
RUN_LABEL = "mlstack.dev/pipeline-run"
STEP_LABEL = "mlstack.dev/pipeline-step"
#: Which attempt of the step the object runs (an annotation: informational, for `kubectl`).
ATTEMPT_ANNOTATION = "mlstack.dev/pipeline-attempt"
#: Kueue's label naming the LocalQueue (the stack side sets it; kept as rendered).
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

#: group/version and plural of each kind, for the REST paths.
API: dict[str, tuple[str, str]] = {
    "Job": ("apis/batch/v1", "jobs"),
    "JobSet": ("apis/jobset.x-k8s.io/v1alpha2", "jobsets"),
}
#: The condition types that end each kind: batch/v1 JobStatus.conditions are "Complete" or
#: "Failed" (the JobCondition type's API description: "Type of job condition, Complete or
#: Failed"); JobSet's are "Completed" and "Failed" (JobSetConditionType in
#: kubernetes-sigs/jobset api/jobset/v1alpha2/jobset_types.go).
DONE_CONDITIONS: dict[str, tuple[str, str]] = {
    "Job": ("Complete", "Failed"),
    "JobSet": ("Completed", "Failed"),
}
#: The Job controller's suffix on a pod name; JobSet's webhook checks the longest pod name with
#: it (kubernetes-sigs/jobset#409: `<jobset>-<rjob>-<job index>-<pod index>-abcde` must be a
#: DNS-1035 label of at most 63 characters), which is what bounds a JobSet's own name.
POD_SUFFIX = "-abcde"
DNS_LABEL_MAX = 63
#: Environment variables the object itself sets on the cluster (from the JobSet's pod names
#: and each pod's completion index): the step's command never overrides them.
CLUSTER_ENV = frozenset({contract.COORDINATOR_ADDRESS, contract.NUM_PROCESSES, contract.PROCESS_ID})
#: HTTP statuses worth retrying: the API server is busy or restarting.
TRANSIENT = frozenset({0, 429, 500, 502, 503, 504})
#: Consecutive transient errors before a step gives up.
MAX_TRANSIENT = 6

_NOT_DNS = re.compile(r"[^a-z0-9-]+")
_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
T = TypeVar("T")


class ApiError(Exception):
    """A Kubernetes API call that failed: the verb, the object and the HTTP status, one line."""

    def __init__(self, verb: str, what: str, status: int, message: str = "") -> None:
        self.verb = verb
        self.what = what
        self.status = status
        detail = f" ({message})" if message else ""
        text = f"{verb} {what}: HTTP {status}{detail}" if status else f"{verb} {what}{detail}"
        if status == 403:
            text += (
                f"; fix: the runner's ServiceAccount lacks the RBAC verb {verb!r} on "
                f"{what.split(' ', 1)[0]}s: grant it in the pipeline-runner Role (mlstack up)"
            )
        super().__init__(text)

    @property
    def transient(self) -> bool:
        return self.status in TRANSIENT


class JobsApi(Protocol):
    """The few calls the executor makes, on Jobs and JobSets of one namespace."""

    def create(self, namespace: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create the object; ApiError (409 when the name is taken)."""
        ...

    def get(self, namespace: str, kind: Kind, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        ...

    def delete(
        self, namespace: str, kind: Kind, name: str, propagation: Propagation = "Background"
    ) -> None:
        """Delete it (and its pods, by propagation); an object already gone is no error."""
        ...

    def list(self, namespace: str, kind: Kind, selector: Mapping[str, str]) -> list[dict[str, Any]]:
        """The objects whose labels equal `selector`'s."""
        ...


def _label_selector(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def _describe(kind: str, namespace: str, name: str) -> str:
    return f"{kind} {namespace}/{name}"


@dataclass(frozen=True)
class InCluster:
    """How a pod reaches its API server: the Service env and the mounted ServiceAccount."""

    host: str
    port: str
    token_file: Path
    ca_file: Path
    namespace: str
    #: https in a cluster; http only for a local stand-in API server in tests.
    scheme: str = "https"

    SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

    @classmethod
    def from_env(cls, env: Mapping[str, str], sa_dir: Path | None = None) -> InCluster:
        sa = sa_dir or cls.SA_DIR
        host = env.get("KUBERNETES_SERVICE_HOST")
        port = env.get("KUBERNETES_SERVICE_PORT")
        if not host or not port:
            raise ApiError(
                "connect to",
                "the Kubernetes API",
                0,
                "KUBERNETES_SERVICE_HOST/PORT are not set: the runner runs inside the cluster; "
                "fix: start a run with `mlstack pipeline run STACK PIPELINE`",
            )
        try:
            namespace = (sa / "namespace").read_text().strip()
        except OSError as exc:
            raise ApiError(
                "read",
                str(sa / "namespace"),
                0,
                f"{exc.strerror}; fix: mount the pipeline-runner ServiceAccount's token "
                "(automountServiceAccountToken: true)",
            ) from None
        return cls(host, port, sa / "token", sa / "ca.crt", namespace)

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


class KubeJobsApi:
    """`JobsApi` over the in-cluster REST API, with the pod's ServiceAccount token.

    The token is re-read on every call: the kubelet rotates a projected token in place.
    """

    def __init__(
        self, cluster: InCluster, timeout_s: float = 30.0, tls: ssl.SSLContext | None = None
    ) -> None:
        self.cluster = cluster
        self.timeout_s = timeout_s
        # The API server's certificate is signed by the cluster CA mounted with the token.
        self._tls = tls or ssl.create_default_context(cafile=str(cluster.ca_file))

    def _path(self, namespace: str, kind: str, name: str | None = None) -> str:
        group_version, plural = API[kind]
        path = f"/{group_version}/namespaces/{namespace}/{plural}"
        return f"{path}/{name}" if name else path

    def _call(
        self, verb: str, what: str, method: str, path: str, body: Any = None
    ) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.cluster.base_url + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            token = self.cluster.token_file.read_text().strip()
        except OSError as exc:
            raise ApiError(verb, what, 0, f"reading the token: {exc.strerror}") from None
        request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(
                request, timeout=self.timeout_s, context=self._tls
            ) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise ApiError(verb, what, exc.code, _status_message(exc.read())) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(verb, what, 0, f"{self.cluster.base_url}: {reason}") from None

    def create(self, namespace: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
        kind = str(manifest["kind"])
        what = _describe(kind, namespace, str(manifest["metadata"]["name"]))
        return self._call("create", what, "POST", self._path(namespace, kind), manifest)

    def get(self, namespace: str, kind: Kind, name: str) -> dict[str, Any] | None:
        try:
            return self._call(
                "get", _describe(kind, namespace, name), "GET", self._path(namespace, kind, name)
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def delete(
        self, namespace: str, kind: Kind, name: str, propagation: Propagation = "Background"
    ) -> None:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        try:
            self._call(
                "delete",
                _describe(kind, namespace, name),
                "DELETE",
                self._path(namespace, kind, name),
                body,
            )
        except ApiError as exc:
            if exc.status != 404:
                raise

    def list(self, namespace: str, kind: Kind, selector: Mapping[str, str]) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"labelSelector": _label_selector(selector)})
        found = self._call(
            "list",
            f"{kind} {namespace}/*",
            "GET",
            f"{self._path(namespace, kind)}?{query}",
        )
        return [dict(item) for item in found.get("items", [])]


def _status_message(body: bytes) -> str:
    """The `message` of a Kubernetes Status body, on one line."""
    try:
        message = json.loads(body).get("message", "")
    except (ValueError, AttributeError):
        message = body.decode(errors="replace")
    return " ".join(str(message).split())[:300]


# --- names and manifests ------------------------------------------------------------------


def _dns(text: str) -> str:
    return _NOT_DNS.sub("-", text.lower()).strip("-") or "x"


def _short_hash(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def name_budget(manifest: Mapping[str, Any]) -> int:
    """How long the object's name may be. A Job's name is its pods' `job-name` label value (63
    characters at most); a JobSet's name starts the names of its child Jobs and pods, so it
    gets what the longest pod name leaves."""
    if manifest.get("kind") != "JobSet":
        return DNS_LABEL_MAX
    longest = 0
    for rj in manifest.get("spec", {}).get("replicatedJobs", []):
        replicas = int(rj.get("replicas", 1))
        completions = int(rj.get("template", {}).get("spec", {}).get("completions", 1) or 1)
        tail = f"-{rj.get('name', '')}-{replicas - 1}-{completions - 1}{POD_SUFFIX}"
        longest = max(longest, len(tail))
    return DNS_LABEL_MAX - longest


def object_name(pipeline: str, run_id: str, step: str, budget: int = DNS_LABEL_MAX) -> str:
    """`<pipeline>-<run-hash8>-<step>`: a DNS-1035 label (a DNS-1123 label that starts with a
    letter, which JobSet's names need) of at most `budget` characters. The run's hash keeps runs
    apart; a name cut to fit keeps a hash of the whole step name, so two long step names that
    share a beginning still get two names."""
    run = _short_hash(run_id, 8)
    pipe, part = _dns(pipeline), _dns(step)
    if not pipe[0].isalpha():
        pipe = "p" + pipe
    name = f"{pipe}-{run}-{part}"
    if len(name) <= budget:
        return name
    part = f"{part[:8].rstrip('-')}-{_short_hash(step, 4)}"
    room = budget - len(f"-{run}-{part}")
    if room < 1:
        raise StepFailed(
            f"step {step!r}: its JobSet's pod names leave no room for a name "
            f"(at most {budget} characters); fix: shorten its replicated job's name"
        )
    return f"{pipe[:room].rstrip('-') or 'p'}-{run}-{part}"


def step_labels(pipeline: str, run_id: str, step: str) -> dict[str, str]:
    """The labels that find a run's step object again (label values: 63 characters)."""
    return {
        PIPELINE_LABEL: _label_value(pipeline),
        RUN_LABEL: _label_value(run_id),
        STEP_LABEL: _label_value(step),
    }


def _label_value(text: str) -> str:
    """`text` where it is a valid label value, else a valid one with a hash of the whole (a
    run given with `--run` may end in '-' or '.', which a label value may not)."""
    if len(text) <= DNS_LABEL_MAX and _LABEL_VALUE.fullmatch(text):
        return text
    head = re.sub(r"[^A-Za-z0-9]+$", "", re.sub(r"[^-A-Za-z0-9_.]", "-", text[:54]))
    return f"{head}-{_short_hash(text, 8)}" if head else _short_hash(text, 8)


def _containers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The main container of every pod template of a Job or JobSet (the first one)."""
    if manifest["kind"] == "JobSet":
        pods = [rj["template"]["spec"]["template"] for rj in manifest["spec"]["replicatedJobs"]]
    else:
        pods = [manifest["spec"]["template"]]
    return [pod["spec"]["containers"][0] for pod in pods]


def _merged_env(env: list[dict[str, Any]], command_env: Mapping[str, str]) -> list[dict[str, Any]]:
    """The rendered env with the step's values set: rendered entries it does not name stay
    (the store's endpoint and credentials source), and those the cluster sets stay as rendered."""
    names = {k for k in command_env if k not in CLUSTER_ENV}
    kept = [e for e in env if e.get("name") not in names]
    return kept + [{"name": k, "value": str(command_env[k])} for k in sorted(names)]


def step_manifest(
    step: Step, ctx: StepContext, command: StepCommand, namespace: str
) -> dict[str, Any]:
    """The object this attempt of `step` runs as: the rendered manifest, named and labelled
    for the run, created suspended (Kueue unsuspends it on admission), with the step's command
    and env in its container."""
    if step.manifest is None:
        raise StepFailed(
            f"step {step.name!r} has no Job or JobSet manifest, so it cannot run on the "
            "cluster; fix: deploy the pipeline with `mlstack up` (the stack renders one per step)"
        )
    manifest = copy.deepcopy(dict(step.manifest))
    kind = manifest.get("kind")
    if kind not in API:
        raise StepFailed(
            f"step {step.name!r}: its manifest is a {kind!r}, not a Job or JobSet; "
            "fix: redeploy the pipeline with `mlstack up`"
        )
    name = object_name(ctx.pipeline.name, ctx.run_id, step.name, name_budget(manifest))
    metadata = manifest.setdefault("metadata", {})
    metadata["name"] = name
    metadata["namespace"] = namespace
    labels = step_labels(ctx.pipeline.name, ctx.run_id, step.name)
    metadata["labels"] = {**metadata.get("labels", {}), **labels}
    metadata["annotations"] = {
        **metadata.get("annotations", {}),
        ATTEMPT_ANNOTATION: str(ctx.attempt),
    }
    spec = manifest["spec"]
    # Created suspended, as Kueue asks ("You should create the Job in a suspended state, as
    # Kueue will decide when it's the best time to start the Job": kueue.sigs.k8s.io, "Run A
    # Kubernetes Job"): Kueue unsuspends it when the team's ClusterQueue admits it, and
    # suspends it again if it preempts it (the executor then reports it waiting again).
    spec["suspend"] = True
    if kind == "JobSet":
        _rename_jobset(manifest, name, labels)
    else:
        template = spec["template"].setdefault("metadata", {})
        template["labels"] = {**template.get("labels", {}), **labels}
    for container in _containers(manifest):
        container["command"] = list(command.argv)
        container.pop("args", None)
        container["env"] = _merged_env(container.get("env", []), command.env)
    return manifest


def _rename_jobset(manifest: dict[str, Any], name: str, labels: Mapping[str, str]) -> None:
    """A JobSet's pods reach process 0 by a DNS name built from the JobSet's name and its
    headless Service (`network.subdomain`): both follow the new name."""
    network = manifest["spec"].setdefault("network", {})
    network["subdomain"] = name
    for rj in manifest["spec"]["replicatedJobs"]:
        job_meta = rj["template"].setdefault("metadata", {})
        job_meta["labels"] = {**job_meta.get("labels", {}), **labels}
        pod_meta = rj["template"]["spec"]["template"].setdefault("metadata", {})
        pod_meta["labels"] = {**pod_meta.get("labels", {}), **labels}
    first = manifest["spec"]["replicatedJobs"][0]["name"]
    address = f"{name}-{first}-0-0.{name}:{contract.COORDINATOR_PORT}"
    for container in _containers(manifest):
        for entry in container.get("env", []):
            if entry.get("name") == contract.COORDINATOR_ADDRESS and "value" in entry:
                entry["value"] = address


# --- following an object ------------------------------------------------------------------

Phase = Literal["waiting", "running", "succeeded", "failed", "deleting"]


def phase_of(obj: Mapping[str, Any]) -> tuple[Phase, str]:
    """Where the object is, and the reason when it failed."""
    kind = str(obj.get("kind", "Job"))
    if obj.get("metadata", {}).get("deletionTimestamp"):
        return "deleting", ""
    done, failed = DONE_CONDITIONS.get(kind, DONE_CONDITIONS["Job"])
    for condition in obj.get("status", {}).get("conditions", []) or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == done:
            return "succeeded", ""
        if condition.get("type") == failed:
            reason = condition.get("reason") or "Failed"
            message = " ".join(str(condition.get("message") or "").split())
            return "failed", f"{reason}: {message}" if message else str(reason)
    if obj.get("spec", {}).get("suspend"):
        return "waiting", ""
    return "running", ""


CommandFor = Callable[[Step, StepContext], StepCommand]


class ClusterExecutor:
    """Runs each step as a Job or JobSet in `namespace` (the `Executor` protocol).

    The runner polls each object, every `poll_s` growing to `max_poll_s`, rather than watching
    it: a step runs for minutes to hours, so a few seconds of delay cost nothing, one GET per
    running step per poll is no load on the API server, and a poll needs none of a watch's
    reconnects, bookmarks and expired resourceVersions (410 Gone) to be correct.
    """

    def __init__(
        self,
        api: JobsApi,
        namespace: str,
        *,
        command_for: CommandFor | None = None,
        poll_s: float = 2.0,
        max_poll_s: float = 15.0,
        stop: threading.Event | None = None,
    ) -> None:
        self.api = api
        #: Set (by the runner's SIGTERM handler) to stop every step this executor runs, as
        #: each step's own `ctx.cancel` stops that step.
        self.stop = stop or threading.Event()
        self.namespace = namespace
        #: What a step runs: `step.command_for`, the local executor's too (tests pass theirs).
        self.command_for = command_for or step_command_for
        self.poll_s = poll_s
        self.max_poll_s = max_poll_s

    def run(self, step: Step, ctx: StepContext) -> dict[str, Any]:
        if self._stopping(ctx):
            raise StepCancelled(f"step {step.name!r} not started: the run is stopping")
        try:
            command = self.command_for(step, ctx)
        except (StepError, StoreError) as exc:
            raise StepFailed(f"step {step.name!r}: {exc}") from None
        manifest = step_manifest(step, ctx, command, self.namespace)
        kind: Kind = manifest["kind"]
        name = manifest["metadata"]["name"]
        what = _describe(kind, self.namespace, name)
        try:
            name = self._start(manifest, ctx, what)
            self._follow(kind, name, ctx, _describe(kind, self.namespace, name), step)
        except ApiError as exc:
            raise StepFailed(f"step {step.name!r}: {exc}") from None
        return self._outputs(step, ctx)

    # -- creating or re-attaching

    def _start(self, manifest: dict[str, Any], ctx: StepContext, what: str) -> str:
        """Create the step's object, or find the one a previous runner of this run created;
        the name of the object to follow."""
        kind: Kind = manifest["kind"]
        name = manifest["metadata"]["name"]
        selector = {
            k: manifest["metadata"]["labels"][k] for k in (PIPELINE_LABEL, RUN_LABEL, STEP_LABEL)
        }
        found = self._retrying(lambda: self.api.list(self.namespace, kind, selector), ctx)
        for obj in found:
            phase, _ = phase_of(obj)
            if phase in ("failed", "deleting"):
                # An earlier attempt's: removed (with its pods) before this attempt runs.
                self._remove(kind, obj["metadata"]["name"], ctx)
                continue
            name = obj["metadata"]["name"]
            ctx.say(f"{ctx.run_id}: following {_describe(kind, self.namespace, name)}")
            return name
        try:
            self._retrying(lambda: self.api.create(self.namespace, manifest), ctx)
        except ApiError as exc:
            if exc.status != 409:
                raise
            # Created between the list and the create (or listed late): follow that one.
            ctx.say(f"{ctx.run_id}: {what} exists already; following it")
            return name
        ctx.say(f"{ctx.run_id}: created {what}")
        return name

    def _remove(self, kind: Kind, name: str, ctx: StepContext) -> None:
        """Delete an object and wait until it is gone, so that its name is free again.
        Foreground: the object stays until its pods are gone, so none outlives it."""
        self._retrying(lambda: self.api.delete(self.namespace, kind, name, "Foreground"), ctx)
        delay = self.poll_s
        while self._retrying(lambda: self.api.get(self.namespace, kind, name), ctx) is not None:
            if self._wait(ctx, delay):
                raise StepCancelled(f"cancelled while {kind} {name} was being deleted")
            delay = min(delay * 2, self.max_poll_s)

    # -- following

    def _follow(self, kind: Kind, name: str, ctx: StepContext, what: str, step: Step) -> None:
        """Poll the object until it ends; quota waits are normal and have no timeout here."""
        delay = self.poll_s
        said: Phase | None = None
        while True:
            if self._stopping(ctx):
                self._cancel(kind, name, ctx, what)
            obj = self._retrying(lambda: self.api.get(self.namespace, kind, name), ctx)
            if obj is None:
                raise StepFailed(
                    f"step {step.name!r}: {what} disappeared before it finished (deleted by "
                    "hand?); fix: rerun the pipeline, which resumes from this step"
                )
            phase, reason = phase_of(obj)
            if phase == "succeeded":
                return
            if phase == "failed":
                raise StepFailed(
                    f"step {step.name!r}: {what} failed ({reason}); fix: read its logs with "
                    f"`kubectl logs -n {self.namespace} -l {self._selector(ctx, step)}`"
                )
            if phase != said:
                ctx.say(_progress(phase, obj, what))
                said = phase
                delay = self.poll_s
            if self._wait(ctx, delay):
                self._cancel(kind, name, ctx, what)
            delay = min(delay * 2, self.max_poll_s)

    def _selector(self, ctx: StepContext, step: Step) -> str:
        labels = step_labels(ctx.pipeline.name, ctx.run_id, step.name)
        return _label_selector({k: labels[k] for k in (RUN_LABEL, STEP_LABEL)})

    def _stopping(self, ctx: StepContext) -> bool:
        return ctx.cancel.is_set() or self.stop.is_set()

    def _wait(self, ctx: StepContext, delay: float) -> bool:
        """Sleep up to `delay` seconds; True (at once) when the step or the runner stops."""
        end = time.monotonic() + delay
        while not self._stopping(ctx):
            left = end - time.monotonic()
            if left <= 0:
                return False
            self.stop.wait(min(left, 0.2))
        return True

    def _cancel(self, kind: Kind, name: str, ctx: StepContext, what: str) -> None:
        # Background: the API server removes the object now and its pods after; the runner
        # need not wait for them (they get their termination grace to stop).
        self.api.delete(self.namespace, kind, name, "Background")
        ctx.say(f"{ctx.run_id}: cancelled, deleted {what}")
        raise StepCancelled(f"{what} deleted: the run was stopped")

    def _retrying(self, call: Callable[[], T], ctx: StepContext) -> T:
        """`call()`, retried with backoff while the API server answers with a transient error
        (busy, restarting, unreachable for a moment); any other error at once."""
        delay = self.poll_s
        for attempt in range(1, MAX_TRANSIENT + 1):
            try:
                return call()
            except ApiError as exc:
                if not exc.transient or attempt == MAX_TRANSIENT:
                    raise
                ctx.say(f"{ctx.run_id}: {exc}; retrying")
            if self._wait(ctx, delay):
                raise StepCancelled("cancelled while the API server was unavailable")
            delay = min(delay * 2, self.max_poll_s)
        raise AssertionError("unreachable")

    # -- outputs

    def _outputs(self, step: Step, ctx: StepContext) -> dict[str, Any]:
        """The finished step's outputs: its output.json, or for train (whose command is the
        training entry point, which writes none) the exported version, checked in the model's
        registry and then recorded as output.json."""
        key = f"steps/{step.name}/output.json"
        try:
            run = open_store(ctx.run_url)
            if step.kind == "train":
                return self._train_outputs(step, ctx, run, key)
            return json.loads(run.get_bytes(key))
        except NotFound:
            raise StepFailed(
                f"step {step.name!r} finished but wrote no {ctx.run_url}/{key}; fix: read its "
                f"logs (`kubectl logs -n {self.namespace} -l {self._selector(ctx, step)}`)"
            ) from None
        except (StoreError, ValueError) as exc:
            raise StepFailed(f"step {step.name!r}: reading its outputs: {exc}") from None

    def _train_outputs(self, step: Step, ctx: StepContext, run: Any, key: str) -> dict[str, Any]:
        outputs = exported_outputs(step, ctx)
        if outputs is None:
            bundle_key = f"versions/{version_name(ctx.run_id, step.name)}/bundle.json"
            raise StepFailed(
                f"step {step.name!r} finished but exported no "
                f"{open_store(ctx.pipeline.model_url).url(bundle_key)}; fix: check its training "
                "steps and export settings in its logs"
            )
        run.put_bytes(key, (json.dumps(outputs, indent=2, sort_keys=True) + "\n").encode())
        return outputs


def _progress(phase: Phase, obj: Mapping[str, Any], what: str) -> str:
    if phase == "waiting":
        queue = obj.get("metadata", {}).get("labels", {}).get(QUEUE_LABEL, "?")
        return f"{what}: waiting for Kueue to admit it (LocalQueue {queue}; quota waits are normal)"
    if phase == "deleting":
        return f"{what}: being deleted"
    return f"{what}: running"
