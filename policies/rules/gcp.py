"""GCP rules: Cloud Storage buckets, Artifact Registry, the GKE control plane and node pools,
IAM grants and credentials, and VPC firewall rules.

They check the resources the GCP backend declares (and anything else in the program that
declares the same types), by their wire-form inputs: camelCase props, IAM policies as JSON
strings (`policyData`). A value the engine does not know yet (during a preview: a member built
from the email of a service account not yet created) is skipped rather than guessed at; `pulumi
up` runs the rules again with it known.

Unlike S3, a GCS bucket carries its settings (uniform access, public access prevention,
versioning) as props of its own, so the bucket rules are resource rules. IAM grants are
resources of their own, in three shapes per scope: an IAMMember grants `role` to one `member`,
an IAMBinding grants `role` to `members`, an IAMPolicy sets the whole policy from `policyData`
(JSON with `bindings` of role and members); each is judged on itself.

Whether a node is private is the node pool's `networkConfig.enablePrivateNodes` when the pool
sets it (GKE 1.29+), else its cluster's `privateClusterConfig.enablePrivateNodes`, so that rule
is a stack rule: it matches each NodePool to its cluster by the `cluster` prop (a name or a
`projects/.../clusters/<name>` id).

GKE node pools are pools (policies/rules/pools.py reads them): the pool rules and the spot rule
cover them.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pulumi_policy import (
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from mlstack.policies.rules.objects import (
    UNKNOWN,
    config_value,
    known,
    known_items,
    resource_rule,
    sequence,
    stack_rule,
)

# --- resource types ------------------------------------------------------------------------

BUCKET = "gcp:storage/bucket:Bucket"
REPOSITORY = "gcp:artifactregistry/repository:Repository"
GKE_CLUSTER = "gcp:container/cluster:Cluster"
GKE_NODE_POOL = "gcp:container/nodePool:NodePool"
FIREWALL = "gcp:compute/firewall:Firewall"


def _iam(module: str, stem: str, iam: str, scope: str, prop: str) -> dict[str, tuple[str, str]]:
    """The Member, Binding and Policy types of one IAM scope: `gcp:<module>/<stem><iam>Member:
    <Stem><iam>Member` and so on (pulumi-gcp spells IAM as `IAM` or `Iam`, per resource)."""
    types = {}
    for shape in ("Member", "Binding", "Policy"):
        title = f"{stem[:1].upper()}{stem[1:]}{iam}{shape}"
        token = f"{stem}{iam}{shape}" if stem else f"{iam[0].lower()}{iam[1:]}{shape}"
        types[f"gcp:{module}/{token}:{title}"] = (scope, prop)
    return types


#: IAM resources granting roles, by type: (the scope they grant on, the prop naming it). The
#: type's name says its shape: ...Member (`role`, `member`), ...Binding (`role`, `members`) or
#: ...Policy (`policyData`).
IAM_GRANTS: dict[str, tuple[str, str]] = {
    **_iam("organizations", "", "IAM", "organization", "orgId"),
    **_iam("folder", "", "IAM", "folder", "folder"),
    **_iam("projects", "", "IAM", "project", "project"),
    **_iam("serviceaccount", "", "IAM", "service account", "serviceAccountId"),
    **_iam("storage", "bucket", "IAM", "bucket", "bucket"),
    **_iam("storage", "managedFolder", "Iam", "managed folder", "managedFolder"),
    **_iam("artifactregistry", "repository", "Iam", "repository", "repository"),
    **_iam("kms", "keyRing", "IAM", "key ring", "keyRingId"),
    **_iam("kms", "cryptoKey", "IAM", "crypto key", "cryptoKeyId"),
}
#: Scopes whose grants reach a bucket's objects.
STORAGE_SCOPES = ("bucket", "managed folder")
#: Long-lived credentials of service accounts, by type: (what, the prop naming the account).
CREDENTIALS = {
    "gcp:serviceaccount/key:Key": ("service account key", "serviceAccountId"),
    "gcp:storage/hmacKey:HmacKey": ("HMAC key", "serviceAccountEmail"),
}

# --- values --------------------------------------------------------------------------------

#: Principals that are everyone: on the internet, or with any Google account.
PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")
#: Basic (primitive) roles: each spans every service, far past what one workload needs.
DEFAULT_FORBIDDEN_ROLES = ["roles/owner", "roles/editor", "roles/viewer"]
WORKLOAD_POOL_SUFFIX = ".svc.id.goog"
GKE_METADATA = "GKE_METADATA"
#: GKE workload vulnerability scanning modes Google has removed, with the date: the API marks
#: them deprecated ("Basic vulnerability scanning is no longer supported", google.container.v1
#: SecurityPostureConfig.VulnerabilityMode) and GKE's "Posture management deprecations" page
#: (cloud.google.com/kubernetes-engine/docs/deprecations/posture-management-deprecation) lists
#: the standard tier removed on 2025-07-31 and Advanced Vulnerability Insights on 2026-06-16.
#: The provider docs still offer both. A cluster asking for one cannot be created as asked.
RETIRED_VULNERABILITY_MODES = {
    "VULNERABILITY_BASIC": "2025-07-31",
    "VULNERABILITY_ENTERPRISE": "2026-06-16",
}
LIVE_VULNERABILITY_MODE = "VULNERABILITY_DISABLED"


def _named(what: str, name: Any, fallback: str) -> str:
    """'GKE cluster 'ml-dev'' from a known name, else 'GKE cluster <resource name>'."""
    return f"{what} {name!r}" if isinstance(name, str) and name else f"{what} {fallback}"


def _last_segment(value: Any) -> str | None:
    """'ml-dev' from 'ml-dev' or 'projects/p/locations/l/clusters/ml-dev'; None when unknown."""
    if not isinstance(value, str) or not value:
        return None
    return value.rstrip("/").rsplit("/", 1)[-1]


def _open_to_everyone(cidr: Any) -> bool:
    if not isinstance(cidr, str):
        return False
    try:
        return ipaddress.ip_network(cidr.strip(), strict=False).prefixlen == 0
    except ValueError:
        return False  # the provider rejects it


# --- IAM grants ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """One role granted to some members, as one IAM resource (or one binding of a policy)
    declares it; role and members may be UNKNOWN."""

    where: str  # e.g. "bucket IAM member team-ml-reader on bucket 'acme-ml-dev-models'"
    scope: str  # "project", "bucket", ...
    role: Any
    members: tuple[Any, ...]


def iam_policy_data(value: Any) -> Mapping[str, Any] | None:
    """An IAM policy given as its JSON string (or already parsed); None when it is not known
    yet or not a JSON object (the provider rejects that one before GCP sees it)."""
    if isinstance(value, Mapping):
        return value
    if not isinstance(value, str):
        return None
    try:
        data = json.loads(value)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def iam_grants(resource_type: str, props: Mapping[str, Any], name: str) -> list[Grant]:
    """Every grant an IAM resource declares; [] for other types."""
    found = IAM_GRANTS.get(resource_type)
    if found is None:
        return []
    scope, prop = found
    shape = resource_type.rsplit(":", 1)[-1]
    target = known(props, prop)
    on = f" on {scope} {target!r}" if isinstance(target, str) and target else ""
    if shape.endswith("Member"):
        where = f"{scope} IAM member {name}{on}"
        return [Grant(where, scope, known(props, "role"), (known(props, "member"),))]
    if shape.endswith("Binding"):
        where = f"{scope} IAM binding {name}{on}"
        members = known(props, "members")
        listed = (UNKNOWN,) if members is UNKNOWN else tuple(known_items(members))
        return [Grant(where, scope, known(props, "role"), listed)]
    data = iam_policy_data(known(props, "policyData"))
    grants = []
    for binding in sequence((data or {}).get("bindings")):
        if isinstance(binding, Mapping):
            members = tuple(m for m in sequence(binding.get("members")) if isinstance(m, str))
            role = binding.get("role")
            grants.append(Grant(f"{scope} IAM policy {name}{on}", scope, role, members))
    return grants


def _members(members: Iterable[Any]) -> str:
    return ", ".join(m for m in members if isinstance(m, str) and m) or "members not known yet"


# --- Cloud Storage ---------------------------------------------------------------------------


def _bucket(args: ResourceValidationArgs) -> str:
    return _named("GCS bucket", known(args.props, "name"), args.name)


def gcs_uniform_access(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != BUCKET:
        return
    if known(args.props, "uniformBucketLevelAccess") not in (True, UNKNOWN):
        report(
            f"{_bucket(args)} does not have uniform bucket-level access (it defaults to off), so "
            "object ACLs can grant access past its IAM policy; set uniformBucketLevelAccess: true",
            None,
        )


def gcs_public_access_prevented(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == BUCKET:
        prevention = known(args.props, "publicAccessPrevention")
        if prevention is not UNKNOWN and str(prevention or "").lower() != "enforced":
            report(
                f"{_bucket(args)} has public access prevention "
                f"{prevention or 'inherited (the default)'}, so an IAM grant to allUsers or "
                "allAuthenticatedUsers can make its objects public; set publicAccessPrevention: "
                "enforced",
                None,
            )
        return
    for grant in iam_grants(args.resource_type, args.props, args.name):
        if grant.scope not in STORAGE_SCOPES:
            continue
        role = grant.role if isinstance(grant.role, str) and grant.role else "a role"
        for member in grant.members:
            if member in PUBLIC_MEMBERS:
                report(
                    f"{grant.where} grants {role} to {member}, which makes objects public "
                    f"({'anyone on the internet' if member == 'allUsers' else 'any Google account'}"
                    "); grant it to the service accounts or groups that need it",
                    None,
                )


def gcs_versioned(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != BUCKET:
        return
    if known(args.props, "versioning", "enabled") not in (True, UNKNOWN):
        report(
            f"{_bucket(args)} is not versioned, so an overwritten or deleted object (a "
            "checkpoint, a model) is gone for good; set versioning.enabled: true",
            None,
        )


# --- Artifact Registry -----------------------------------------------------------------------


def artifact_registry_immutable_tags(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != REPOSITORY:
        return
    form = known(args.props, "format")
    if not isinstance(form, str) or form.upper() != "DOCKER":
        return
    # Remote and virtual repositories proxy other registries: nothing is pushed to them.
    mode = known(args.props, "mode")
    if mode not in (None, "STANDARD_REPOSITORY"):
        return
    if known(args.props, "dockerConfig", "immutableTags") not in (True, UNKNOWN):
        where = _named("Artifact Registry repository", known(args.props, "repositoryId"), args.name)
        report(
            f"{where} has mutable tags (the default), so a pushed tag can later name other code "
            "than was reviewed and scanned; set dockerConfig.immutableTags: true",
            None,
        )


# --- GKE -------------------------------------------------------------------------------------


def _cluster(props: Mapping[str, Any], name: str) -> str:
    return _named("GKE cluster", known(props, "name"), name)


def _pool(props: Mapping[str, Any], name: str) -> str:
    where = _named("GKE node pool", known(props, "name"), name)
    cluster = _last_segment(known(props, "cluster"))
    return f"{where} of cluster {cluster!r}" if cluster else where


def _inline_pool(cluster: str, pool: Any, index: int) -> str:
    return f"{cluster}, node pool {known(pool, 'name') or index}"


def _of_type(resources: Iterable[PolicyResource], type_: str) -> list[PolicyResource]:
    return [r for r in resources if r.resource_type == type_]


def gke_private_nodes(args: StackValidationArgs, report: ReportViolation) -> None:
    pools = _of_type(args.resources, GKE_NODE_POOL)
    fix = "remove it (the cluster's private nodes apply) or set it to true"
    for p in pools:
        if known(p.props, "networkConfig", "enablePrivateNodes") is False:
            report(
                f"{_pool(p.props, p.name)} sets networkConfig.enablePrivateNodes: false, so its "
                f"nodes get public IPs; {fix}",
                p.urn,
            )
    for c in _of_type(args.resources, GKE_CLUSTER):
        where = _cluster(c.props, c.name)
        inline = known_items(known(c.props, "nodePools"))
        for i, pool in enumerate(inline):
            if known(pool, "networkConfig", "enablePrivateNodes") is False:
                report(
                    f"{_inline_pool(where, pool, i)} sets networkConfig.enablePrivateNodes: "
                    f"false, so its nodes get public IPs; {fix}",
                    c.urn,
                )
        if known(c.props, "privateClusterConfig", "enablePrivateNodes") in (True, UNKNOWN):
            continue
        # The cluster's nodes are public by default: every pool of it has to opt out.
        name = known(c.props, "name")
        own = [p for p in pools if name and _last_segment(known(p.props, "cluster")) == name]
        names = [
            str(known(pool, "name") or i)
            for i, pool in enumerate(inline)
            if known(pool, "networkConfig", "enablePrivateNodes") is None
        ]
        names += [
            str(known(p.props, "name") or p.name)
            for p in own
            if known(p.props, "networkConfig", "enablePrivateNodes") is None
        ]
        public = []
        if not inline and known(c.props, "removeDefaultNodePool") not in (True, UNKNOWN):
            public.append("the default node pool")
        if names:
            public.append(f"node pool{'s' if len(names) > 1 else ''} {', '.join(names)}")
        if not (inline or own):
            public.append("any node pool that does not set networkConfig.enablePrivateNodes")
        if public:
            report(
                f"{where} does not make its nodes private (privateClusterConfig."
                f"enablePrivateNodes is not true), so nodes of {' and '.join(public)} get public "
                "IPs; set privateClusterConfig.enablePrivateNodes: true",
                c.urn,
            )


def gke_endpoint_restricted(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != GKE_CLUSTER:
        return
    where = _cluster(args.props, args.name)
    fix = (
        "list only the office or VPN ranges in gcp.master_authorized_networks, or leave it "
        "empty for a private endpoint"
    )
    networks = known(args.props, "masterAuthorizedNetworksConfig")
    if networks is UNKNOWN:
        return
    for block in known_items(known(networks, "cidrBlocks")):
        cidr = known(block, "cidrBlock")
        if _open_to_everyone(cidr):
            report(f"{where} lets {cidr} (the whole internet) reach its control plane; {fix}", None)
    if known(networks, "gcpPublicCidrsAccessEnabled") is True:
        report(
            f"{where} lets every Google Cloud public IP (any VM of any project) reach its "
            "control plane; set masterAuthorizedNetworksConfig.gcpPublicCidrsAccessEnabled: false",
            None,
        )
    if networks is not None:
        return
    private_endpoint = known(args.props, "privateClusterConfig", "enablePrivateEndpoint")
    ip_endpoint = known(args.props, "controlPlaneEndpointsConfig", "ipEndpointsConfig", "enabled")
    if private_endpoint in (True, UNKNOWN) or ip_endpoint in (False, UNKNOWN):
        return
    report(
        f"{where} has a public control-plane endpoint without master authorized networks, so "
        f"the whole internet reaches its API; {fix}",
        None,
    )


def _metadata_mode_problem(node_config: Any) -> str | None:
    """What is wrong with the metadata server a nodeConfig gives pods; None when nothing (or
    no nodeConfig, or it is not known yet)."""
    if node_config is None or node_config is UNKNOWN:
        return None
    mode = known(node_config, "workloadMetadataConfig", "mode")
    if mode in (GKE_METADATA, UNKNOWN):
        return None
    return (
        f"gives pods the {mode} metadata server, so every pod acts as the node's service account"
        if mode
        else "sets no workloadMetadataConfig.mode"
    )


def _workload_pool(pool: Any) -> bool:
    return isinstance(pool, str) and pool.endswith(WORKLOAD_POOL_SUFFIX)


def gke_workload_identity(args: ResourceValidationArgs, report: ReportViolation) -> None:
    fix = f"set nodeConfig.workloadMetadataConfig.mode: {GKE_METADATA}"
    if args.resource_type == GKE_NODE_POOL:
        problem = _metadata_mode_problem(known(args.props, "nodeConfig"))
        if problem:
            report(f"{_pool(args.props, args.name)} {problem}; {fix}", None)
        return
    if args.resource_type != GKE_CLUSTER:
        return
    where = _cluster(args.props, args.name)
    pool = known(args.props, "workloadIdentityConfig", "workloadPool")
    # Autopilot clusters always run Workload Identity.
    autopilot = known(args.props, "enableAutopilot") is True
    if not (autopilot or pool is UNKNOWN or _workload_pool(pool)):
        have = f"has workload pool {pool!r}" if pool else "has no Workload Identity"
        report(
            f"{where} {have}, so pods cannot act as their own Google service accounts; set "
            f"workloadIdentityConfig.workloadPool: <project>{WORKLOAD_POOL_SUFFIX}",
            None,
        )
    problem = _metadata_mode_problem(known(args.props, "nodeConfig"))
    if problem:
        report(f"{where}, default node pool, {problem}; {fix}", None)
    for i, inline in enumerate(known_items(known(args.props, "nodePools"))):
        problem = _metadata_mode_problem(known(inline, "nodeConfig"))
        if problem:
            report(f"{_inline_pool(where, inline, i)} {problem}; {fix}", None)


def gke_no_legacy_auth(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != GKE_CLUSTER:
        return
    where = _cluster(args.props, args.name)
    if known(args.props, "enableLegacyAbac") is True:
        report(
            f"{where} has legacy ABAC on, which grants access outside Kubernetes RBAC; set "
            "enableLegacyAbac: false",
            None,
        )
    if known(args.props, "masterAuth", "clientCertificateConfig", "issueClientCertificate") is True:
        report(
            f"{where} issues a client certificate, a long-lived admin credential nobody can "
            "revoke; set masterAuth.clientCertificateConfig.issueClientCertificate: false",
            None,
        )


def gke_live_vulnerability_mode(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != GKE_CLUSTER:
        return
    mode = known(args.props, "securityPostureConfig", "vulnerabilityMode")
    if not isinstance(mode, str) or mode not in RETIRED_VULNERABILITY_MODES:
        return
    report(
        f"{_cluster(args.props, args.name)} asks for workload vulnerability scanning mode {mode}, "
        f"which GKE removed on {RETIRED_VULNERABILITY_MODES[mode]}; set "
        f"securityPostureConfig.vulnerabilityMode: {LIVE_VULNERABILITY_MODE}",
        None,
    )


def _management_off(management: Any) -> list[str]:
    """The management settings turned off; unset ones are on (the provider defaults both to
    true)."""
    return [f for f in ("autoRepair", "autoUpgrade") if known(management, f) is False]


def gke_node_auto_repair_upgrade(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == GKE_NODE_POOL:
        pools = [(_pool(args.props, args.name), known(args.props, "management"))]
    elif args.resource_type == GKE_CLUSTER:
        where = _cluster(args.props, args.name)
        pools = [
            (_inline_pool(where, p, i), known(p, "management"))
            for i, p in enumerate(known_items(known(args.props, "nodePools")))
        ]
    else:
        return
    for where, management in pools:
        off = _management_off(management)
        if off:
            report(
                f"{where} turns {' and '.join(off)} off, so broken nodes stay broken and nodes "
                f"fall behind the control plane's security fixes; set "
                f"{', '.join(f'management.{f}: true' for f in off)} (or leave them unset)",
                None,
            )


# --- IAM -------------------------------------------------------------------------------------


def iam_no_primitive_roles(args: ResourceValidationArgs, report: ReportViolation) -> None:
    forbidden = config_value(args, "forbiddenRoles", DEFAULT_FORBIDDEN_ROLES)
    for grant in iam_grants(args.resource_type, args.props, args.name):
        if grant.role in forbidden:
            report(
                f"{grant.where} grants {grant.role} to {_members(grant.members)}, a basic role "
                "that spans every service; grant predefined or custom roles with only the "
                "permissions needed",
                None,
            )


def iam_no_service_account_keys(args: ResourceValidationArgs, report: ReportViolation) -> None:
    found = CREDENTIALS.get(args.resource_type)
    if found is None:
        return
    what, prop = found
    account = known(args.props, prop)
    of = f" of {_last_segment(account)}" if isinstance(account, str) and account else ""
    report(
        f"{what} {args.name}{of} is a long-lived credential that works until someone deletes "
        "it; give workloads a Google service account through Workload Identity and people "
        "their own Google accounts",
        None,
    )


# --- VPC firewall ----------------------------------------------------------------------------


def firewall_no_open_ingress(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != FIREWALL:
        return
    direction = known(args.props, "direction")
    if direction not in (None, "INGRESS") or known(args.props, "disabled") in (True, UNKNOWN):
        return
    allows = known(args.props, "allows")
    if allows is UNKNOWN or not known_items(allows):
        return
    where = _named("Firewall rule", known(args.props, "name"), args.name)
    fix = "list the ranges that need it in sourceRanges, or use sourceTags"
    ranges = known(args.props, "sourceRanges")
    if ranges is UNKNOWN:
        return
    # An empty string is no range: the API drops it, as it does an empty list.
    listed = [c for c in known_items(ranges) if c is UNKNOWN or (isinstance(c, str) and c.strip())]
    for cidr in listed:
        if _open_to_everyone(cidr):
            report(f"{where} allows ingress from {cidr} (the whole internet); {fix}", None)
    if listed:
        return
    sources = [known(args.props, p) for p in ("sourceTags", "sourceServiceAccounts")]
    if any(s is UNKNOWN or known_items(s) for s in sources):
        return
    report(
        f"{where} allows ingress with no source, which GCP reads as 0.0.0.0/0 (the whole "
        f"internet); {fix}",
        None,
    )


# --- the pack --------------------------------------------------------------------------------


POLICIES: list[ResourceValidationPolicy | StackValidationPolicy] = [
    resource_rule(
        "gcp-gcs-uniform-access",
        "GCS buckets have uniform bucket-level access on, so no object ACL grants access.",
        gcs_uniform_access,
    ),
    resource_rule(
        "gcp-gcs-public-access-prevented",
        "GCS buckets enforce public access prevention and no bucket IAM grant names allUsers or "
        "allAuthenticatedUsers.",
        gcs_public_access_prevented,
    ),
    resource_rule(
        "gcp-gcs-versioned",
        "GCS buckets have versioning enabled.",
        gcs_versioned,
    ),
    resource_rule(
        "gcp-artifact-registry-immutable-tags",
        "Artifact Registry docker repositories have immutable tags.",
        artifact_registry_immutable_tags,
    ),
    stack_rule(
        "gcp-gke-private-nodes",
        "GKE nodes have no public IPs: the cluster makes nodes private, or every pool does.",
        gke_private_nodes,
    ),
    resource_rule(
        "gcp-gke-endpoint-restricted",
        "The GKE control plane is reachable only from listed networks, never 0.0.0.0/0.",
        gke_endpoint_restricted,
    ),
    resource_rule(
        "gcp-gke-workload-identity",
        "GKE clusters run Workload Identity and every node config gives pods the GKE metadata "
        "server.",
        gke_workload_identity,
    ),
    resource_rule(
        "gcp-gke-no-legacy-auth",
        "GKE clusters have legacy ABAC off and issue no client certificate.",
        gke_no_legacy_auth,
    ),
    resource_rule(
        "gcp-gke-live-vulnerability-mode",
        "GKE clusters ask for no workload vulnerability scanning mode GKE has removed.",
        gke_live_vulnerability_mode,
    ),
    resource_rule(
        "gcp-gke-node-auto-repair-upgrade",
        "GKE node pools keep auto-repair and auto-upgrade on (unset means on).",
        gke_node_auto_repair_upgrade,
    ),
    resource_rule(
        "gcp-iam-no-primitive-roles",
        "No IAM grant gives a basic role (owner, editor or viewer).",
        iam_no_primitive_roles,
        config_schema=PolicyConfigSchema(
            properties={
                "forbiddenRoles": {
                    "type": "array",
                    "items": {"type": "string"},
                    "default": DEFAULT_FORBIDDEN_ROLES,
                    "description": "Roles no IAM member, binding or policy may grant.",
                }
            }
        ),
    ),
    resource_rule(
        "gcp-iam-no-service-account-keys",
        "No service account key or HMAC key is declared.",
        iam_no_service_account_keys,
    ),
    resource_rule(
        "gcp-firewall-no-open-ingress",
        "VPC firewall rules allow no ingress from 0.0.0.0/0 (or from no source, which means it).",
        firewall_no_open_ingress,
    ),
]
