"""The objects of an inference service, built without Pulumi: the server's contract (command,
flags, environment, probes, drain), where the pods run and what they request, the canary's
share of the Service, the autoscaler in both modes, the disruption budget, load balancers per
cloud, the NetworkPolicy, and strict validity against the Kubernetes schema of every supported
version."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from crd_schema import close_schema, error_path, metadata_problems
from jsonschema import Draft4Validator, FormatChecker

from mlstack.components.backend import get_backend
from mlstack.policies.queues import PRIORITIES
from mlstack.policies.rules.access import INTERNAL_LB_ANNOTATIONS as RULE_INTERNAL_ANNOTATIONS
from mlstack.stacks.catalog import Cloud
from mlstack.stacks.names import (
    GPU_RESOURCE,
    GPU_TAINT_KEY,
    LOCAL_QUEUE_NAME,
    MANAGED_BY,
    OBJECT_STORE_SECRET,
    POOL_LABEL,
    PRIORITY_LABEL,
    QUEUE_LABEL,
    SERVICE_ACCOUNT_NAME,
    SERVICE_LABEL,
    TEAM_LABEL,
    TRACK_LABEL,
)
from mlstack.stacks.names import SERVING_PRIORITY as PRIORITY
from mlstack.stacks.schema import (
    RELEASE,
    SUPPORTED_KUBERNETES,
    Canary,
    InferenceService,
    NodePool,
    Platform,
    PoolKind,
    Team,
)
from mlstack.stacks.validate import load_platform
from mlstack.workloads import contract
from mlstack.workloads.deploy.pods import RUN_AS_USER, S3_ENDPOINT_ENV, SCRATCH_DIR, Placement
from mlstack.workloads.deploy.serving import (
    CONTAINER,
    ENTRY_MODULE,
    HTTP_PORT,
    PRESTOP_SLEEP_S,
    REQUESTS_METRIC,
    SERVICE_PORT,
    model_url,
    service_manifests,
    service_url,
)
from mlstack.workloads.deploy.settings import ServiceSettings, service_settings
from tests.workloads.deploy.placements import GCS, LAB_S3

#: A service of the lab's language team (8 A100s; 64 CPUs, 512 GiB) serving its lm-small.
SERVICE = {"name": "chat", "team": "language", "pool": "a100", "model": "lm-small"}
Manifests = dict[str, dict[str, Any]]
GCP_INTERNAL_LB = get_backend("gcp").internal_lb_annotations
POD_MONITORING_SCHEMA = (
    Path(__file__).resolve().parents[2] / "data/crds/podmonitoring/v1/podmonitoring.json"
)


def _platform(lab_config: dict[str, Any], **service: Any) -> Platform:
    config = copy.deepcopy(lab_config)
    config["workloads"] = {"inference_services": [{**SERVICE, **service}]}
    return load_platform(config)


def _built(
    lab_config: dict[str, Any],
    placement: Placement = LAB_S3,
    cloud: Cloud = "onprem",
    **service: Any,
) -> tuple[ServiceSettings, Manifests]:
    platform = _platform(lab_config, **service)
    config = platform.workloads.inference_services[0]
    settings = service_settings(config, platform.pool(config.pool))
    team = next(t for t in platform.teams if t.name == config.team)
    backend = get_backend(cloud)
    return settings, service_manifests(
        settings,
        team,
        placement,
        backend.internal_lb_annotations,
        pod_monitoring=backend.scrapes_pod_monitorings,
    )


def _pod(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = _pod(deployment)["containers"]
    return container


def _env(deployment: dict[str, Any]) -> dict[str, Any]:
    """name -> value, or the valueFrom source."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in _container(deployment)["env"]}


def _plain_env(deployment: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in _container(deployment)["env"] if "value" in e}


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- the server's contract --------------------------------------------------------------------


