"""The offline plan: the real program under the mock runtime, every resource as declared."""

from __future__ import annotations

import base64
import copy
import json
import runpy
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest

from mlstack.components.kubernetes.addons import NVIDIA_DEVICE_PLUGIN
from mlstack.components.onprem.backend import OnPremBackend
from mlstack.components.onprem.pools import parse_taints
from mlstack.stacks import offline, program
from mlstack.stacks.errors import ConfigError
from mlstack.stacks.names import (
    ACCELERATOR_LABEL,
    GPU_TAINT_KEY,
    POOL_KIND_LABEL,
    POOL_LABEL,
    POOL_TAINTS_ANNOTATION,
)
from mlstack.stacks.offline import SECRET_PLACEHOLDER, pulumi_config, run_plan, run_program
from mlstack.stacks.plan import Plan, PlannedResource, is_secret
from mlstack.stacks.stackfile import StackFile, read_stack
from mlstack.stacks.validate import load_platform

REPO = Path(__file__).resolve().parents[2]
MakeStack = Callable[..., StackFile]
RunMocked = Callable[[Callable[[], object]], list[PlannedResource]]
NODE_PATCH = "kubernetes:core/v1:NodePatch"
PROVIDER = "pulumi:providers:kubernetes"
SECRET = "kubernetes:core/v1:Secret"
LAB_NODES = {
    "cpu": ["cpu-01", "cpu-02", "cpu-03", "cpu-04"],
    "a100": ["dgx-01", "dgx-02"],
    "l40s": ["l40s-01", "l40s-02", "l40s-03"],
}
GPU_TAINT = {"key": GPU_TAINT_KEY, "value": "present", "effect": "NoSchedule"}


def _provider_urn(reference: str | None) -> str | None:
    """A provider reference is '<urn>::<id>'."""
    return reference.rsplit("::", 1)[0] if reference else None


def _taints(patch: PlannedResource) -> list[dict[str, Any]]:
    """The taints a node patch declares for the operator to set; it never applies them."""
    assert "spec" not in patch.inputs, patch.name
    declared = patch.inputs["metadata"].get("annotations", {}).get(POOL_TAINTS_ANNOTATION, "")
    return list(parse_taints(declared))


def _identity(plan: Plan) -> set[tuple[str, str, str, str | None]]:
    return {(r.type, r.name, r.urn, r.parent) for r in plan.resources}


# --- the lab stack's resources ----------------------------------------------------------------


def test_one_node_patch_per_listed_node(lab_plan: Plan) -> None:
    assert len(lab_plan.of_type(NODE_PATCH)) == sum(len(n) for n in LAB_NODES.values())
    for pool, nodes in LAB_NODES.items():
        component = lab_plan.get("mlstack:onprem:NodePool", f"onprem-pool-{pool}")
        for node in nodes:
            patch = lab_plan.get(NODE_PATCH, f"onprem-pool-{pool}_{node}")
            assert patch.parent == component.urn
            assert patch.inputs["metadata"]["name"] == node
            assert patch.inputs["metadata"]["labels"][POOL_LABEL] == pool


def test_gpu_nodes_carry_accelerator_label_and_gpu_taint(lab_plan: Plan) -> None:
    for pool, accelerator in (("a100", "a100-80gb"), ("l40s", "l40s")):
        for node in LAB_NODES[pool]:
            patch = lab_plan.get(NODE_PATCH, f"onprem-pool-{pool}_{node}")
            labels = patch.inputs["metadata"]["labels"]
            assert labels[ACCELERATOR_LABEL] == accelerator
            assert labels[POOL_KIND_LABEL] == "gpu"
            assert _taints(patch) == [GPU_TAINT]


def test_cpu_nodes_carry_no_accelerator_label_and_no_taint(lab_plan: Plan) -> None:
    for node in LAB_NODES["cpu"]:
        patch = lab_plan.get(NODE_PATCH, f"onprem-pool-cpu_{node}")
        labels = patch.inputs["metadata"]["labels"]
        assert ACCELERATOR_LABEL not in labels
        assert labels[POOL_KIND_LABEL] == "cpu"
        assert _taints(patch) == []


def test_configured_node_labels_reach_the_nodes(lab_plan: Plan) -> None:
    patch = lab_plan.get(NODE_PATCH, "onprem-pool-l40s_l40s-02")
    assert patch.inputs["metadata"]["labels"]["lab.internal/rack"] == "r7"


