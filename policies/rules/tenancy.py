"""Stack-level rules: relations between objects that no single resource shows.

Team namespaces come with their guardrails, every GPU pool has a Kueue flavor, workloads point
at queues that exist, spot capacity runs only work that survives preemption, GPU quotas fit the
pools, and images come from the platform's registry.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pulumi_policy import (
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    StackValidationArgs,
)

from mlstack.components.kubernetes.system import REGISTRY_ENV
from mlstack.policies.rules.addons import placement_refusal
from mlstack.policies.rules.objects import (
    BATCH_KINDS,
    PodTemplate,
    annotations_of,
    config_value,
    describe,
    get,
    kind_of,
    labels_of,
    mapping,
    number,
    pod_templates,
    queue_name,
    sequence,
    stack_rule,
)
from mlstack.policies.rules.pools import PoolNodes, pool_of
from mlstack.policies.rules.scheduling import pod_placement
from mlstack.stacks.names import (
    ALLOW_OVERCOMMIT_ANNOTATION,
    CAPACITY_LABEL,
    CHECKPOINTS_ANNOTATION,
    GPU_RESOURCE,
    MAX_GPUS_ANNOTATION,
    PLATFORM_CONFIGMAP,
    POOL_LABEL,
    SYSTEM_NAMESPACE,
    TEAM_LABEL,
)


@dataclass
class Objects:
    """The stack's Kubernetes objects by kind, and its node pools."""

    by_kind: dict[str, list[PolicyResource]] = field(default_factory=lambda: defaultdict(list))
    pools: dict[str, tuple[PoolNodes, PolicyResource]] = field(default_factory=dict)
    #: Built on first use and kept: many rules ask for them, some once per object.
    _by_namespace: dict[tuple[str, str | None], list[PolicyResource]] | None = None
    _workloads: list[tuple[str, PolicyResource, list[PodTemplate]]] | None = None

    @classmethod
    def of(cls, resources: list[PolicyResource]) -> Objects:
        """The index of `resources`. Stack rules run one after another on the same list (under
        `mlstack check`; the engine hands each rule its own), so the last index is reused."""
        last = _LAST_INDEX.get("last")
        if last is not None and last[0] is resources:
            return last[1]
        objects = cls._build(resources)
        _LAST_INDEX["last"] = (resources, objects)
        return objects

    @classmethod
    def _build(cls, resources: Iterable[PolicyResource]) -> Objects:
        objects = cls()
        for r in resources:
            kind = kind_of(r.resource_type)
            if kind is not None:
                objects.by_kind[kind].append(r)
            nodes = pool_of(r.resource_type, r.props)
            if nodes is not None:
                objects.pools.setdefault(nodes.pool, (nodes, r))
        return objects

    def in_namespace(self, kind: str, namespace: str) -> list[PolicyResource]:
        if self._by_namespace is None:
            index: dict[tuple[str, str | None], list[PolicyResource]] = defaultdict(list)
            for k, items in self.by_kind.items():
                for r in items:
                    index[(k, _namespace(r))].append(r)
            self._by_namespace = index
        return list(self._by_namespace.get((kind, namespace), ()))

    def named(self, kind: str, name: str, namespace: str | None = None) -> PolicyResource | None:
        for r in self.by_kind.get(kind, ()):
            if get(r.props, "metadata", "name") == name and _namespace(r) == namespace:
                return r
        return None

    def team_namespaces(self) -> list[tuple[str, PolicyResource]]:
        return [
            (str(get(r.props, "metadata", "name")), r)
            for r in self.by_kind.get("Namespace", ())
            if labels_of(r.props).get(TEAM_LABEL)
        ]

    def workloads(self) -> list[tuple[str, PolicyResource, list[PodTemplate]]]:
        """(kind, resource, pod templates) of every workload object."""
        if self._workloads is None:
            self._workloads = [
                (kind, r, templates)
                for kind, items in self.by_kind.items()
                for r in items
                if (templates := pod_templates(kind, r.props))
            ]
        return self._workloads


#: The last list indexed by Objects.of and its index.
_LAST_INDEX: dict[str, tuple[list[PolicyResource], Objects]] = {}


