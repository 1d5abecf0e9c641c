"""An inference service as Kubernetes objects: pure builders that return dicts, no resources.

A stable Deployment (and, with a canary, a second one pinned to the canary's bundle version)
runs the serving workload (`python -m mlstack.workloads.serve.main`); one Service selects the
pods of both by the service's label, so traffic splits by replica count. A HorizontalPodAutoscaler
scales the stable Deployment, a PodDisruptionBudget lets drains take one pod at a time, and a
NetworkPolicy opens port 8080 to clients the tenancy layer's default-deny would block (another
namespace's pods, the internal load balancer).

Pods take the environment contract's MLSTACK_MODEL_URL (the model's directory under the team's
prefix in the models bucket) and, when pinned, MLSTACK_MODEL_VERSION, or, following a registry
alias (`champion`, `canary`: workloads/registry.py), MLSTACK_MODEL_ALIAS; otherwise they follow
the model's `latest` pointer. Every Deployment is queued by Kueue at the `mlstack-serving` priority:
its pods count against the team's quota like the team's training, and preempt it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import pulumi

from mlstack.policies.tenancy import quantity
from mlstack.stacks.names import (
    LOCAL_QUEUE_NAME,
    MANAGED_BY,
    PRIORITY_LABEL,
    PROMETHEUS_PATH_ANNOTATION,
    PROMETHEUS_PORT_ANNOTATION,
    PROMETHEUS_SCRAPE_ANNOTATION,
    QUEUE_LABEL,
    SERVE_REPOSITORY,
    SERVICE_ACCOUNT_NAME,
    SERVICE_LABEL,
    SERVING_PRIORITY,
    TEAM_LABEL,
    TRACK_LABEL,
)
from mlstack.stacks.schema import InferenceService, Team
from mlstack.workloads import contract
from mlstack.workloads.deploy.pods import (
    Placement,
    container_security_context,
    env_value,
    guaranteed_resources,
    image_ref,
    join,
    node_placement,
    pod_security_context,
    scratch_volumes,
    store_env,
)
from mlstack.workloads.deploy.settings import ServiceSettings

Track = Literal["stable", "canary"]

CONTAINER = "serve"
#: The serving entry point, run as `python -m`.
ENTRY_MODULE = "mlstack.workloads.serve.main"
#: The server's HTTP port in the pod (API, probes and metrics).
HTTP_PORT = 8080
#: The Service's port: clients call `http://<service>.<team>.svc.cluster.local/v1/completions`.
SERVICE_PORT = 80
READY_PATH = "/readyz"
LIVE_PATH = "/healthz"
METRICS_PATH = "/metrics"
#: Seconds a terminating pod keeps serving before SIGTERM, so that endpoints drop it first.
PRESTOP_SLEEP_S = 5
#: Seconds of the grace period left after the server's drain, for it to exit before SIGKILL.
EXIT_MARGIN_S = 5
STARTUP_PERIOD_S = 10
#: Time to find a node (a GPU pool scaling up from zero) and pull the image, on top of the
#: service's startup_timeout_s, before a rollout counts as failed.
PROVISIONING_MARGIN_S = 900
#: The per-pod metric `autoscale_on: requests_per_second` follows, served by the custom
#: metrics API (prometheus-adapter, from the server's request counter).
REQUESTS_METRIC = "mlstack_serve_requests_per_second"
_NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def model_url(placement: Placement, team: Team, service: InferenceService) -> pulumi.Input[str]:
    """Where the model's bundles are: `<models bucket>/<team prefix>/<model>`, the directory a
    training job of that name exports to."""
    return join(placement.buckets["models"], team.object_prefix, service.model_name)


def service_url(service: InferenceService) -> str:
    """The Service's in-cluster URL."""
    return f"http://{service.name}.{service.team}.svc.cluster.local"


def deployment_name(service: InferenceService, track: Track) -> str:
    return service.name if track == "stable" else f"{service.name}-canary"


def pinned_version(service: InferenceService, track: Track) -> str | None:
    """The bundle version a track serves; None: an alias, or the model's `latest`."""
    if track == "canary":
        assert service.canary is not None, "a canary track needs a canary"
        return service.canary.version
    return service.version


def followed_alias(service: InferenceService, track: Track) -> str | None:
    """The registry alias a track follows (workloads/registry.py), or None."""
    if track == "canary":
        assert service.canary is not None, "a canary track needs a canary"
        return service.canary.alias
    return service.alias


def drain_timeout_s(settings: ServiceSettings) -> int:
    """How long the server drains after SIGTERM: what the grace period leaves after the preStop
    pause, less a margin to exit before the kubelet kills it."""
    return settings.termination_grace_period_s - PRESTOP_SLEEP_S - EXIT_MARGIN_S


def container_args(settings: ServiceSettings) -> list[str]:
    """The entry point's flags (`python -m mlstack.workloads.serve.main --help`)."""
    service = settings.service
    return [
        *("--host", "0.0.0.0", "--port", str(HTTP_PORT)),
        *("--max-batch", str(service.max_batch)),
        *("--max-queue", str(service.max_queue)),
        *("--reload-interval-s", str(service.reload_interval_s)),
        *("--drain-timeout-s", str(drain_timeout_s(settings))),
    ]