def test_provider_uses_the_kubeconfig_path_as_written_and_context(lab_plan: Plan) -> None:
    # Unexpanded: the provider expands `~/` on the machine that runs it (issue 16, item 13).
    provider = lab_plan.get(PROVIDER, "onprem-cluster-provider")
    assert provider.inputs["kubeconfig"] == "~/.kube/lab.yaml"
    assert provider.inputs["context"] == "lab-admin"
    assert str(provider.inputs["enableServerSideApply"]).lower() == "true"
    assert provider.parent == lab_plan.get("mlstack:onprem:ExistingCluster", "onprem-cluster").urn


def test_every_kubernetes_resource_goes_through_the_cluster_provider(lab_plan: Plan) -> None:
    provider = lab_plan.get(PROVIDER, "onprem-cluster-provider")
    k8s = [r for r in lab_plan.resources if r.custom and r.type.startswith("kubernetes:")]
    assert {r.type for r in k8s} >= {
        NODE_PATCH,
        SECRET,
        "kubernetes:core/v1:Namespace",
        "kubernetes:core/v1:ConfigMap",
        "kubernetes:helm.sh/v3:Release",
    }
    for r in k8s:
        assert _provider_urn(r.provider) == provider.urn, r.name
    assert len(lab_plan.of_type(PROVIDER)) == 1


def test_device_plugin_release_is_pinned_and_runs_on_gpu_nodes(lab_plan: Plan) -> None:
    release = lab_plan.get("kubernetes:helm.sh/v3:Release", "nvidia-device-plugin-release")
    inputs = release.inputs
    assert inputs["chart"] == NVIDIA_DEVICE_PLUGIN.chart == "nvidia-device-plugin"
    assert inputs["version"] == NVIDIA_DEVICE_PLUGIN.version
    assert all(part.isdigit() for part in inputs["version"].split("."))
    assert inputs["repositoryOpts"]["repo"] == NVIDIA_DEVICE_PLUGIN.repo
    assert inputs["namespace"] == "kube-system"
    # A required affinity on the pool kind replaces the chart's default (NFD labels) one.
    assert "nodeSelector" not in inputs["values"]
    required = inputs["values"]["affinity"]["nodeAffinity"]
    assert required["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] == [
        {"matchExpressions": [{"key": POOL_KIND_LABEL, "operator": "In", "values": ["gpu"]}]}
    ]
    assert inputs["values"]["tolerations"] == [{"key": GPU_TAINT_KEY, "operator": "Exists"}]
    assert (
        release.parent
        == lab_plan.get("mlstack:kubernetes:NvidiaDevicePlugin", "nvidia-device-plugin").urn
    )


