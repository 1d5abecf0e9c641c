"""mlstack-system: its namespace, the platform ConfigMap and the credentials Secrets."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import kubernetes_validate
import pytest

from mlstack.components.backend import ImageRegistry, ObjectStore, StaticCredentials
from mlstack.components.kubernetes.system import (
    PlatformSystem,
    PlatformSystemArgs,
    configmap_manifest,
    dockerconfigjson,
    namespace_manifest,
    platform_env,
    secret_manifest,
)
from mlstack.stacks.names import PLATFORM_CONFIGMAP
from mlstack.stacks.names import SYSTEM_NAMESPACE as NAMESPACE
from mlstack.stacks.plan import PlannedResource

K8S = "1.33.0"
RunMocked = Callable[[Callable[[], object]], list[PlannedResource]]

S3 = ObjectStore(
    scheme="s3",
    buckets={"datasets": "d", "checkpoints": "c", "models": "m"},
    endpoint="https://minio.lab.internal:9000",
    region="eu-west-1",
    credentials=StaticCredentials("id", "key"),
)
GCS = ObjectStore(scheme="gs", buckets={"datasets": "g-d", "checkpoints": "g-c", "models": "g-m"})


def test_namespace_enforces_the_restricted_pod_security_level() -> None:
    manifest = namespace_manifest()
    kubernetes_validate.validate(manifest, K8S, strict=True)
    assert manifest["metadata"]["name"] == NAMESPACE == "mlstack-system"
    labels = manifest["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    assert labels["app.kubernetes.io/managed-by"] == "mlstack"


def test_env_of_a_static_key_store_names_its_endpoint_and_region() -> None:
    env = platform_env(S3, ImageRegistry(url="harbor.lab.internal/ml"), "lab")
    assert set(env) == {
        "MLSTACK_CLUSTER",
        "MLSTACK_DATASETS_URL",
        "MLSTACK_CHECKPOINTS_URL",
        "MLSTACK_MODELS_URL",
        "MLSTACK_REGISTRY",
        "AWS_ENDPOINT_URL_S3",
        "AWS_REGION",
    }
    assert env["MLSTACK_CLUSTER"] == "lab"
    assert env["MLSTACK_REGISTRY"] == "harbor.lab.internal/ml"
    assert env["AWS_ENDPOINT_URL_S3"] == "https://minio.lab.internal:9000"
    assert env["AWS_REGION"] == "eu-west-1"


def test_env_of_a_cloud_store_has_no_s3_endpoint_or_region() -> None:
    env = platform_env(GCS, ImageRegistry(url="europe-docker.pkg.dev/p/ml"), "prod")
    assert "AWS_ENDPOINT_URL_S3" not in env and "AWS_REGION" not in env


def test_platform_configmap_is_valid_and_carries_the_env() -> None:
    env = {"MLSTACK_CLUSTER": "lab", "MLSTACK_DATASETS_URL": "s3://lab-ml-datasets"}
    manifest = configmap_manifest(env)
    kubernetes_validate.validate(manifest, K8S, strict=True)
    assert manifest["metadata"]["name"] == PLATFORM_CONFIGMAP
    assert manifest["metadata"]["namespace"] == NAMESPACE
    assert manifest["data"] == env


def test_opaque_secret_is_valid_and_uses_string_data() -> None:
    manifest = secret_manifest("object-store-credentials", "Opaque", {"AWS_ACCESS_KEY_ID": "x"})
    kubernetes_validate.validate(manifest, K8S, strict=True)
    assert manifest["metadata"]["namespace"] == NAMESPACE
    assert manifest["type"] == "Opaque"
    assert manifest["stringData"] == {"AWS_ACCESS_KEY_ID": "x"}


@pytest.mark.parametrize(
    ("username", "password"), [("robot", "hunter2"), ("robot$ci", "pa:ss wörd")]
)
def test_dockerconfigjson_round_trips(username: str, password: str) -> None:
    document = dockerconfigjson("harbor.lab.internal:5000", username, password)
    entry = json.loads(document)["auths"]["harbor.lab.internal:5000"]
    assert (entry["username"], entry["password"]) == (username, password)
    assert base64.b64decode(entry["auth"]).decode() == f"{username}:{password}"
    manifest = secret_manifest(
        "registry-pull", "kubernetes.io/dockerconfigjson", {".dockerconfigjson": document}
    )
    kubernetes_validate.validate(manifest, K8S, strict=True)


def test_a_cloud_identity_store_gets_no_credentials_secret(run_mocked: RunMocked) -> None:
    resources = run_mocked(
        lambda: PlatformSystem(
            "system",
            PlatformSystemArgs(
                store=GCS, registry=ImageRegistry(url="europe-docker.pkg.dev/p/ml"), cluster="c"
            ),
        )
    )
    assert sorted(r.type for r in resources if r.custom) == [
        "kubernetes:core/v1:ConfigMap",
        "kubernetes:core/v1:Namespace",
    ]
    (cm,) = [r for r in resources if r.type == "kubernetes:core/v1:ConfigMap"]
    assert cm.inputs["data"]["MLSTACK_DATASETS_URL"] == "gs://g-d"
    kubernetes_validate.validate(dict(cm.inputs), K8S, strict=True)


def test_registry_pull_secret_uses_the_registry_host(run_mocked: RunMocked) -> None:
    registry = ImageRegistry(url="harbor.lab.internal:5000/ml", pull_credentials=("u", "p"))
    resources = run_mocked(
        lambda: PlatformSystem(
            "system", PlatformSystemArgs(store=S3, registry=registry, cluster="lab")
        )
    )
    (pull,) = [r for r in resources if r.name == "system-registry-pull"]
    document = pull.inputs["stringData"]["value"][".dockerconfigjson"]
    assert list(json.loads(document)["auths"]) == ["harbor.lab.internal:5000"]