def _namespace(r: PolicyResource) -> str | None:
    ns = get(r.props, "metadata", "namespace")
    return str(ns) if ns else None


def team_namespaces_have_quotas(args: StackValidationArgs, report: ReportViolation) -> None:
    objects = Objects.of(args.resources)
    needed = ("requests.cpu", "requests.memory", f"requests.{GPU_RESOURCE}")
    for ns, r in objects.team_namespaces():
        # Kubernetes reads a bare `cpu` or `memory` quota as the requests quota.
        covered = {
            key if key.startswith("requests.") or "/" in key else f"requests.{key}"
            for q in objects.in_namespace("ResourceQuota", ns)
            for key in mapping(get(q.props, "spec", "hard"))
        }
        missing = [k for k in needed if k not in covered]
        if missing:
            report(
                f"team namespace {ns!r} has no ResourceQuota on {', '.join(missing)}, so one "
                "team can take the whole cluster; declare the team in platform.teams so mlstack "
                "creates its quota",
                r.urn,
            )


def team_namespaces_have_limit_ranges(args: StackValidationArgs, report: ReportViolation) -> None:
    objects = Objects.of(args.resources)
    for ns, r in objects.team_namespaces():
        ok = any(
            get(item, "type") == "Container"
            and get(item, "default")
            and get(item, "defaultRequest")
            for lr in objects.in_namespace("LimitRange", ns)
            for item in sequence(get(lr.props, "spec", "limits"))
        )
        if not ok:
            report(
                f"team namespace {ns!r} has no LimitRange with container defaults, so pods "
                "without requests escape the quota's accounting; declare the team in "
                "platform.teams so mlstack creates it",
                r.urn,
            )


def _denies_all_ingress(policy: PolicyResource) -> bool:
    spec = mapping(policy.props.get("spec"))
    # Without policyTypes, Kubernetes takes Ingress (and Egress only with egress rules).
    types = sequence(spec.get("policyTypes")) or ["Ingress"]
    return (
        _selects_everything(spec.get("podSelector"))
        and "Ingress" in types
        and not sequence(spec.get("ingress"))
    )


def team_namespaces_deny_ingress_by_default(
    args: StackValidationArgs, report: ReportViolation
) -> None:
    objects = Objects.of(args.resources)
    for ns, r in objects.team_namespaces():
        if not any(_denies_all_ingress(p) for p in objects.in_namespace("NetworkPolicy", ns)):
            report(
                f"team namespace {ns!r} has no default-deny ingress NetworkPolicy, so any pod "
                "in the cluster can reach its pods; add one (podSelector: {}, policyTypes: "
                "[Ingress], no ingress rules)",
                r.urn,
            )


def _selects_everything(selector: Any, *, namespaces: bool = False) -> bool:
    """An empty label selector matches every object; for namespaces so does one whose terms
    are all `kubernetes.io/metadata.name Exists` (a label every namespace has)."""
    sel = mapping(selector)
    if mapping(sel.get("matchLabels")):
        return False
    return all(
        namespaces
        and get(e, "key") == "kubernetes.io/metadata.name"
        and get(e, "operator") == "Exists"
        for e in sequence(sel.get("matchExpressions"))
    )


def _admits_everyone(rule: Any) -> str | None:
    """How an ingress rule admits every source, or None when it names its sources."""
    peers = sequence(get(rule, "from"))
    if not peers:
        return "an ingress rule without `from`"
    for peer in peers:
        ns, pods, block = (
            get(peer, "namespaceSelector"),
            get(peer, "podSelector"),
            get(peer, "ipBlock"),
        )
        every_ns = ns is not None and _selects_everything(ns, namespaces=True)
        if every_ns and (pods is None or _selects_everything(pods)):
            return "a namespaceSelector that matches every namespace"
        if block is not None and get(block, "cidr") in ("0.0.0.0/0", "::/0"):
            return f"ipBlock {get(block, 'cidr')}"
    return None