def test_the_command_runs_the_server_with_the_services_flags(lab_config: dict[str, Any]) -> None:
    _, m = _built(lab_config, max_batch=16, max_queue=64, reload_interval_s=30)
    container = _container(m["deployment"])
    assert container["name"] == CONTAINER
    assert container["command"] == ["python", "-m", ENTRY_MODULE]
    assert container["args"] == [
        *("--host", "0.0.0.0", "--port", "8080", "--max-batch", "16"),
        *("--max-queue", "64", "--reload-interval-s", "30", "--drain-timeout-s", "50"),
    ]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]


def test_an_unpinned_server_reads_a_valid_contract_and_follows_latest(
    lab_config: dict[str, Any],
) -> None:
    _, m = _built(lab_config)
    env = contract.read_environment(_plain_env(m["deployment"]))
    assert env.model_url == "s3://lab-ml-models/language/lm-small"
    assert env.model_version is None
    assert not env.distributed
    assert env.data_url is env.checkpoint_url is None


def test_the_model_defaults_to_the_service_name_under_the_team_prefix(
    lab_config: dict[str, Any],
) -> None:
    lab_config["teams"][1]["storage_prefix"] = "research/language"
    _, m = _built(lab_config, model=None, name="lm-base")
    assert _env(m["deployment"])[contract.MODEL_URL] == (
        "s3://lab-ml-models/research/language/lm-base"
    )
    _, nested = _built(lab_config, model="experiments/lm-7")
    assert _env(nested["deployment"])[contract.MODEL_URL] == (
        "s3://lab-ml-models/research/language/experiments/lm-7"
    )


def test_a_pinned_version_reaches_the_stable_pods(lab_config: dict[str, Any]) -> None:
    _, m = _built(lab_config, version="step-00001000")
    assert _env(m["deployment"])[contract.MODEL_VERSION] == "step-00001000"


def test_an_s3_compatible_store_gets_its_endpoint_and_keys_like_the_training_pods(
    lab_config: dict[str, Any],
) -> None:
    env = _env(_built(lab_config)[1]["deployment"])
    assert env[S3_ENDPOINT_ENV] == "https://minio.lab.internal:9000"
    assert env["AWS_REGION"] == "us-east-1"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key] == {"secretKeyRef": {"name": OBJECT_STORE_SECRET, "key": key}}


def test_a_cloud_store_needs_no_keys_the_service_account_reads_the_models(
    lab_config: dict[str, Any],
) -> None:
    _, m = _built(lab_config, placement=GCS, cloud="gcp")
    env = _env(m["deployment"])
    assert env == {contract.MODEL_URL: "gs://m/language/lm-small"}
    assert _pod(m["deployment"])["serviceAccountName"] == SERVICE_ACCOUNT_NAME


def test_the_image_is_the_serve_repository_of_the_stack_registry(
    lab_config: dict[str, Any],
) -> None:
    _, m = _built(lab_config, image="1.4.2")
    assert _container(m["deployment"])["image"] == "harbor.lab.internal/ml/serve:1.4.2"
    digest = "sha256:" + "ab" * 32
    _, pinned = _built(lab_config, image=digest)
    assert _container(pinned["deployment"])["image"] == f"harbor.lab.internal/ml/serve@{digest}"
    _, default = _built(lab_config)
    assert _container(default["deployment"])["image"].endswith(f"/serve:{RELEASE}")


