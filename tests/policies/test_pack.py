"""The policy pack as the Pulumi engine runs it: `policies/pack/__main__.py` started as its own
process serves the analyzer gRPC API; the engine's requests, built from a recorded plan, must
yield exactly the violations `mlstack check` reports offline for the same plan."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from tests_support import bad_extra_manifests

from mlstack.policies.check import check_plan
from mlstack.policies.rules import ALL_POLICIES
from mlstack.stacks.offline import run_plan
from mlstack.stacks.plan import Plan, PlannedResource
from mlstack.stacks.stackfile import read_stack

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "policies" / "pack" / "__main__.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO / "policies" / "pack",
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().strip())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _struct(inputs: Any) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(json.loads(json.dumps(inputs)))
    return struct


Found = tuple[str, str, str, str]  # (policy, level, urn, message)


def _found(d: analyzer_pb2.AnalyzeDiagnostic, urn: str) -> Found:
    """The engine sends 'description\nmessage' and its own enum for the level."""
    description, _, message = d.message.partition("\n")
    assert description == d.description
    level = analyzer_pb2.EnforcementLevel.Name(d.enforcementLevel).lower()
    return d.policyName, level, urn, message


def _engine_violations(stub: analyzer_pb2_grpc.AnalyzerStub, plan: Plan) -> set[Found]:
    """(policy, level, urn, message) of every diagnostic the pack returns, per resource and
    for the stack."""
    stub.Configure(analyzer_pb2.ConfigureAnalyzerRequest())
    found: set[Found] = set()
    for r in plan.resources:
        response = stub.Analyze(
            analyzer_pb2.AnalyzeRequest(
                type=r.type, properties=_struct(r.inputs), urn=r.urn, name=r.name
            )
        )
        found |= {_found(d, r.urn) for d in response.diagnostics}
    stack = stub.AnalyzeStack(
        analyzer_pb2.AnalyzeStackRequest(
            resources=[
                analyzer_pb2.AnalyzerResource(
                    type=r.type,
                    properties=_struct(r.inputs),
                    urn=r.urn,
                    name=r.name,
                    parent=r.parent or "",
                )
                for r in plan.resources
            ]
        )
    )
    found |= {_found(d, d.urn) for d in stack.diagnostics}
    return found


def test_the_pack_serves_every_rule(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == "mlstack"
    assert sorted(p.name for p in info.policies) == sorted(p.name for p in ALL_POLICIES)
    assert all(p.description for p in info.policies)


def test_engine_and_mlstack_check_agree_on_a_clean_stack(
    analyzer: analyzer_pb2_grpc.AnalyzerStub, lab_plan: Plan
) -> None:
    assert _engine_violations(analyzer, lab_plan) == set()
    assert check_plan(lab_plan).violations == []


def test_engine_and_mlstack_check_agree_on_violations(
    analyzer: analyzer_pb2_grpc.AnalyzerStub, lab_config: dict[str, Any], make_stack: Any
) -> None:
    lab_config["extra_manifests"] = bad_extra_manifests()
    lab_config["teams"][1]["quota"]["gpus"]["a100"] = 12  # vision 8 + 12 > 16
    plan = run_plan(make_stack(lab_config))
    offline = {(v.policy, v.enforcement, v.urn, v.message) for v in check_plan(plan).violations}
    assert len({policy for policy, *_ in offline}) >= 8
    assert _engine_violations(analyzer, plan) == offline


@pytest.fixture(scope="module")
def aws_dev_plan() -> Plan:
    return run_plan(read_stack("aws-dev"))


def test_engine_and_mlstack_check_agree_on_the_clean_aws_stack(
    analyzer: analyzer_pb2_grpc.AnalyzerStub, aws_dev_plan: Plan
) -> None:
    assert _engine_violations(analyzer, aws_dev_plan) == set()
    assert check_plan(aws_dev_plan).violations == []


def _broken_aws(plan: Plan) -> Plan:
    """aws-dev with one thing broken per AWS rule family: stack rules that match settings to
    buckets (by name, or by parent for a setting whose bucket is unknown) and resource rules."""
    admin = json.dumps({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
    resources = []
    for r in plan.resources:
        inputs = copy.deepcopy(dict(r.inputs))
        if r.type == "aws:s3/bucketVersioning:BucketVersioning" and r.name.endswith("checkpoints"):
            continue
        if r.type.startswith("aws:s3/bucketPolicy:") and r.name.endswith("models"):
            inputs["bucket"] = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # unknown: by parent
            inputs["policy"] = json.dumps({"Statement": []})
        if r.type == "aws:eks/cluster:Cluster":
            inputs["vpcConfig"]["publicAccessCidrs"] = ["0.0.0.0/0"]
            inputs["enabledClusterLogTypes"] = ["api"]
        if r.type == "aws:iam/rolePolicy:RolePolicy":
            inputs["policy"] = admin
        if r.type == "aws:kms/key:Key":
            inputs["enableKeyRotation"] = False
        resources.append(
            PlannedResource(r.type, r.name, r.urn, r.parent, r.custom, r.provider, inputs)
        )
    return Plan(plan.stack, plan.platform, resources)


def test_engine_and_mlstack_check_agree_on_aws_violations(
    analyzer: analyzer_pb2_grpc.AnalyzerStub, aws_dev_plan: Plan
) -> None:
    plan = _broken_aws(aws_dev_plan)
    offline = {(v.policy, v.enforcement, v.urn, v.message) for v in check_plan(plan).violations}
    assert {policy for policy, *_ in offline} == {
        "aws-s3-versioned",
        "aws-s3-tls-only",
        "aws-eks-endpoint-private",
        "aws-eks-audit-logging",
        "aws-iam-no-admin-statements",
        "aws-kms-key-rotation",
    }
    assert _engine_violations(analyzer, plan) == offline


@pytest.fixture(scope="module")
def gcp_dev_plan() -> Plan:
    return run_plan(read_stack("gcp-dev"))


def test_engine_and_mlstack_check_agree_on_the_clean_gcp_stack(
    analyzer: analyzer_pb2_grpc.AnalyzerStub, gcp_dev_plan: Plan
) -> None:
    assert _engine_violations(analyzer, gcp_dev_plan) == set()
    assert check_plan(gcp_dev_plan).violations == []


def _broken_gcp(plan: Plan) -> Plan:
    """gcp-dev with one thing broken per GCP rule family: the stack rule that matches node
    pools to their cluster, and resource rules on buckets, pools, IAM and firewalls."""
    resources = []
    for r in plan.resources:
        inputs = copy.deepcopy(dict(r.inputs))
        if r.type == "gcp:storage/bucket:Bucket" and r.name.endswith("checkpoints"):
            inputs["versioning"] = {"enabled": False}
        if r.type == "gcp:container/cluster:Cluster":
            inputs["privateClusterConfig"]["enablePrivateNodes"] = False
            inputs["enableLegacyAbac"] = True
        if r.type == "gcp:container/nodePool:NodePool" and r.name.endswith("-l4"):
            inputs["management"]["autoRepair"] = False
        if r.type == "gcp:projects/iAMMember:IAMMember":
            inputs["role"] = "roles/editor"
        if r.type == "gcp:compute/firewall:Firewall":
            inputs["sourceRanges"] = ["0.0.0.0/0"]
        resources.append(
            PlannedResource(r.type, r.name, r.urn, r.parent, r.custom, r.provider, inputs)
        )
    return Plan(plan.stack, plan.platform, resources)


def test_engine_and_mlstack_check_agree_on_gcp_violations(
    analyzer: analyzer_pb2_grpc.AnalyzerStub, gcp_dev_plan: Plan
) -> None:
    plan = _broken_gcp(gcp_dev_plan)
    offline = {(v.policy, v.enforcement, v.urn, v.message) for v in check_plan(plan).violations}
    assert {policy for policy, *_ in offline} == {
        "gcp-gcs-versioned",
        "gcp-gke-private-nodes",
        "gcp-gke-no-legacy-auth",
        "gcp-gke-node-auto-repair-upgrade",
        "gcp-iam-no-primitive-roles",
        "gcp-firewall-no-open-ingress",
    }
    assert _engine_violations(analyzer, plan) == offline