def team_ingress_not_open_to_all(args: StackValidationArgs, report: ReportViolation) -> None:
    """No NetworkPolicy opens every pod of a team namespace to every source: NetworkPolicies
    add up, so one such policy undoes the default deny (Kubernetes docs, "Network Policies":
    policies are additive)."""
    objects = Objects.of(args.resources)
    for ns, _ in objects.team_namespaces():
        for policy in objects.in_namespace("NetworkPolicy", ns):
            spec = mapping(policy.props.get("spec"))
            if not _selects_everything(spec.get("podSelector")):
                continue  # named pods (a served port behind a load balancer, say)
            types = sequence(spec.get("policyTypes")) or ["Ingress"]
            if "Ingress" not in types:
                continue
            for i, rule in enumerate(sequence(spec.get("ingress"))):
                how = _admits_everyone(rule)
                if how is not None:
                    report(
                        f"{describe('NetworkPolicy', policy.props)} opens every pod of team "
                        f"namespace {ns!r} to any source (ingress[{i}]: {how}), undoing its "
                        "default deny; name the namespaces or pods that may connect "
                        "(allow_from_namespaces on a service), or select only the pods to expose",
                        policy.urn,
                    )
                    break


def services_within_namespace_quota(args: StackValidationArgs, report: ReportViolation) -> None:
    """LoadBalancer and NodePort Services within their namespace's ResourceQuota, refused here
    rather than by the API server at apply. A LoadBalancer Service also takes node ports unless
    it sets allocateLoadBalancerNodePorts: false (Kubernetes docs, "Resource Quotas":
    services.nodeports, and "Service": load balancer NodePort allocation)."""
    objects = Objects.of(args.resources)
    quota_namespaces = {_namespace(q) for q in objects.by_kind.get("ResourceQuota", ())}
    for ns in sorted(n for n in quota_namespaces if n is not None):
        hard: dict[str, float] = {}
        for q in objects.in_namespace("ResourceQuota", str(ns)):
            for key in ("services.loadbalancers", "services.nodeports"):
                limit = get(q.props, "spec", "hard", key)
                if limit is not None:
                    hard[key] = min(hard.get(key, float("inf")), number(limit))
        if not hard:
            continue
        used = {"services.loadbalancers": 0, "services.nodeports": 0}
        for svc in objects.in_namespace("Service", str(ns)):
            kind = get(svc.props, "spec", "type")
            if kind == "LoadBalancer":
                used["services.loadbalancers"] += 1
                if get(svc.props, "spec", "allocateLoadBalancerNodePorts") is not False:
                    used["services.nodeports"] += 1
            elif kind == "NodePort":
                used["services.nodeports"] += 1
            else:
                continue
            over = [k for k, n in used.items() if k in hard and n > hard[k]]
            if over:
                team = labels_of(svc.props).get(TEAM_LABEL) or ns
                report(
                    f"{describe('Service', svc.props)} is a {kind} Service, but namespace "
                    f"{ns}'s ResourceQuota allows {hard[over[0]]:g} {over[0]}, so the API "
                    f"server would refuse it at apply; set allow_load_balancers: true on team "
                    f"{team} (and annotate it internal), or use ClusterIP",
                    svc.urn,
                )


def _flavor_pools(objects: Objects) -> dict[str, PolicyResource]:
    """Pool name -> the ResourceFlavor selecting it."""
    return {
        str(get(f.props, "spec", "nodeLabels", POOL_LABEL)): f
        for f in objects.by_kind.get("ResourceFlavor", ())
        if get(f.props, "spec", "nodeLabels", POOL_LABEL)
    }


def gpu_pools_have_flavors(args: StackValidationArgs, report: ReportViolation) -> None:
    objects = Objects.of(args.resources)
    flavors = _flavor_pools(objects)
    for name, (nodes, r) in sorted(objects.pools.items()):
        if nodes.kind == "gpu" and name not in flavors:
            report(
                f"GPU pool {name!r} has no Kueue ResourceFlavor, so no queue can admit work to "
                f"it; add a flavor with nodeLabels {{{POOL_LABEL}: {name}}} (mlstack's tenancy "
                "layer makes one per pool)",
                r.urn,
            )