def test_the_server_takes_the_flags_and_environment_the_pods_get(
    lab_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlstack.workloads.serve import main as server_main

    _, m = _built(
        lab_config,
        version="step-1",
        replicas=2,
        canary={"version": "step-2"},
        max_batch=8,
        termination_grace_period_s=15,
    )
    for role, version in (("deployment", "step-1"), ("canary", "step-2")):
        for name, value in _plain_env(m[role]).items():
            monkeypatch.setenv(name, value)
        options = server_main.build_options(server_main.parse_args(_container(m[role])["args"]))
        assert (options.host, options.port, options.max_batch) == ("0.0.0.0", HTTP_PORT, 8)
        assert options.model_url == "s3://lab-ml-models/language/lm-small"
        assert options.model_version == version
        assert 0 < options.drain_timeout_s <= 15 - PRESTOP_SLEEP_S


# --- probes and draining ----------------------------------------------------------------------


def test_probes_check_liveness_and_readiness_on_the_servers_endpoints(
    lab_config: dict[str, Any],
) -> None:
    container = _container(_built(lab_config)[1]["deployment"])
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # Warm-up ends when the server is ready: the startup probe waits for /readyz.
    assert container["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


@pytest.mark.parametrize("timeout", [30, 600, 605, 7200])
def test_the_startup_probe_allows_the_whole_warm_up(
    lab_config: dict[str, Any], timeout: int
) -> None:
    startup = _container(_built(lab_config, startup_timeout_s=timeout)[1]["deployment"])[
        "startupProbe"
    ]
    budget = startup["failureThreshold"] * startup["periodSeconds"]
    assert timeout <= budget < timeout + startup["periodSeconds"]


def test_a_stopping_pod_leaves_the_endpoints_before_sigterm_and_drains_in_its_grace(
    lab_config: dict[str, Any],
) -> None:
    _, m = _built(lab_config, termination_grace_period_s=120)
    container = _container(m["deployment"])
    assert container["lifecycle"] == {
        "preStop": {"exec": {"command": ["sleep", str(PRESTOP_SLEEP_S)]}}
    }
    assert _pod(m["deployment"])["terminationGracePeriodSeconds"] == 120
    # The server's drain ends before the grace period does (after the pause), so it exits
    # on its own rather than by SIGKILL.
    args = container["args"]
    drain = int(args[args.index("--drain-timeout-s") + 1])
    assert 0 < PRESTOP_SLEEP_S + drain < 120
    shortest = _container(_built(lab_config, termination_grace_period_s=15)[1]["deployment"])
    assert int(shortest["args"][shortest["args"].index("--drain-timeout-s") + 1]) > 0


def test_prometheus_scrapes_the_metrics_endpoint(lab_config: dict[str, Any]) -> None:
    template = _built(lab_config)[1]["deployment"]["spec"]["template"]
    assert template["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }


def _pod_monitoring_problems(manifest: dict[str, Any]) -> list[str]:
    """What the API server would say about a PodMonitoring, per the vendored excerpt of its
    v1 CRD schema (tests/data/crds/podmonitoring/SOURCE.md), closed to unknown fields."""
    schema = json.loads(POD_MONITORING_SCHEMA.read_text())
    close_schema(schema)
    validator = Draft4Validator(schema, format_checker=FormatChecker())
    problems = [
        f"{error_path(e.absolute_path)}: {e.message}"
        for e in validator.iter_errors({**manifest, "metadata": {}})
    ]
    return problems + metadata_problems(manifest["metadata"], namespaced=True)


def test_on_gke_a_pod_monitoring_has_managed_prometheus_scrape_every_pod(
    lab_config: dict[str, Any],
) -> None:
    """Issue 16, item 13: GKE's managed Prometheus scrapes only what a PodMonitoring selects;
    the prometheus.io annotations alone left the serving metrics unscraped."""
    _, m = _built(
        lab_config,
        placement=GCS,
        cloud="gcp",
        canary={"version": "step-2"},
        version="step-1",
        replicas=2,
        max_replicas=3,
    )
    monitoring = m["pod-monitoring"]
    assert (monitoring["apiVersion"], monitoring["kind"]) == (
        "monitoring.googleapis.com/v1",
        "PodMonitoring",
    )
    assert _pod_monitoring_problems(monitoring) == []
    assert monitoring["metadata"]["namespace"] == "language"
    selector = monitoring["spec"]["selector"]["matchLabels"]
    for track in ("deployment", "canary"):
        template = m[track]["spec"]["template"]
        assert _selects(selector, template["metadata"]["labels"])
        (endpoint,) = monitoring["spec"]["endpoints"]
        (port,) = _container(m[track])["ports"]
        assert endpoint["port"] == port["name"]
        assert endpoint["path"] == template["metadata"]["annotations"]["prometheus.io/path"]


@pytest.mark.parametrize("cloud", ["aws", "onprem"])
def test_clouds_without_managed_collection_declare_no_pod_monitoring(
    lab_config: dict[str, Any], cloud: Cloud
) -> None:
    _, m = _built(lab_config, cloud=cloud)
    assert "pod-monitoring" not in m


def test_the_pod_monitoring_excerpt_refuses_what_the_crd_refuses() -> None:
    bad = {
        "apiVersion": "monitoring.googleapis.com/v1",
        "kind": "PodMonitoring",
        "metadata": {"name": "x", "namespace": "t"},
        "spec": {"selector": {}, "endpoints": [{"port": "http"}]},
    }
    assert _pod_monitoring_problems(bad) == ["spec.endpoints[0]: 'interval' is a required property"]


# --- placement, resources, security -----------------------------------------------------------


def test_gpu_replicas_request_one_gpu_by_default_on_their_pool(lab_config: dict[str, Any]) -> None:
    settings, m = _built(lab_config, cpu=6, memory_gib=24)
    assert settings.gpus_per_replica == 1
    resources = _container(m["deployment"])["resources"]
    assert (
        resources["requests"]
        == resources["limits"]
        == {
            "cpu": "6",
            "memory": "24Gi",
            GPU_RESOURCE: "1",
        }
    ), "Guaranteed QoS"
    pod = _pod(m["deployment"])
    assert pod["nodeSelector"] == {POOL_LABEL: "a100"}
    assert pod["tolerations"] == [
        {"key": GPU_TAINT_KEY, "operator": "Equal", "value": "present", "effect": "NoSchedule"}
    ]
    mounts = {v["name"]: v["mountPath"] for v in _container(m["deployment"])["volumeMounts"]}
    assert mounts == {"scratch": SCRATCH_DIR, "dshm": "/dev/shm"}


def test_gpus_per_replica_and_fractional_cpu_memory(lab_config: dict[str, Any]) -> None:
    _, m = _built(lab_config, gpus_per_replica=2, cpu=2.5, memory_gib=7.5)
    assert _container(m["deployment"])["resources"]["limits"] == {
        "cpu": "2500m",
        "memory": "7680Mi",
        GPU_RESOURCE: "2",
    }


def test_cpu_pool_replicas_request_no_gpus_and_tolerate_nothing(
    lab_config: dict[str, Any],
) -> None:
    settings, m = _built(lab_config, pool="cpu")
    assert settings.gpus_per_replica == 0
    pod = _pod(m["deployment"])
    assert GPU_RESOURCE not in _container(m["deployment"])["resources"]["limits"]
    assert "tolerations" not in pod
    assert pod["nodeSelector"] == {POOL_LABEL: "cpu"}
    assert [v["name"] for v in pod["volumes"]] == ["scratch"]


def test_pods_meet_the_restricted_pod_security_level(lab_config: dict[str, Any]) -> None:
    deployment = _built(lab_config)[1]["deployment"]
    pod = _pod(deployment)
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert _container(deployment)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["scratch"] == {"name": "scratch", "emptyDir": {}}
    assert all("hostPath" not in v for v in pod["volumes"])


def test_replicas_run_at_serving_priority_and_spread_over_nodes(
    lab_config: dict[str, Any],
) -> None:
    pod = _pod(_built(lab_config)[1]["deployment"])
    assert pod["priorityClassName"] == PRIORITY
    assert max(PRIORITIES, key=lambda p: p.value).name == PRIORITY
    (spread,) = pod["topologySpreadConstraints"]
    assert spread == {
        "maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {SERVICE_LABEL: "chat"}},
    }


def test_deployments_are_queued_by_kueue_at_serving_priority(lab_config: dict[str, Any]) -> None:
    _, m = _built(lab_config, canary={"version": "step-2"}, version="step-1", replicas=3)
    for role in ("deployment", "canary"):
        for labels in (
            m[role]["metadata"]["labels"],
            m[role]["spec"]["template"]["metadata"]["labels"],
        ):
            assert labels[QUEUE_LABEL] == LOCAL_QUEUE_NAME
            assert labels[PRIORITY_LABEL] == PRIORITY


# --- rollouts, canary and the Service ---------------------------------------------------------


def test_a_rolling_update_never_lowers_capacity(lab_config: dict[str, Any]) -> None:
    _, m = _built(lab_config, canary={"version": "step-2"}, version="step-1", replicas=3)
    for role in ("deployment", "canary"):
        strategy = m[role]["spec"]["strategy"]
        assert strategy == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        }


def test_the_rollout_deadline_covers_provisioning_and_warm_up(lab_config: dict[str, Any]) -> None:
    _, m = _built(lab_config, startup_timeout_s=1200)
    assert m["deployment"]["spec"]["progressDeadlineSeconds"] >= 1200 + 600


def test_the_autoscaler_owns_the_stable_replica_count(lab_config: dict[str, Any]) -> None:
    _, m = _built(lab_config, replicas=2, max_replicas=6)
    assert "replicas" not in m["deployment"]["spec"], "an update would reset the autoscaler"
    spec = m["autoscaler"]["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chat"}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 6)
    assert spec["behavior"]["scaleDown"]["policies"] == [
        {"type": "Pods", "value": 1, "periodSeconds": 60}
    ]


def test_without_max_replicas_the_service_does_not_autoscale(lab_config: dict[str, Any]) -> None:
    settings, m = _built(lab_config, replicas=3)
    spec = m["autoscaler"]["spec"]
    assert spec["minReplicas"] == spec["maxReplicas"] == settings.max_replicas == 3


def test_the_autoscaler_follows_cpu_utilization(lab_config: dict[str, Any]) -> None:
    _, m = _built(lab_config, max_replicas=4, target_cpu_percent=55)
    assert m["autoscaler"]["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 55},
            },
        }
    ]


