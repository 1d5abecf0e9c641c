"""Add-on Helm releases: where their pods may run, with the chart's defaults counted.

A release's values are only half of its placement: the chart's values.yaml fills in the rest
(components/kubernetes/chart_defaults.py records those defaults per chart version). These rules
merge the two as Helm does and check that a GPU node agent can run on every GPU pool: its
nodeSelector, its required node affinity and its tolerations against each pool's node labels
and taints as the plan declares them (an EKS node group, a GKE node pool, an on-prem node patch).
The same records say which Pod Security level each chart's pods meet, and every namespace a
release installs into must enforce exactly that level or be a documented exemption.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pulumi_policy import (
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

from mlstack.components.kubernetes.chart_defaults import (
    CHART_DEFAULTS,
    NAMESPACE_EXEMPTIONS,
    ChartDefaults,
    EffectivePlacement,
    effective_placement,
)
from mlstack.policies.rules.objects import (
    get,
    kind_of,
    labels_of,
    mapping,
    resource_rule,
    sequence,
    stack_rule,
)
from mlstack.policies.rules.pools import PoolNodes, pool_of
from mlstack.stacks.names import POD_SECURITY_ENFORCE_LABEL

HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
#: Taint effects that keep a pod off a node it does not tolerate (PreferNoSchedule only steers).
_REPELLING = ("NoSchedule", "NoExecute")


def _expression_matches(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, operator = str(get(expression, "key")), get(expression, "operator")
    values = [str(v) for v in sequence(get(expression, "values"))]
    present = key in labels
    if operator == "In":
        return present and labels[key] in values
    if operator == "NotIn":
        return not present or labels[key] not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt") and present and len(values) == 1:
        try:
            node, bound = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return node > bound if operator == "Gt" else node < bound
    return False


def _term_matches(term: Any, labels: Mapping[str, str]) -> bool:
    """A nodeSelectorTerm: its expressions ANDed. Terms on fields (node names) are not read
    offline, and an empty term matches nothing (the API's rule), so both count as no match."""
    expressions = sequence(get(term, "matchExpressions"))
    if not expressions or sequence(get(term, "matchFields")):
        return False
    return all(_expression_matches(mapping(e), labels) for e in expressions)


def _tolerates(toleration: Any, taint: tuple[str, str, str]) -> bool:
    key, value, effect = taint
    t_key, t_effect = get(toleration, "key") or "", get(toleration, "effect") or ""
    operator = get(toleration, "operator") or "Equal"
    if t_effect and t_effect != effect:
        return False
    if operator == "Exists":
        return t_key in ("", key)
    return t_key == key and str(get(toleration, "value") or "") == value


def placement_refusal(placement: EffectivePlacement, pool: PoolNodes) -> str | None:
    """Why `placement` keeps its pods off the nodes of `pool`, or None if it admits them."""
    labels = dict(pool.labels)
    for key, value in placement.node_selector.items():
        if labels.get(key) != str(value):
            return f"nodeSelector {key}={value} does not match the pool's labels"
    required = get(
        placement.affinity, "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if required is not None:
        terms = sequence(get(required, "nodeSelectorTerms"))
        if not any(_term_matches(term, labels) for term in terms):
            keys = sorted(
                {str(get(e, "key")) for t in terms for e in sequence(get(t, "matchExpressions"))}
            )
            return f"its required node affinity (on {', '.join(keys) or 'nothing'}) matches none"
    for taint in pool.taints:
        if taint[2] in _REPELLING and not any(_tolerates(t, taint) for t in placement.tolerations):
            return f"nothing tolerates the taint {taint[0]}={taint[1]}:{taint[2]}"
    return None


def release_defaults(props: Mapping[str, Any]) -> ChartDefaults | None:
    return CHART_DEFAULTS.get((str(props.get("chart")), str(props.get("version"))))


def gpu_addons_reach_gpu_pools(args: StackValidationArgs, report: ReportViolation) -> None:
    pools: dict[str, PoolNodes] = {}
    releases = []
    for r in args.resources:
        if r.resource_type == HELM_RELEASE:
            releases.append(r)
        nodes = pool_of(r.resource_type, r.props)
        if nodes is not None and nodes.kind == "gpu":
            pools.setdefault(nodes.pool, nodes)
    for r in releases:
        try:
            defaults = release_defaults(r.props)
            if defaults is None or not defaults.runs_on_gpu_nodes:
                continue
            placement = effective_placement(defaults, mapping(r.props.get("values")))
        except UnknownValueError:
            continue
        for name, pool in sorted(pools.items()):
            refusal = placement_refusal(placement, pool)
            if refusal is not None:
                report(
                    f"Helm release {r.name!r} ({defaults.chart} {defaults.version}) cannot run on "
                    f"GPU pool {name!r}: {refusal} (chart defaults from {defaults.repository} "
                    f"{defaults.tag} {defaults.file} merged with the release's values), so no "
                    f"GPU there is ever advertised; set the release's values so that its "
                    "nodeSelector, required node affinity and tolerations admit the pool",
                    r.urn,
                )


def addon_placement_recorded(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != HELM_RELEASE:
        return
    try:
        chart, version = str(args.props.get("chart")), str(args.props.get("version"))
    except UnknownValueError:
        return
    known = sorted(v for c, v in CHART_DEFAULTS if c == chart)
    if known and version not in known:
        report(
            f"chart {chart} {version} has no recorded placement defaults (recorded: "
            f"{', '.join(known)}), so its nodeSelector, affinity and tolerations cannot be "
            "checked; copy them from the chart's values.yaml at that tag into "
            "components/kubernetes/chart_defaults.py",
            None,
        )


def addon_namespaces_enforce_their_level(
    args: StackValidationArgs, report: ReportViolation
) -> None:
    levels = {
        str(get(r.props, "metadata", "name")): labels_of(r.props).get(POD_SECURITY_ENFORCE_LABEL)
        for r in args.resources
        if kind_of(r.resource_type) == "Namespace"
    }
    for r in args.resources:
        if r.resource_type != HELM_RELEASE:
            continue
        try:
            defaults = release_defaults(r.props)
            namespace = str(r.props.get("namespace") or "default")
            created = r.props.get("createNamespace") is True
        except UnknownValueError:
            continue
        if defaults is None or (namespace not in levels and namespace in NAMESPACE_EXEMPTIONS):
            continue  # unrecorded charts are addon-placement-recorded's to report
        needed = defaults.pod_security
        what = (
            f"Helm release {r.name!r} ({defaults.chart} {defaults.version}) runs pods that meet "
            f"Pod Security {needed!r} ({defaults.pod_security_why})"
        )
        fix = (
            f"declare namespace {namespace!r} in the stack with {POD_SECURITY_ENFORCE_LABEL}: "
            f"{needed}, or write down why it is exempt in NAMESPACE_EXEMPTIONS "
            "(components/kubernetes/chart_defaults.py)"
        )
        if namespace not in levels:
            how = (
                "Helm's createNamespace creates without a Pod Security level"
                if created
                else "the plan does not declare, so it has no Pod Security level"
            )
            report(
                f"{what} in namespace {namespace!r}, which {how}: nothing says what may run "
                f"there; {fix}",
                r.urn,
            )
        elif levels[namespace] != needed:
            effect = (
                "admission would refuse them"
                if levels[namespace] == "restricted"
                or (levels[namespace] == "baseline" and needed == "privileged")
                else "it admits more than they need"
            )
            report(
                f"{what} in namespace {namespace!r}, which enforces "
                f"{levels[namespace] or 'no level'}: {effect}; set its "
                f"{POD_SECURITY_ENFORCE_LABEL} to {needed}",
                r.urn,
            )


POLICIES: list[ResourceValidationPolicy | StackValidationPolicy] = [
    stack_rule(
        "gpu-addons-reach-gpu-pools",
        "GPU node agents' effective placement (chart defaults merged with the release's values) "
        "admits every GPU pool.",
        gpu_addons_reach_gpu_pools,
    ),
    stack_rule(
        "addon-namespaces-enforce-their-level",
        "Each add-on release installs into a namespace that enforces exactly the Pod Security "
        "level its chart's pods meet, or one with a documented exemption (kube-system).",
        addon_namespaces_enforce_their_level,
    ),
    resource_rule(
        "addon-placement-recorded",
        "Add-on charts are pinned at a version whose placement defaults are recorded.",
        addon_placement_recorded,
    ),
]