def workloads_use_existing_queues(args: StackValidationArgs, report: ReportViolation) -> None:
    objects = Objects.of(args.resources)
    for kind, r, _ in objects.workloads():
        queue = queue_name(kind, r.props)
        if queue is None:
            continue
        ns = _namespace(r) or "default"
        local = objects.named("LocalQueue", queue, ns)
        where = describe(kind, r.props)
        if local is None:
            queues = ", ".join(
                sorted(
                    str(get(q.props, "metadata", "name"))
                    for q in objects.in_namespace("LocalQueue", ns)
                )
            )
            report(
                f"{where} names queue {queue!r}, but namespace {ns!r} has no such LocalQueue, so "
                f"it would wait forever; use one of: {queues or 'none (declare the team)'}",
                r.urn,
            )
            continue
        cluster_queue = get(local.props, "spec", "clusterQueue")
        if objects.named("ClusterQueue", str(cluster_queue)) is None:
            report(
                f"{where} uses LocalQueue {ns}/{queue}, whose ClusterQueue {cluster_queue!r} does "
                "not exist; point the LocalQueue at the team's ClusterQueue",
                r.urn,
            )


def _spot_flavors(objects: Objects) -> set[str]:
    spot_pools = {name for name, (nodes, _) in objects.pools.items() if nodes.capacity == "spot"}
    return {
        str(get(f.props, "metadata", "name"))
        for f in objects.by_kind.get("ResourceFlavor", ())
        if get(f.props, "spec", "nodeLabels", CAPACITY_LABEL) == "spot"
        or get(f.props, "spec", "nodeLabels", POOL_LABEL) in spot_pools
    }


def _queue_flavors(objects: Objects, kind: str, r: PolicyResource, requested: set[str]) -> set[str]:
    """Flavors Kueue may assign the workload: those of the queue's resource groups that cover a
    resource it requests (a CPU-only Job gets the CPU group's flavor, never a GPU flavor)."""
    queue = queue_name(kind, r.props)
    local = objects.named("LocalQueue", queue, _namespace(r) or "default") if queue else None
    cq = (
        objects.named("ClusterQueue", str(get(local.props, "spec", "clusterQueue")))
        if local
        else None
    )
    if cq is None:
        return set()
    return {
        str(get(f, "name"))
        for group in sequence(get(cq.props, "spec", "resourceGroups"))
        if requested & {str(x) for x in sequence(get(group, "coveredResources"))}
        for f in sequence(get(group, "flavors"))
    }


def spot_capacity_only_for_checkpointing_jobs(
    args: StackValidationArgs, report: ReportViolation
) -> None:
    objects = Objects.of(args.resources)
    spot_flavors = _spot_flavors(objects)
    spot_pools = {n for n, (nodes, _) in objects.pools.items() if nodes.capacity == "spot"}
    marker = config_value(args, "checkpointAnnotation", CHECKPOINTS_ANNOTATION)
    for kind, r, templates in objects.workloads():
        if kind not in BATCH_KINDS or annotations_of(r.props).get(marker) == "true":
            continue
        pinned = [
            t
            for t in templates
            if get(t.spec, "nodeSelector", CAPACITY_LABEL) == "spot"
            or get(t.spec, "nodeSelector", POOL_LABEL) in spot_pools
        ]
        requested = {name for t in templates for name in t.resource_names()}
        queued = sorted(_queue_flavors(objects, kind, r, requested) & spot_flavors)
        if pinned or queued:
            via = (
                f"its queue admits to spot flavors {', '.join(queued)}"
                if queued
                else "its nodeSelector picks spot nodes"
            )
            report(
                f"{describe(kind, r.props)} may run on spot capacity ({via}) but does not "
                f"checkpoint, so a preemption loses its work; save checkpoints and annotate it "
                f"{marker}: 'true', or run it from a queue without spot flavors",
                r.urn,
            )


#: terminationGracePeriodSeconds when a pod spec leaves it unset (PodSpec API reference).
DEFAULT_GRACE_S = 30


def _pools_of_flavors(objects: Objects, flavors: Iterable[str]) -> set[str]:
    """The pools Kueue's flavors `flavors` put pods on: by the pool label of their nodeLabels,
    or every spot pool for a flavor that selects spot capacity."""
    found: set[str] = set()
    for name in flavors:
        flavor = objects.named("ResourceFlavor", name)
        labels = mapping(get(flavor.props, "spec", "nodeLabels")) if flavor else {}
        if POOL_LABEL in labels:
            found.add(str(labels[POOL_LABEL]))
        elif labels.get(CAPACITY_LABEL) == "spot":
            found |= {n for n, (nodes, _) in objects.pools.items() if nodes.capacity == "spot"}
    return found