@pytest.mark.parametrize(("target", "quantity"), [(20, "20"), (2.5, "2500m")])
def test_the_autoscaler_follows_requests_per_second_per_pod(
    lab_config: dict[str, Any], target: float, quantity: str
) -> None:
    lab_config["cluster"]["custom_metrics_adapter"] = True
    _, m = _built(
        lab_config,
        max_replicas=4,
        autoscale_on="requests_per_second",
        target_requests_per_second=target,
    )
    assert m["autoscaler"]["spec"]["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": REQUESTS_METRIC},
                "target": {"type": "AverageValue", "averageValue": quantity},
            },
        }
    ]


def test_a_canary_serves_its_version_from_the_services_replicas(
    lab_config: dict[str, Any],
) -> None:
    settings, m = _built(
        lab_config,
        version="step-00001000",
        replicas=4,
        max_replicas=6,
        canary={"version": "step-00002000", "replicas": 1},
    )
    stable, canary = m["deployment"], m["canary"]
    assert canary["metadata"]["name"] == "chat-canary"
    assert canary["spec"]["replicas"] == 1
    assert _env(stable)[contract.MODEL_VERSION] == "step-00001000"
    assert _env(canary)[contract.MODEL_VERSION] == "step-00002000"
    # Same pods otherwise: only the version and the track differ.
    assert {k: v for k, v in _env(stable).items() if k != contract.MODEL_VERSION} == {
        k: v for k, v in _env(canary).items() if k != contract.MODEL_VERSION
    }
    assert _container(stable)["resources"] == _container(canary)["resources"]
    # The autoscaler scales the stable track within the service's bounds less the canary.
    spec = m["autoscaler"]["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (3, 5)
    assert settings.peak_replicas == 6 + 2


def test_the_service_splits_traffic_over_both_tracks_by_replica_count(
    lab_config: dict[str, Any],
) -> None:
    _, m = _built(
        lab_config, version="step-1", replicas=4, canary={"version": "step-2", "replicas": 1}
    )
    selector = m["service"]["spec"]["selector"]
    tracks = {}
    for role in ("deployment", "canary"):
        spec = m[role]["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert _selects(spec["selector"]["matchLabels"], labels)
        assert _selects(selector, labels), f"the Service must reach the {role} pods"
        tracks[role] = labels[TRACK_LABEL]
    assert tracks == {"deployment": "stable", "canary": "canary"}
    # Neither Deployment adopts the other's pods.
    stable_pods = m["deployment"]["spec"]["template"]["metadata"]["labels"]
    assert not _selects(m["canary"]["spec"]["selector"]["matchLabels"], stable_pods)
    assert m["service"]["spec"]["ports"] == [
        {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}
    ]


def test_without_a_canary_there_is_one_deployment(lab_config: dict[str, Any]) -> None:
    _, m = _built(lab_config)
    assert set(m) == {"deployment", "service", "autoscaler", "disruption-budget"}
    assert m["deployment"]["metadata"]["labels"][TRACK_LABEL] == "stable"
    assert contract.MODEL_VERSION not in _env(m["deployment"])


def test_the_disruption_budget_takes_one_pod_of_either_track_at_a_time(
    lab_config: dict[str, Any],
) -> None:
    _, m = _built(lab_config, version="step-1", replicas=3, canary={"version": "step-2"})
    spec = m["disruption-budget"]["spec"]
    assert spec["maxUnavailable"] == 1
    assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    for role in ("deployment", "canary"):
        labels = m[role]["spec"]["template"]["metadata"]["labels"]
        assert _selects(spec["selector"]["matchLabels"], labels)


def test_every_object_is_in_the_team_namespace_with_the_services_labels(
    lab_config: dict[str, Any],
) -> None:
    _, m = _built(
        lab_config,
        version="step-1",
        replicas=2,
        canary={"version": "step-2"},
        allow_from_namespaces=["apps"],
    )
    assert set(m) == {
        "deployment",
        "canary",
        "service",
        "autoscaler",
        "disruption-budget",
        "clients",
    }
    for manifest in m.values():
        metadata = manifest["metadata"]
        assert metadata["namespace"] == "language"
        assert metadata["labels"] | {**MANAGED_BY, TEAM_LABEL: "language"} == metadata["labels"]
        assert metadata["labels"][SERVICE_LABEL] == "chat"


# --- load balancers and network policy --------------------------------------------------------


def test_by_default_the_service_is_cluster_internal(lab_config: dict[str, Any]) -> None:
    _, m = _built(lab_config)
    assert m["service"]["spec"]["type"] == "ClusterIP"
    assert "annotations" not in m["service"]["metadata"]
    # The namespace's own pods and monitoring reach it through the tenancy policies.
    assert "clients" not in m


@pytest.mark.parametrize(
    ("cloud", "annotations"),
    [
        (
            "aws",
            {
                "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal",
                "service.beta.kubernetes.io/aws-load-balancer-internal": "true",
            },
        ),
        ("gcp", {"networking.gke.io/load-balancer-type": "Internal"}),
        (
            "onprem",
            {
                "metallb.io/address-pool": "internal",
                "metallb.universe.tf/address-pool": "internal",
            },
        ),
    ],
)
def test_an_internal_load_balancer_carries_its_clouds_annotations(
    lab_config: dict[str, Any], cloud: Cloud, annotations: dict[str, str]
) -> None:
    lab_config["teams"][1]["allow_load_balancers"] = True
    _, m = _built(lab_config, cloud=cloud, internal_load_balancer=True)
    service = m["service"]
    assert service["spec"]["type"] == "LoadBalancer"
    internal_lb = get_backend(cloud).internal_lb_annotations
    assert service["metadata"]["annotations"] == annotations == internal_lb
    # The policy pack's load-balancers-internal-only rule accepts them on that cloud.
    assert any(RULE_INTERNAL_ANNOTATIONS[cloud].get(k) == v for k, v in annotations.items())


def test_a_load_balancer_opens_the_server_port_to_any_source(lab_config: dict[str, Any]) -> None:
    lab_config["teams"][1]["allow_load_balancers"] = True
    _, m = _built(lab_config, internal_load_balancer=True, allow_from_namespaces=["apps"])
    policy = m["clients"]
    assert policy["metadata"]["name"] == "chat-clients"
    assert policy["spec"] == {
        "podSelector": {"matchLabels": {SERVICE_LABEL: "chat"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"ports": [{"protocol": "TCP", "port": HTTP_PORT}]}],
    }


def test_listed_namespaces_reach_the_server_port_only(lab_config: dict[str, Any]) -> None:
    _, m = _built(lab_config, allow_from_namespaces=["apps", "vision"])
    (rule,) = m["clients"]["spec"]["ingress"]
    assert rule == {
        "from": [
            {
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "In",
                            "values": ["apps", "vision"],
                        }
                    ]
                }
            }
        ],
        "ports": [{"protocol": "TCP", "port": HTTP_PORT}],
    }