def container_env(
    settings: ServiceSettings, team: Team, placement: Placement, track: Track
) -> list[dict[str, Any]]:
    """The environment contract (the model, a pinned version), plus how to reach the store."""
    service = settings.service
    env = [env_value(contract.MODEL_URL, model_url(placement, team, service))]
    version = pinned_version(service, track)
    if version is not None:
        env.append(env_value(contract.MODEL_VERSION, version))
    alias = followed_alias(service, track)
    if alias is not None:
        env.append(env_value(contract.MODEL_ALIAS, alias))
    return env + store_env(placement)


def _http_get(path: str) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}}


def probes(service: InferenceService) -> dict[str, dict[str, Any]]:
    """Startup on /readyz (loaded and warmed up) with startup_timeout_s to get there; then
    liveness on /healthz restarts a hung process, and readiness on /readyz takes a pod out of
    the Service while it is not ready (a reload, a drain)."""
    return {
        "startupProbe": {
            **_http_get(READY_PATH),
            "periodSeconds": STARTUP_PERIOD_S,
            "timeoutSeconds": 5,
            "failureThreshold": math.ceil(service.startup_timeout_s / STARTUP_PERIOD_S),
        },
        "livenessProbe": {
            **_http_get(LIVE_PATH),
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            **_http_get(READY_PATH),
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 2,
        },
    }


def _labels(service: InferenceService) -> dict[str, str]:
    return {**MANAGED_BY, TEAM_LABEL: service.team, SERVICE_LABEL: service.name}


def _metadata(service: InferenceService, name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": service.team, "labels": _labels(service), **extra}


def selector(service: InferenceService) -> dict[str, str]:
    """Every pod of the service, both tracks: what the Service, the disruption budget and the
    NetworkPolicy select."""
    return {SERVICE_LABEL: service.name}


def _queued(service: InferenceService, track: Track) -> dict[str, str]:
    """Labels of a track's Deployment and pods: the track, and Kueue's queue and priority."""
    return {
        **_labels(service),
        TRACK_LABEL: track,
        QUEUE_LABEL: LOCAL_QUEUE_NAME,
        PRIORITY_LABEL: SERVING_PRIORITY,
    }


def pod_template(
    settings: ServiceSettings, team: Team, placement: Placement, track: Track
) -> dict[str, Any]:
    """A serving pod: restricted Pod Security, on the service's pool, as the team's `workload`
    ServiceAccount (its cloud identity reads the team's models), scraped by Prometheus."""
    service = settings.service
    gpus = settings.gpus_per_replica
    volumes, mounts = scratch_volumes(gpus)
    container = {
        "name": CONTAINER,
        "image": image_ref(placement.registry, SERVE_REPOSITORY, service.image),
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", ENTRY_MODULE],
        "args": container_args(settings),
        "env": container_env(settings, team, placement, track),
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "resources": guaranteed_resources(service.cpu, service.memory_gib, gpus),
        **probes(service),
        # Endpoints drop a terminating pod asynchronously; until they have, it keeps serving.
        # SIGTERM comes after the sleep, and the server then drains what is in flight.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SLEEP_S)]}}},
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }
    spec: dict[str, Any] = {
        "serviceAccountName": SERVICE_ACCOUNT_NAME,
        "priorityClassName": SERVING_PRIORITY,
        "terminationGracePeriodSeconds": settings.termination_grace_period_s,
        "enableServiceLinks": False,
        **node_placement(settings.pool),
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                # A preference: a pool of one node still runs every replica.
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector(service)},
            }
        ],
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": volumes,
    }
    return {
        "metadata": {
            "labels": _queued(service, track),
            "annotations": {
                PROMETHEUS_SCRAPE_ANNOTATION: "true",
                PROMETHEUS_PORT_ANNOTATION: str(HTTP_PORT),
                PROMETHEUS_PATH_ANNOTATION: METRICS_PATH,
            },
        },
        "spec": spec,
    }


def rollout_deadline_s(service: InferenceService) -> int:
    """Seconds a new pod may take to become ready before its rollout counts as failed."""
    return service.startup_timeout_s + PROVISIONING_MARGIN_S


def deployment_manifest(
    settings: ServiceSettings, team: Team, placement: Placement, track: Track = "stable"
) -> dict[str, Any]:
    """A track's Deployment. A rolling update adds one pod and removes an old one only once the
    new one is ready, so a rollout never lowers the serving capacity. The stable Deployment
    leaves its replica count to the autoscaler (a count here would be reset by every update);
    the canary's is fixed."""
    service = settings.service
    name = deployment_name(service, track)
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {**selector(service), TRACK_LABEL: track}},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        },
        "progressDeadlineSeconds": rollout_deadline_s(service),
        "revisionHistoryLimit": 5,
        "template": pod_template(settings, team, placement, track),
    }
    if track == "canary":
        spec = {"replicas": settings.canary_replicas, **spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {**_metadata(service, name), "labels": _queued(service, track)},
        "spec": spec,
    }