def spot_pods_stop_within_the_notice(args: StackValidationArgs, report: ReportViolation) -> None:
    objects = Objects.of(args.resources)
    notices = {
        name: nodes.reclaim_notice_s
        for name, (nodes, _) in objects.pools.items()
        if nodes.capacity == "spot" and nodes.reclaim_notice_s is not None
    }
    if not notices:
        return
    for kind, r, templates in objects.workloads():
        if kind == "DaemonSet":
            continue  # node agents end with their node; they have nothing to save
        requested = {name for t in templates for name in t.resource_names()}
        queued = _pools_of_flavors(objects, _queue_flavors(objects, kind, r, requested))
        for t in templates:
            grace = get(t.spec, "terminationGracePeriodSeconds")
            grace_s = number(grace) if grace is not None else DEFAULT_GRACE_S
            placement = pod_placement(t.spec)
            placed = {
                name
                for name in notices
                if name in queued or placement_refusal(placement, objects.pools[name][0]) is None
            }
            if not placed:
                continue
            pool = min(placed, key=lambda name: notices[name])
            if grace_s > notices[pool]:
                report(
                    f"{t.where} may run on spot pool {pool!r}, whose nodes give a pod "
                    f"{notices[pool]:g} s from SIGTERM to the reclaim, but its "
                    f"terminationGracePeriodSeconds is {grace_s:g}"
                    + ("" if grace is not None else " (the default)")
                    + ": its checkpoint or drain would be cut off; set it to at most "
                    f"{notices[pool]:g} (training_jobs/inference_services"
                    "[].termination_grace_period_s) and finish within it, or keep it off spot "
                    "pools",
                    r.urn,
                )


@dataclass(frozen=True)
class _GpuQuota:
    queue: str
    gpus: float
    cohort: str | None
    overcommit_allowed: bool


def _gpu_quotas(objects: Objects) -> dict[str, list[_GpuQuota]]:
    """Flavor name -> the nominal GPU quotas ClusterQueues hold on it."""
    quotas: dict[str, list[_GpuQuota]] = defaultdict(list)
    for cq in objects.by_kind.get("ClusterQueue", ()):
        name = str(get(cq.props, "metadata", "name"))
        cohort = get(cq.props, "spec", "cohortName")
        allowed = annotations_of(cq.props).get(ALLOW_OVERCOMMIT_ANNOTATION) == "true"
        for group in sequence(get(cq.props, "spec", "resourceGroups")):
            for f in sequence(get(group, "flavors")):
                for res in sequence(get(f, "resources")):
                    gpus = number(get(res, "nominalQuota"))
                    if get(res, "name") == GPU_RESOURCE and gpus > 0:
                        quotas[str(get(f, "name"))].append(
                            _GpuQuota(name, gpus, str(cohort) if cohort else None, allowed)
                        )
    return quotas


def gpu_quota_within_pool_capacity(args: StackValidationArgs, report: ReportViolation) -> None:
    objects = Objects.of(args.resources)
    quotas = _gpu_quotas(objects)
    for flavor in objects.by_kind.get("ResourceFlavor", ()):
        name = str(get(flavor.props, "metadata", "name"))
        capacity = annotations_of(flavor.props).get(MAX_GPUS_ANNOTATION)
        if capacity is None or name not in quotas:
            continue
        held = quotas[name]
        total = sum(q.gpus for q in held)
        most = number(capacity)
        cohorts = {q.cohort for q in held}
        # Overcommit is sharing: only queues of one cohort can lend to and preempt each other.
        shared = (
            len(cohorts) == 1 and None not in cohorts and all(q.overcommit_allowed for q in held)
        )
        if total <= most or shared:
            continue
        parts = ", ".join(f"{q.queue} {q.gpus:g}" for q in sorted(held, key=lambda q: q.queue))
        report(
            f"GPU quotas on pool {name!r} add up to {total:g} ({parts}) but the pool has at most "
            f"{most:g} GPUs, so admitted jobs would wait for nodes that never come; lower the "
            f"quotas by {total - most:g}, raise the pool's max_nodes, or put these teams in one "
            "cohort with allow_overcommit: true",
            flavor.urn,
        )