def test_system_namespace_is_restricted(lab_plan: Plan) -> None:
    ns = lab_plan.get("kubernetes:core/v1:Namespace", "system-namespace")
    assert ns.inputs["metadata"]["name"] == "mlstack-system"
    assert ns.inputs["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_platform_configmap_tells_workloads_where_things_are(lab_plan: Plan) -> None:
    cm = lab_plan.get("kubernetes:core/v1:ConfigMap", "system-platform-config")
    assert cm.inputs["metadata"]["name"] == "mlstack-platform"
    assert cm.inputs["metadata"]["namespace"] == "mlstack-system"
    assert cm.inputs["data"] == {
        "MLSTACK_CLUSTER": "lab",
        "MLSTACK_DATASETS_URL": "s3://lab-ml-datasets",
        "MLSTACK_CHECKPOINTS_URL": "s3://lab-ml-checkpoints",
        "MLSTACK_MODELS_URL": "s3://lab-ml-models",
        "MLSTACK_REGISTRY": "harbor.lab.internal/ml",
        "AWS_ENDPOINT_URL_S3": "https://minio.lab.internal:9000",
        "AWS_REGION": "us-east-1",
    }


def test_object_store_credentials_are_a_secret(lab_plan: Plan) -> None:
    secret = lab_plan.get(SECRET, "system-object-store-credentials")
    assert secret.inputs["metadata"]["name"] == "object-store-credentials"
    assert secret.inputs["type"] == "Opaque"
    data = secret.inputs["stringData"]
    assert is_secret(data)
    assert set(data["value"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def test_no_registry_pull_secret_without_registry_credentials(lab_plan: Plan) -> None:
    # The object-store credentials, in the platform namespace and copied into each team's.
    assert sorted(r.name for r in lab_plan.of_type(SECRET)) == [
        "system-object-store-credentials",
        "team-language-object-store-credentials",
        "team-research-infra-object-store-credentials",
        "team-vision-object-store-credentials",
    ]


def test_notes_say_how_to_set_the_missing_s3_secrets(lab_plan: Plan) -> None:
    for key in ("mlstack:s3AccessKeyId", "mlstack:s3SecretAccessKey"):
        (note,) = [n for n in lab_plan.notes if key in n]
        assert f"pulumi config set --secret {key}" in note
        assert "-s onprem-lab" in note


def test_outputs(lab_plan: Plan) -> None:
    outputs = lab_plan.outputs
    assert outputs["cloud"] == "onprem"
    assert outputs["cluster_name"] == "lab"
    assert outputs["kubernetes_version"] == "1.35"
    assert outputs["bucket_urls"] == {
        "datasets": "s3://lab-ml-datasets",
        "checkpoints": "s3://lab-ml-checkpoints",
        "models": "s3://lab-ml-models",
    }
    assert outputs["registry_url"] == "harbor.lab.internal/ml"
    assert outputs["storage_endpoint"] == "https://minio.lab.internal:9000"
    cm = lab_plan.get("kubernetes:core/v1:ConfigMap", "system-platform-config")
    assert outputs["platform_env"] == cm.inputs["data"]


def test_tree_puts_every_resource_under_its_parent(lab_plan: Plan) -> None:
    groups = lab_plan.by_parent()
    seen: dict[str, int] = {}

    def walk(parent: str | None, depth: int) -> None:
        for r in groups.get(parent, []):
            assert depth == (seen[r.parent] + 1 if r.parent in seen else 0)
            seen[r.urn] = depth
            walk(r.urn, depth + 1)

    walk(None, 0)
    assert len(seen) == len(lab_plan.resources)
    assert seen[lab_plan.get(PROVIDER, "onprem-cluster-provider").urn] == 1


# --- secrets and config -----------------------------------------------------------------------


def test_registry_credentials_give_a_dockerconfigjson_pull_secret(
    lab_config: dict[str, Any], make_stack: MakeStack
) -> None:
    plan = run_plan(
        make_stack(lab_config, name="reg"),
        secrets={"registryUsername": "robot", "registryPassword": "s3cr:t"},
    )
    pull = plan.get(SECRET, "system-registry-pull")
    assert pull.inputs["metadata"]["name"] == "registry-pull"
    assert pull.inputs["metadata"]["namespace"] == "mlstack-system"
    assert pull.inputs["type"] == "kubernetes.io/dockerconfigjson"
    data = pull.inputs["stringData"]
    assert is_secret(data)
    auths = json.loads(data["value"][".dockerconfigjson"])["auths"]
    assert list(auths) == ["harbor.lab.internal"]
    entry = auths["harbor.lab.internal"]
    assert (entry["username"], entry["password"]) == ("robot", "s3cr:t")
    assert base64.b64decode(entry["auth"]).decode() == "robot:s3cr:t"
    assert "s3cr:t" not in json.dumps(plan.to_json())


@pytest.mark.parametrize(
    "key", ["registryPassword", "registryUsername", "s3SecretAccessKey", "s3AccessKeyId"]
)
def test_a_secret_written_in_clear_text_is_refused_without_its_value(
    lab_config: dict[str, Any], make_stack: MakeStack, key: str
) -> None:
    # It used to be accepted, and even cleared the "not set" note (issue 17, secrets).
    stack = make_stack(lab_config, name="plain", **{key: "hunter2-value"})
    with pytest.raises(ConfigError) as exc:
        run_plan(stack)
    (problem,) = exc.value.problems
    assert (problem.path, problem.message) == (
        f"mlstack:{key}",
        "is a secret but is written in clear text",
    )
    assert str(exc.value).startswith(f"{stack.path}: mlstack:{key}: is a secret")
    assert f"pulumi config set --secret mlstack:{key} <value> -s plain" in problem.fix
    assert "hunter2" not in str(exc.value)


def test_decrypted_secrets_passed_to_the_plan_stay_secret(
    lab_config: dict[str, Any], make_stack: MakeStack
) -> None:
    _, secret_keys, _ = pulumi_config(
        make_stack(lab_config, registryPassword={"secure": "v1:AAAA"}),
        (),
        OnPremBackend.optional_secrets,
    )
    assert "mlstack:registryPassword" in secret_keys
    secrets = {"registryPassword": "pw-7f3a9c", "registryUsername": "u"}
    plan = run_plan(make_stack(lab_config), secrets=secrets)
    assert "system-registry-pull" in {r.name for r in plan.resources}
    assert "pw-7f3a9c" not in json.dumps(plan.to_json())


def test_an_encrypted_value_becomes_a_placeholder_with_a_note(
    lab_config: dict[str, Any], make_stack: MakeStack
) -> None:
    stack = make_stack(lab_config, name="enc", s3AccessKeyId={"secure": "v1:AAAA"})
    plan = run_plan(stack)
    (note,) = [n for n in plan.notes if "mlstack:s3AccessKeyId" in n]
    assert "placeholder" in note and "Pulumi.enc.yaml" in note
    assert not any("s3AccessKeyId is not set" in n for n in plan.notes)
    creds = plan.get(SECRET, "system-object-store-credentials").inputs["stringData"]
    assert creds["value"]["AWS_ACCESS_KEY_ID"] == SECRET_PLACEHOLDER
    assert "v1:AAAA" not in json.dumps(plan.to_json())


def test_without_a_kubeconfig_path_the_kubeconfig_secret_is_required(
    lab_config: dict[str, Any], make_stack: MakeStack
) -> None:
    del lab_config["onprem"]["kubeconfig_path"]
    plan = run_plan(make_stack(lab_config))
    assert any("mlstack:kubeconfig is not set" in n for n in plan.notes)
    assert is_secret(plan.get(PROVIDER, "onprem-cluster-provider").inputs["kubeconfig"])


def test_a_stack_without_gpu_pools_installs_no_device_plugin(
    lab_config: dict[str, Any], make_stack: MakeStack
) -> None:
    lab_config["node_pools"] = lab_config["node_pools"][:1]
    lab_config["teams"] = []
    del lab_config["workloads"]
    plan = run_plan(make_stack(lab_config))
    releases = {r.name for r in plan.of_type("kubernetes:helm.sh/v3:Release")}
    assert releases == {"kueue-release", "jobset-release", "metrics-server-release"}
    assert len(plan.of_type(NODE_PATCH)) == 4


def test_json_form_masks_secrets_and_describes_every_resource(lab_plan: Plan) -> None:
    data = lab_plan.to_json()
    text = json.dumps(data)
    assert SECRET_PLACEHOLDER not in text
    assert data["stack"] == "onprem-lab" and data["cloud"] == "onprem"
    assert len(data["resources"]) == len(lab_plan.resources)
    for r in data["resources"]:
        assert {"type", "name", "urn", "parent", "inputs"} <= set(r)
    (creds,) = [r for r in data["resources"] if r["name"] == "system-object-store-credentials"]
    assert creds["inputs"]["stringData"]["value"] == "[secret]"
    assert data["notes"] == lab_plan.notes


# --- the runtime ------------------------------------------------------------------------------


def test_running_the_plan_twice_gives_the_same_resources(lab_plan: Plan) -> None:
    again = run_plan(read_stack("onprem-lab"))
    assert _identity(again) == _identity(lab_plan)
    assert again.to_json() == lab_plan.to_json()


def test_a_failed_run_leaks_nothing_into_the_next(
    lab_plan: Plan, lab_config: dict[str, Any], make_stack: MakeStack
) -> None:
    broken = copy.deepcopy(lab_config)
    broken["node_pools"][1]["capacity"] = "spot"
    with pytest.raises(pulumi.RunError):
        run_program("broken", {"mlstack:platform": json.dumps(broken)}, [])
    with_registry = run_plan(
        make_stack(lab_config, name="reg"),
        secrets={"registryUsername": "u", "registryPassword": "p"},
    )
    assert "system-registry-pull" in {r.name for r in with_registry.of_type(SECRET)}
    again = run_plan(read_stack("onprem-lab"))
    assert _identity(again) == _identity(lab_plan)
    assert all(r.urn.startswith("urn:pulumi:onprem-lab::") for r in again.resources)


def test_a_bad_config_stops_the_program_with_the_same_lines_as_load_platform(
    lab_config: dict[str, Any],
) -> None:
    lab_config["teams"][1]["quota"]["gpus"]["a100"] = 24
    lab_config["node_pools"][2]["nodes"][0] = "dgx-01"
    with pytest.raises(ConfigError) as loaded:
        load_platform(lab_config)
    with pytest.raises(pulumi.RunError) as run:
        run_program("broken", {"mlstack:platform": json.dumps(lab_config)}, [])
    assert str(run.value).splitlines() == str(loaded.value).splitlines()
    assert len(str(run.value).splitlines()) == 2


def test_missing_required_secrets_stop_the_program_with_the_fix(
    lab_config: dict[str, Any],
) -> None:
    with pytest.raises(pulumi.RunError) as run:
        run_program("nosecrets", {"mlstack:platform": json.dumps(lab_config)}, [])
    lines = str(run.value).splitlines()
    assert len(lines) == 2
    for key, line in zip(("s3AccessKeyId", "s3SecretAccessKey"), lines, strict=True):
        assert line.startswith(f"mlstack:{key}: ")
        assert f"pulumi config set --secret mlstack:{key}" in line


def test_main_file_calls_the_program_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(program, "main", lambda: calls.append("main"))
    runpy.run_path(str(REPO / "__main__.py"), run_name="__main__")
    assert calls == ["main"]


def test_main_file_under_the_mock_runtime_declares_the_lab_plan(
    lab_plan: Plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run_main_file() -> None:
        runpy.run_path(str(REPO / "__main__.py"), run_name="__main__")

    monkeypatch.setattr(offline, "program", SimpleNamespace(main=run_main_file))
    stack = read_stack("onprem-lab")
    platform = load_platform(stack.platform)
    config, secret_keys, _ = pulumi_config(
        stack, OnPremBackend.required_secret_keys(platform), OnPremBackend.optional_secrets
    )
    resources, outputs = run_program(stack.name, config, secret_keys)
    assert {(r.type, r.name, r.urn, r.parent) for r in resources} == _identity(lab_plan)
    assert outputs == lab_plan.outputs


def test_pools_whose_names_and_nodes_overlap_keep_every_node_patch(
    lab_config: dict[str, Any], make_stack: MakeStack
) -> None:
    """Pool 'gpu' with node 'a-1' and pool 'gpu-a' with node '1' must be two resources."""
    lab_config["node_pools"] = [
        {"name": "gpu", "kind": "cpu", "max_nodes": 1, "nodes": ["a-1"]},
        {"name": "gpu-a", "kind": "cpu", "max_nodes": 1, "nodes": ["1"]},
    ]
    lab_config["teams"] = []
    del lab_config["workloads"]
    plan = run_plan(make_stack(lab_config))
    patched = sorted(r.inputs["metadata"]["name"] for r in plan.of_type(NODE_PATCH))
    assert patched == ["1", "a-1"]


def test_a_urn_registered_twice_fails_the_plan(run_mocked: RunMocked) -> None:
    def program() -> None:
        for _ in range(2):
            k8s.core.v1.ConfigMap("same", metadata={"name": "same"})

    with pytest.raises(Exception, match="duplicate resource URN"):
        run_mocked(program)


def test_a_cloud_region_outside_the_catalog_is_planned_with_a_note(make_stack: MakeStack) -> None:
    config = read_stack("aws-dev").platform
    assert isinstance(config, dict)
    config = copy.deepcopy(config)
    config["aws"]["region"] = "ap-southeast-2"
    config["aws"]["availability_zones"] = ["ap-southeast-2a", "ap-southeast-2b"]
    plan = run_plan(make_stack(config, name="syd"))
    [note] = [n for n in plan.notes if "ap-southeast-2" in n]
    assert "not checked" in note
    subnets = plan.of_type("aws:ec2/subnet:Subnet")
    assert {s.inputs["availabilityZone"] for s in subnets} == {"ap-southeast-2a", "ap-southeast-2b"}


def test_cloud_placeholders_flow_into_derived_inputs_and_outputs() -> None:
    """ARNs and URLs the cloud computes are placeholders, so what derives from them is visible."""
    plan = run_plan(read_stack("aws-dev"))
    cluster = plan.get("aws:eks/cluster:Cluster", "aws-cluster")
    assert cluster.inputs["roleArn"] == "arn:aws:iam::000000000000:role/aws-cluster-role-offline"
    assert plan.outputs["registry_url"] == "000000000000.dkr.ecr.us-east-1.amazonaws.com/ml"
    assert is_secret(plan.outputs["kubeconfig"])
    kubeconfig = json.loads(plan.outputs["kubeconfig"]["value"])
    assert kubeconfig["clusters"][0]["cluster"]["server"].endswith(".eks.amazonaws.com")
    # The onprem backend computes nothing: its resources' state is their inputs.
    assert OnPremBackend.offline_outputs(plan.platform, "aws:iam/role:Role", "r", {}) == {}


def test_two_operators_homes_give_the_same_provider_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16, item 13: the kubeconfig path was expanded on the planning machine, so each
    operator's HOME showed up as a diff on the provider."""
    inputs = []
    for home in ("alice", "bob"):
        monkeypatch.setenv("HOME", str(tmp_path / home))
        provider = run_plan(read_stack("onprem-lab")).get(PROVIDER, "onprem-cluster-provider")
        inputs.append(provider.inputs)
    assert inputs[0] == inputs[1]