def service_manifest(
    settings: ServiceSettings, internal_lb_annotations: Mapping[str, str]
) -> dict[str, Any]:
    """ClusterIP, or with internal_load_balancer a LoadBalancer the cloud keeps internal (its
    backend's `internal_lb_annotations`)."""
    service = settings.service
    metadata = _metadata(service, service.name)
    spec: dict[str, Any] = {
        "type": "ClusterIP",
        "selector": selector(service),
        "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
    }
    if service.internal_load_balancer:
        metadata["annotations"] = dict(internal_lb_annotations)
        spec["type"] = "LoadBalancer"
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec}


def autoscaler_manifest(settings: ServiceSettings) -> dict[str, Any]:
    """Scales the stable Deployment between the service's bounds less the canary's replicas,
    on CPU utilization or on requests per second per pod. Scale-down goes one pod a minute
    after five quiet minutes: a new replica takes minutes to warm up."""
    service = settings.service
    if service.autoscale_on == "cpu":
        metric: dict[str, Any] = {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {
                    "type": "Utilization",
                    "averageUtilization": service.target_cpu_percent,
                },
            },
        }
    else:
        assert service.target_requests_per_second is not None, "validation requires it"
        metric = {
            "type": "Pods",
            "pods": {
                "metric": {"name": REQUESTS_METRIC},
                "target": {
                    "type": "AverageValue",
                    "averageValue": quantity(service.target_requests_per_second),
                },
            },
        }
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(service, service.name),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": deployment_name(service, "stable"),
            },
            "minReplicas": settings.stable_min_replicas,
            "maxReplicas": settings.stable_max_replicas,
            "metrics": [metric],
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": 300,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                }
            },
        },
    }


def disruption_budget_manifest(settings: ServiceSettings) -> dict[str, Any]:
    """Voluntary evictions (drains, scale-down of nodes) take one of the service's pods at a
    time; a pod that is not ready may always be evicted, so it never blocks a drain."""
    service = settings.service
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(service, service.name),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector(service)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def network_policy_manifest(settings: ServiceSettings) -> dict[str, Any] | None:
    """Ingress to the server's port from those the team's NetworkPolicies do not admit: the
    internal load balancer (its traffic arrives from node or client addresses, so from any
    source: the load balancer's own reach is the boundary) or the namespaces the service lists.
    None when the namespace's own pods and monitoring are all its clients."""
    service = settings.service
    port = [{"protocol": "TCP", "port": HTTP_PORT}]
    if service.internal_load_balancer:
        rule: dict[str, Any] = {"ports": port}
    elif service.allow_from_namespaces:
        rule = {
            "from": [
                {
                    "namespaceSelector": {
                        "matchExpressions": [
                            {
                                "key": _NAMESPACE_NAME_LABEL,
                                "operator": "In",
                                "values": list(service.allow_from_namespaces),
                            }
                        ]
                    }
                }
            ],
            "ports": port,
        }
    else:
        return None
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(service, f"{service.name}-clients"),
        "spec": {
            "podSelector": {"matchLabels": selector(service)},
            "policyTypes": ["Ingress"],
            "ingress": [rule],
        },
    }


def pod_monitoring_manifest(settings: ServiceSettings) -> dict[str, Any]:
    """A PodMonitoring (monitoring.googleapis.com/v1) for GKE's managed Prometheus, which
    scrapes only the pods such objects select (the prometheus.io annotations mean nothing to
    it): every pod of the service, both tracks, on the named port at the metrics path.
    Shape per GoogleCloudPlatform/prometheus-engine's PodMonitoring CRD (manifests/setup.yaml):
    `spec.selector` a label selector, `spec.endpoints[]` with `port` (a name or number), `path`
    and `interval` (a Prometheus duration)."""
    service = settings.service
    return {
        "apiVersion": "monitoring.googleapis.com/v1",
        "kind": "PodMonitoring",
        "metadata": _metadata(service, service.name),
        "spec": {
            "selector": {"matchLabels": selector(service)},
            "endpoints": [{"port": "http", "path": METRICS_PATH, "interval": "30s"}],
        },
    }


def service_manifests(
    settings: ServiceSettings,
    team: Team,
    placement: Placement,
    internal_lb_annotations: Mapping[str, str],
    pod_monitoring: bool = False,
) -> dict[str, dict[str, Any]]:
    """Every object of an inference service, by role: deployment, canary (with a canary),
    service, autoscaler, disruption-budget, clients (when a NetworkPolicy is needed), and
    pod-monitoring (`pod_monitoring`: where the cloud's collector scrapes only those)."""
    manifests = {"deployment": deployment_manifest(settings, team, placement, "stable")}
    if settings.service.canary is not None:
        manifests["canary"] = deployment_manifest(settings, team, placement, "canary")
    manifests["service"] = service_manifest(settings, internal_lb_annotations)
    manifests["autoscaler"] = autoscaler_manifest(settings)
    manifests["disruption-budget"] = disruption_budget_manifest(settings)
    clients = network_policy_manifest(settings)
    if clients is not None:
        manifests["clients"] = clients
    if pod_monitoring:
        manifests["pod-monitoring"] = pod_monitoring_manifest(settings)
    return manifests