def image_repository(ref: str) -> str:
    """An image reference with its registry spelled out, as the container runtime resolves it:
    `python:3.11` is `docker.io/library/python:3.11`."""
    first, _, rest = ref.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return ref
    return f"docker.io/{ref}" if rest else f"docker.io/library/{ref}"


def images_from_platform_registry(args: StackValidationArgs, report: ReportViolation) -> None:
    objects = Objects.of(args.resources)
    platform = objects.named("ConfigMap", PLATFORM_CONFIGMAP, SYSTEM_NAMESPACE)
    registry = get(platform.props, "data", REGISTRY_ENV) if platform else None
    if not isinstance(registry, str) or not registry:
        return
    # Prefixes are registries (host[:port][/path]), so only image references need spelling out.
    allowed = [a.rstrip("/") for a in (registry, *config_value(args, "allowedRegistries", []))]
    for _, r, templates in objects.workloads():
        for t in templates:
            for c in t.containers():
                image = c.get("image")
                if isinstance(image, str) and not any(
                    image_repository(image).startswith(f"{a}/") for a in allowed
                ):
                    report(
                        f"{t.where}: container {c.get('name')!r} pulls {image!r} from outside the "
                        f"platform registry {registry}; push the image there (scanned, "
                        "immutable tags) or add its registry to allowedRegistries",
                        r.urn,
                    )


POLICIES = [
    stack_rule(
        "team-namespaces-have-quotas",
        "Every team namespace has a ResourceQuota on CPU, memory and GPUs.",
        team_namespaces_have_quotas,
    ),
    stack_rule(
        "team-namespaces-have-limit-ranges",
        "Every team namespace has a LimitRange with container defaults.",
        team_namespaces_have_limit_ranges,
    ),
    stack_rule(
        "team-namespaces-deny-ingress-by-default",
        "Every team namespace has a default-deny ingress NetworkPolicy.",
        team_namespaces_deny_ingress_by_default,
    ),
    stack_rule(
        "team-ingress-not-open-to-all",
        "No NetworkPolicy opens every pod of a team namespace to every source.",
        team_ingress_not_open_to_all,
    ),
    stack_rule(
        "services-within-namespace-quota",
        "LoadBalancer and NodePort Services fit their namespace's ResourceQuota.",
        services_within_namespace_quota,
    ),
    stack_rule(
        "gpu-pools-have-flavors",
        "Every GPU pool has a Kueue ResourceFlavor.",
        gpu_pools_have_flavors,
    ),
    stack_rule(
        "workloads-use-existing-queues",
        "Workloads with a queue label name a LocalQueue that exists and is bound.",
        workloads_use_existing_queues,
    ),
    stack_rule(
        "spot-capacity-only-for-checkpointing-jobs",
        "Batch work that may land on spot nodes checkpoints.",
        spot_capacity_only_for_checkpointing_jobs,
        config_schema=PolicyConfigSchema(
            properties={
                "checkpointAnnotation": {
                    "type": "string",
                    "default": CHECKPOINTS_ANNOTATION,
                    "description": "Annotation (value 'true') marking work that checkpoints.",
                }
            }
        ),
    ),
    stack_rule(
        "spot-pods-stop-within-the-notice",
        "Pods that may land on spot nodes stop within the cloud's reclaim notice.",
        spot_pods_stop_within_the_notice,
    ),
    stack_rule(
        "gpu-quota-within-pool-capacity",
        "GPU quotas on a pool add up to no more than it holds, unless a cohort allows it.",
        gpu_quota_within_pool_capacity,
    ),
    stack_rule(
        "images-from-platform-registry",
        "Workload images come from the platform's registry.",
        images_from_platform_registry,
        config_schema=PolicyConfigSchema(
            properties={
                "allowedRegistries": {
                    "type": "array",
                    "items": {"type": "string"},
                    "default": [],
                    "description": "Other registry prefixes images may come from.",
                }
            }
        ),
    ),
]