def test_urls_name_the_service_in_its_namespace(lab_config: dict[str, Any]) -> None:
    platform = _platform(lab_config)
    service = platform.workloads.inference_services[0]
    assert service_url(service) == "http://chat.language.svc.cluster.local"
    team = next(t for t in platform.teams if t.name == "language")
    assert model_url(GCS, team, service) == "gs://m/language/lm-small"


# --- strict validity --------------------------------------------------------------------------

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_IANA_SVC_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def _api_server_problems(manifest: dict[str, Any]) -> list[str]:
    """What the API server checks beyond the OpenAPI schema, for the fields mlstack sets."""
    problems = metadata_problems(manifest["metadata"], namespaced=True)
    kind, spec = manifest["kind"], manifest["spec"]
    if kind == "Service":
        name = manifest["metadata"]["name"]
        if len(name) > 63 or not _DNS1035.fullmatch(name):
            problems.append(f"metadata.name: {name!r} is not a DNS-1035 label")
        for port in spec["ports"]:
            for value in (port["name"], port["targetPort"]):
                if isinstance(value, str) and (
                    len(value) > 15 or not _IANA_SVC_NAME.fullmatch(value)
                ):
                    problems.append(f"ports: {value!r} is not an IANA service name")
    if kind == "Deployment":
        template = spec["template"]
        problems += [
            f"template.{p}"
            for p in metadata_problems({"name": "pod", **template["metadata"]}, namespaced=False)
        ]
        if not _selects(spec["selector"]["matchLabels"], template["metadata"]["labels"]):
            problems.append("selector: does not match the template's labels")
        rolling = spec["strategy"]["rollingUpdate"]
        if rolling["maxUnavailable"] == 0 and rolling["maxSurge"] == 0:
            problems.append("strategy: maxUnavailable and maxSurge may not both be 0")
        for container in template["spec"]["containers"]:
            ports = {p["name"] for p in container["ports"]}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if container[probe]["httpGet"]["port"] not in ports:
                    problems.append(f"{probe}: names no container port")
            for probe in ("startupProbe", "livenessProbe"):
                if container[probe].get("successThreshold", 1) != 1:
                    problems.append(f"{probe}.successThreshold: must be 1")
    if kind == "HorizontalPodAutoscaler" and not 1 <= spec["minReplicas"] <= spec["maxReplicas"]:
        problems.append("minReplicas: must be between 1 and maxReplicas")
    return problems


