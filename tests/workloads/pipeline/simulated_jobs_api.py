"""A TEST DOUBLE: a simulation of the Kubernetes Jobs/JobSet API plus Kueue admission, in
memory, for the cluster executor's tests. Nothing here talks to a cluster.

What it mimics, and from where:
- create/get/delete/list on `batch/v1` Jobs and `jobset.x-k8s.io/v1alpha2` JobSets of one
  namespace; 409 AlreadyExists for a taken name, 404 on a missing one; a delete with
  propagationPolicy Foreground leaves the object visible with a deletionTimestamp for one read
  (the API server keeps it until its dependents are gone), Background removes it at once.
- The API server's validation: every create is checked strictly (Jobs with kubernetes-validate
  at the cluster's Kubernetes version, JobSets against the vendored JobSet CRD schema and its
  webhook's checks, `tests/jobset_schema.py`) and refused with 422 when invalid.
- Kueue: an object with the `kueue.x-k8s.io/queue-name` label is queued while `spec.suspend`
  is true; objects are admitted (unsuspended) one at a time, oldest first, while fewer than
  `quota` admitted objects are unfinished (a ClusterQueue whose quota fits `quota` steps).
- The Job / JobSet controllers: an admitted object runs for `run_reads` reads, then ends with the
  condition its step's script says (Job: Complete/Failed, JobSet: Completed/Failed); a finished
  step "writes" what its pod would (output.json, or a train step's exported bundle) through
  `on_success`.
- Faults: `fail(verb, status, times)` makes the next calls of a verb answer with an HTTP status.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kubernetes_validate
from jobset_schema import jobset_problems

from mlstack.workloads.pipeline.cluster import QUEUE_LABEL, STEP_LABEL, ApiError, Kind

K8S_VERSION = "1.33.0"

Obj = dict[str, Any]


def validation_problems(manifest: Mapping[str, Any]) -> list[str]:
    """What the API server (and JobSet's webhook) would refuse in `manifest`."""
    if manifest.get("kind") == "JobSet":
        return jobset_problems(manifest, K8S_VERSION)
    try:
        kubernetes_validate.validate(dict(manifest), K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(str(p) for p in exc.path)}: {exc.message}"]
    return []


@dataclass
class _Entry:
    obj: Obj
    reads_running: int = 0
    deleting_reads: int = -1  # >= 0: a Foreground delete in progress


@dataclass
class SimulatedJobsApi:
    """In-memory Jobs/JobSet API with Kueue admission (a test double; see the module doc)."""

    namespace: str
    #: How many admitted, unfinished objects the team's quota fits.
    quota: int = 1
    #: Reads of a running object before it ends.
    run_reads: int = 2
    #: Per step name, the outcome of each object created for it, in order ("ok" or "fail");
    #: a step with no script left succeeds.
    script: dict[str, list[str]] = field(default_factory=dict)
    #: Called with the finished object when it succeeds: what the step's pods would write.
    on_success: Callable[[Obj], None] = lambda obj: None
    created: list[Obj] = field(default_factory=list)
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    #: The most objects admitted and unfinished at one time.
    max_admitted: int = 0
    _objects: dict[tuple[str, str], _Entry] = field(default_factory=dict)
    _faults: dict[str, list[int]] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # -- faults

    def fail(self, verb: str, status: int, times: int = 1) -> None:
        self._faults.setdefault(verb, []).extend([status] * times)

    def _maybe_fail(self, verb: str, what: str) -> None:
        pending = self._faults.get(verb)
        if pending:
            raise ApiError(verb, what, pending.pop(0), "simulated")

    # -- the API

    def create(self, namespace: str, manifest: Mapping[str, Any]) -> Obj:
        with self._lock:
            kind, name = str(manifest["kind"]), str(manifest["metadata"]["name"])
            what = f"{kind} {namespace}/{name}"
            self.calls.append(("create", kind, name))
            self._maybe_fail("create", what)
            assert namespace == self.namespace == manifest["metadata"]["namespace"]
            problems = validation_problems(manifest)
            if problems:
                raise ApiError("create", what, 422, "; ".join(problems))
            if (kind, name) in self._objects:
                raise ApiError("create", what, 409, f'{kind} "{name}" already exists')
            self.created.append(copy.deepcopy(dict(manifest)))
            obj = copy.deepcopy(dict(manifest))
            obj["status"] = {}
            self._objects[(kind, name)] = _Entry(obj)
            self._admit()
            return copy.deepcopy(obj)

    def get(self, namespace: str, kind: Kind, name: str) -> Obj | None:
        with self._lock:
            self.calls.append(("get", kind, name))
            self._maybe_fail("get", f"{kind} {namespace}/{name}")
            entry = self._objects.get((kind, name))
            if entry is None:
                return None
            if entry.deleting_reads >= 0:
                entry.deleting_reads -= 1
                if entry.deleting_reads < 0:
                    del self._objects[(kind, name)]
                    self._admit()
                    return None
                return copy.deepcopy(entry.obj)
            self._advance(entry)
            return copy.deepcopy(entry.obj)

    def delete(
        self, namespace: str, kind: Kind, name: str, propagation: str = "Background"
    ) -> None:
        with self._lock:
            self.calls.append((f"delete:{propagation}", kind, name))
            self._maybe_fail("delete", f"{kind} {namespace}/{name}")
            entry = self._objects.get((kind, name))
            if entry is None:
                return
            if propagation == "Foreground":
                entry.obj["metadata"]["deletionTimestamp"] = "2026-12-03T00:00:00Z"
                entry.deleting_reads = max(entry.deleting_reads, 1)
            else:
                del self._objects[(kind, name)]
                self._admit()

    def list(self, namespace: str, kind: Kind, selector: Mapping[str, str]) -> list[Obj]:
        with self._lock:
            self.calls.append(("list", kind, ",".join(f"{k}={v}" for k, v in selector.items())))
            self._maybe_fail("list", f"{kind} {namespace}/*")
            return [
                copy.deepcopy(e.obj)
                for (k, _), e in self._objects.items()
                if k == kind
                and all(
                    e.obj["metadata"].get("labels", {}).get(a) == b for a, b in selector.items()
                )
            ]

    # -- what the test looks at

    def exists(self, kind: str, name: str) -> bool:
        return (kind, name) in self._objects

    def names(self) -> list[str]:
        return sorted(name for _, name in self._objects)

    def creations(self, verb: str = "create") -> list[str]:
        return [name for v, _, name in self.calls if v == verb]

    # -- Kueue and the controllers

    def _finished(self, entry: _Entry) -> bool:
        return any(c.get("status") == "True" for c in entry.obj["status"].get("conditions", []))

    def _admitted(self) -> list[_Entry]:
        return [
            e
            for e in self._objects.values()
            if not e.obj["spec"].get("suspend") and not self._finished(e)
        ]

    def _admit(self) -> None:
        """Kueue: unsuspend queued objects, oldest first, while the quota has room."""
        for entry in list(self._objects.values()):
            queued = entry.obj["metadata"].get("labels", {}).get(QUEUE_LABEL)
            if not (queued and entry.obj["spec"].get("suspend")) or entry.deleting_reads >= 0:
                continue
            if len(self._admitted()) >= self.quota:
                break
            entry.obj["spec"]["suspend"] = False
        self.max_admitted = max(self.max_admitted, len(self._admitted()))

    def _advance(self, entry: _Entry) -> None:
        """The Job/JobSet controller: a running object ends after `run_reads` reads."""
        if entry.obj["spec"].get("suspend") or self._finished(entry):
            return
        entry.reads_running += 1
        if entry.reads_running < self.run_reads:
            return
        step = entry.obj["metadata"]["labels"][STEP_LABEL]
        outcomes = self.script.get(step) or []
        outcome = outcomes.pop(0) if outcomes else "ok"
        kind = entry.obj["kind"]
        done = "Completed" if kind == "JobSet" else "Complete"
        condition = {"type": done if outcome == "ok" else "Failed", "status": "True"}
        if outcome != "ok":
            condition |= {"reason": "BackoffLimitExceeded", "message": "Job has reached the limit"}
        entry.obj["status"]["conditions"] = [condition]
        if outcome == "ok":
            self.on_success(entry.obj)
        self._admit()