def _validate(manifests: Manifests, version: str) -> None:
    for role, manifest in manifests.items():
        if manifest["kind"] == "PodMonitoring":  # a CRD kind, GKE's: its own vendored schema
            assert _pod_monitoring_problems(manifest) == [], role
            continue
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{role}: {error_path(exc.path)}: {exc.message}") from None
        assert _api_server_problems(manifest) == [], role


VARIANTS: dict[str, tuple[Placement, Cloud, dict[str, Any], dict[str, Any]]] = {
    "default gpu service": (LAB_S3, "onprem", {}, {}),
    "canary on a cpu pool, clients listed": (
        LAB_S3,
        "onprem",
        {
            "pool": "cpu",
            "version": "step-00001000",
            "replicas": 3,
            "max_replicas": 8,
            "cpu": 0.5,
            "memory_gib": 1.5,
            "canary": {"version": "step-00002000", "replicas": 2},
            "allow_from_namespaces": ["apps", "web"],
        },
        {},
    ),
    "requests per second, internal load balancer on gcp": (
        GCS,
        "gcp",
        {
            "gpus_per_replica": 4,
            "autoscale_on": "requests_per_second",
            "target_requests_per_second": 12.5,
            "internal_load_balancer": True,
        },
        {"allow_load_balancers": True},
    ),
    "digest image, internal load balancer on aws": (
        GCS,
        "aws",
        {
            "image": "sha256:" + "0f" * 32,
            "internal_load_balancer": True,
            "startup_timeout_s": 3600,
            "termination_grace_period_s": 15,
        },
        {"allow_load_balancers": True},
    ),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_is_strictly_valid(lab_config: dict[str, Any], variant: str) -> None:
    placement, cloud, service, team = VARIANTS[variant]
    lab_config["cluster"]["custom_metrics_adapter"] = True  # for the requests-per-second variant
    lab_config["teams"][1].update(team)
    _, manifests = _built(lab_config, placement=placement, cloud=cloud, **service)
    _validate(manifests, "1.33.0")


@pytest.mark.parametrize("version", SUPPORTED_KUBERNETES)
def test_every_object_is_valid_at_every_supported_version(
    lab_config: dict[str, Any], version: str
) -> None:
    lab_config["cluster"]["kubernetes_version"] = version
    lab_config["teams"][1]["allow_load_balancers"] = True
    _, manifests = _built(
        lab_config,
        version="step-1",
        replicas=2,
        max_replicas=4,
        canary={"version": "step-2"},
        internal_load_balancer=True,
    )
    _validate(manifests, f"{version}.0")


def test_the_longest_name_fits_every_object_name() -> None:
    """A 40-character service name (the schema's most) with a canary: the Deployment, the
    NetworkPolicy and the pods' generated names stay within their limits."""
    pool = NodePool(name="cpu", kind=PoolKind.CPU, max_nodes=10)
    service = InferenceService(
        name="a" * 40,
        team="t",
        pool="cpu",
        version="v1",
        replicas=2,
        canary=Canary(version="v2"),
        allow_from_namespaces=("apps",),
    )
    manifests = service_manifests(
        service_settings(service, pool), Team(name="t"), GCS, GCP_INTERNAL_LB
    )
    _validate(manifests, "1.33.0")
    assert len(manifests["canary"]["metadata"]["name"]) <= 63


def test_the_validator_refuses_what_the_api_server_refuses(lab_config: dict[str, Any]) -> None:
    _, manifests = _built(lab_config)
    broken = copy.deepcopy(manifests)
    broken["deployment"]["spec"]["selector"]["matchLabels"][TRACK_LABEL] = "canary"
    with pytest.raises(AssertionError, match="selector"):
        _validate(broken, "1.33.0")
    broken = copy.deepcopy(manifests)
    _container(broken["deployment"])["startupProbe"]["httpGets"] = {}
    with pytest.raises(AssertionError, match="httpGets"):
        _validate(broken, "1.33.0")
    broken = copy.deepcopy(manifests)
    broken["service"]["spec"]["ports"][0]["name"] = "http-with-a-long-name"
    with pytest.raises(AssertionError, match="IANA"):
        _validate(broken, "1.33.0")


def test_startup_threshold_rounds_up() -> None:
    service = InferenceService(name="s", team="t", pool="p", startup_timeout_s=31)
    pool = NodePool(name="p", kind=PoolKind.CPU, max_nodes=1)
    manifests = service_manifests(
        service_settings(service, pool), Team(name="t"), GCS, GCP_INTERNAL_LB
    )
    startup = _container(manifests["deployment"])["startupProbe"]
    assert startup["failureThreshold"] == math.ceil(31 / startup["periodSeconds"]) == 4


def test_tracks_that_follow_aliases_get_the_alias_not_a_version(
    lab_config: dict[str, Any],
) -> None:
    _, m = _built(lab_config, alias="champion", replicas=3, canary={"alias": "canary"})
    stable, canary = _env(m["deployment"]), _env(m["canary"])
    assert stable[contract.MODEL_ALIAS] == "champion"
    assert canary[contract.MODEL_ALIAS] == "canary"
    assert contract.MODEL_VERSION not in stable and contract.MODEL_VERSION not in canary
    assert {k: v for k, v in stable.items() if k != contract.MODEL_ALIAS} == {
        k: v for k, v in canary.items() if k != contract.MODEL_ALIAS
    }
