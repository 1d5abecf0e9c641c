"""The bad-stack corpus: each file in tests/data/bad-stacks is a complete on-prem or AWS stack
with one deliberate misconfiguration, and `mlstack check` must fail it on the rule(s) its first
line names and on no other. The shipped stacks must pass with no violation at all (the CI gate).

A corpus file starts with two comment lines:

    # expect: <rule>[, <rule>...]
    # <what is wrong, in words>
"""

from __future__ import annotations

import copy
import functools
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from mlstack.policies.rules import ALL_POLICIES, gcp
from mlstack.stacks.cli import app
from mlstack.stacks.stackfile import shipped_stacks

runner = CliRunner()
CORPUS_DIR = Path(__file__).resolve().parents[1] / "data" / "bad-stacks"
CORPUS = sorted(CORPUS_DIR.glob("Pulumi.*.yaml"))
RULES = {p.name for p in ALL_POLICIES}
_EXPECT = re.compile(r"^# expect: (?P<rules>[a-z0-9-]+(, ?[a-z0-9-]+)*)\s*$")

#: Rules no stack config can trip: mlstack always makes a Kueue flavor per GPU pool, the AWS
#: backend always declares its S3, ECR, KMS and IAM resources and the EKS control plane's
#: encryption, logging and private endpoint the compliant way, and the GCP backend its buckets,
#: repository, GKE cluster and pools, IAM and firewall (`extra_manifests` are Kubernetes objects
#: only; the config refuses a 0.0.0.0/0 authorized network). The AWS endpoint's public CIDRs, an
#: aws-auth ConfigMap and a pool's taints are reachable. The add-on releases' charts, versions
#: and values are code: the device plugin tolerates every GPU pool's taint keys and selects the
#: reserved pool-kind label no config can change, and each release's namespace is code too (the
#: add-on namespaces are declared at their charts' levels; kube-system is a documented
#: exemption). Node patches are only the on-prem pools' (extra manifests declare whole objects,
#: never patches), and those name their taints in an annotation.
UNREACHABLE = {
    "node-patches-leave-taints",
    "gpu-addons-reach-gpu-pools",
    "addon-placement-recorded",
    "addon-namespaces-enforce-their-level",
    "gpu-pools-have-flavors",
    "aws-s3-encrypted-with-kms",
    "aws-s3-public-access-blocked",
    "aws-s3-versioned",
    "aws-s3-tls-only",
    "aws-s3-owner-enforced",
    "aws-ecr-immutable-scanned",
    "aws-eks-secrets-encrypted",
    "aws-eks-audit-logging",
    "aws-iam-no-admin-statements",
    "aws-pod-identity-trust-by-session-tags",
    "aws-iam-no-access-keys",
    "aws-kms-key-rotation",
    *(p.name for p in gcp.POLICIES),
}
#: What a corpus stack of each cloud must have in its cloud section.
CLOUD_KEYS = {"onprem": "registry_host", "aws": "region", "gcp": "project"}

#: Corpus files the pack gets wrong today, with the reason; each becomes a strict xfail.
KNOWN_GAPS: dict[str, str] = {}


def _name(path: Path) -> str:
    return path.name.removeprefix("Pulumi.").removesuffix(".yaml")


def expected_rules(path: Path) -> set[str]:
    first = path.read_text().splitlines()[0]
    match = _EXPECT.match(first)
    assert match, f"{path.name}: first line must be '# expect: <rule>[, <rule>...]', got {first!r}"
    return {r.strip() for r in match["rules"].split(",")}


@functools.cache
def check_file(path: Path) -> tuple[int, dict[str, Any]]:
    """`mlstack check <path> --json <tmp>` in-process: the exit code and the JSON written."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "check.json"
        result = runner.invoke(app, ["check", str(path), "--json", str(out)])
        assert out.is_file(), f"{path.name}: no JSON written (exit {result.exit_code}):\n" + (
            result.output
        )
        return result.exit_code, json.loads(out.read_text())


def _params() -> list[Any]:
    return [
        pytest.param(
            path,
            id=_name(path),
            marks=[pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[_name(path)])]
            if _name(path) in KNOWN_GAPS
            else [],
        )
        for path in CORPUS
    ]


# --- the corpus itself -------------------------------------------------------------------


def test_corpus_is_big_and_covers_the_pack() -> None:
    assert len(CORPUS) >= 20, f"only {len(CORPUS)} files in {CORPUS_DIR}"
    expected = [expected_rules(p) for p in CORPUS]
    covered = set().union(*expected)
    assert len(covered) >= 15, sorted(covered)
    # Counting only files the pack handles today, every reachable rule is still exercised.
    working = set().union(
        *(e for p, e in zip(CORPUS, expected, strict=True) if _name(p) not in KNOWN_GAPS)
    )
    assert working >= RULES - UNREACHABLE, sorted(RULES - UNREACHABLE - working)


def test_unreachable_rules_are_rules_of_the_pack() -> None:
    assert UNREACHABLE <= RULES


def test_the_corpus_covers_every_cloud() -> None:
    clouds = {yaml.safe_load(p.read_text())["config"]["mlstack:platform"]["cloud"] for p in CORPUS}
    assert clouds == set(CLOUD_KEYS)


def test_known_gaps_name_corpus_files() -> None:
    assert set(KNOWN_GAPS) <= {_name(p) for p in CORPUS}


@pytest.mark.parametrize("path", CORPUS, ids=_name)
def test_corpus_file_is_well_formed(path: Path) -> None:
    lines = path.read_text().splitlines()
    rules = expected_rules(path)
    assert rules <= RULES, f"not rules of the pack: {sorted(rules - RULES)}"
    assert re.match(r"^# \S.{10,}", lines[1]), "second line: '# <what is wrong, in words>'"
    data = yaml.safe_load(path.read_text())
    platform = data["config"]["mlstack:platform"]
    assert (
        platform["cloud"] in CLOUD_KEYS
        and CLOUD_KEYS[platform["cloud"]] in platform[platform["cloud"]]
    )
    assert any(pool["kind"] == "gpu" for pool in platform["node_pools"])
    assert platform["teams"], "a corpus stack has at least one team"


@pytest.mark.parametrize("path", _params())
def test_corpus_file_fails_on_its_rules(path: Path) -> None:
    code, data = check_file(path)
    (stack,) = data["stacks"]
    assert stack["stack"] == _name(path)
    violations = stack["violations"]
    fired = {v["policy"] for v in violations}
    expected = expected_rules(path)
    assert code == 1, f"exit {code}; violations: {sorted(fired)}"
    assert expected <= fired, f"missing {sorted(expected - fired)}; fired {sorted(fired)}"
    for v in violations:
        assert v["enforcement"] == "mandatory"
        assert v["stack"] == _name(path)
        assert v["message"].strip() and "\n" not in v["message"] and "\r" not in v["message"], v
        assert v["urn"].startswith(f"urn:pulumi:{_name(path)}::mlstack::"), v
        assert v["resource"], v


@pytest.mark.parametrize("path", _params())
def test_corpus_file_trips_nothing_else(path: Path) -> None:
    """Each file breaks one thing: any other rule firing is a false positive of that rule."""
    _, data = check_file(path)
    fired = {v["policy"] for v in data["stacks"][0]["violations"]}
    assert fired == expected_rules(path), f"unexpected: {sorted(fired - expected_rules(path))}"


# --- the CI gate: shipped stacks pass ------------------------------------------------------


@pytest.mark.parametrize("stack", shipped_stacks())
def test_shipped_stack_passes_the_pack(stack: str, tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    result = runner.invoke(app, ["check", stack, "--json", str(out)])
    assert result.exit_code == 0, result.output
    (report,) = json.loads(out.read_text())["stacks"]
    assert report["stack"] == stack
    assert report["violations"] == [], report["violations"]
    assert report["diagnostics"] == []


def test_check_without_arguments_gates_every_shipped_stack() -> None:
    assert shipped_stacks(), "no shipped stacks found"
    result = runner.invoke(app, ["check", "--json", "-"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [s["stack"] for s in data["stacks"]] == shipped_stacks()
    assert all(s["violations"] == [] for s in data["stacks"])


# --- compliant twins: the corpus shapes done right pass --------------------------------------

_REGISTRY = "harbor.lab.internal/ml"
_GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
_QUEUE = {"kueue.x-k8s.io/queue-name": "default"}


def _pod_spec(gpus: int = 0) -> dict[str, Any]:
    requests: dict[str, Any] = {"cpu": "4", "memory": "32Gi"}
    limits: dict[str, Any] = {"memory": "32Gi"}
    if gpus:
        requests["nvidia.com/gpu"] = gpus
        limits["nvidia.com/gpu"] = gpus
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
        "containers": [
            {
                "name": "main",
                "image": f"{_REGISTRY}/train:1.4.2",
                "securityContext": {"allowPrivilegeEscalation": False},
                "resources": {"requests": requests, "limits": limits},
            }
        ],
    }
    if gpus:
        spec["tolerations"] = [dict(_GPU_TOLERATION)]
    return spec


def _platform(*extra: dict[str, Any]) -> dict[str, Any]:
    """The corpus's base stack (taken from one corpus file), its one mistake replaced by
    `extra` as extra_manifests."""
    data = yaml.safe_load((CORPUS_DIR / "Pulumi.host-pid.yaml").read_text())
    platform = copy.deepcopy(data["config"]["mlstack:platform"])
    platform["extra_manifests"] = list(extra)
    return platform


def _check_platform(tmp_path: Path, platform: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    path = tmp_path / "Pulumi.twin.yaml"
    path.write_text(yaml.safe_dump({"config": {"mlstack:platform": platform}}))
    result = runner.invoke(app, ["check", str(path), "--json", "-"])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)["stacks"][0]["violations"]


def _gpu_cronjob(job_template_labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "nightly-finetune", "namespace": "vision"},
        "spec": {
            "schedule": "0 2 * * *",
            "startingDeadlineSeconds": 3600,
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {
                "metadata": {"labels": job_template_labels},
                "spec": {"suspend": True, "template": {"spec": _pod_spec(gpus=8)}},
            },
        },
    }


def test_compliant_workloads_pass(tmp_path: Path) -> None:
    """Every workload shape the corpus breaks, done right, plus an internal LoadBalancer and an
    overcommitting cohort that allows it: no rule fires."""
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "train", "namespace": "vision", "labels": dict(_QUEUE)},
        "spec": {"template": {"spec": _pod_spec(gpus=8)}},
    }
    jobset = {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {"name": "pretrain", "namespace": "language", "labels": dict(_QUEUE)},
        "spec": {
            "replicatedJobs": [
                {
                    "name": "workers",
                    "replicas": 2,
                    "template": {"spec": {"template": {"spec": _pod_spec(gpus=8)}}},
                }
            ]
        },
    }
    cronjob = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "nightly-eval", "namespace": "vision"},
        "spec": {
            "schedule": "0 2 * * *",
            "startingDeadlineSeconds": 3600,
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {
                "metadata": {"labels": dict(_QUEUE)},
                "spec": {"template": {"spec": _pod_spec()}},
            },
        },
    }
    pinned = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe", "namespace": "language"},
        "spec": _pod_spec(),
    }
    pinned["spec"]["containers"][0]["image"] = f"{_REGISTRY}/train@sha256:{'0' * 64}"
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "demo",
            "namespace": "vision",
            "annotations": {"metallb.universe.tf/address-pool": "internal"},
        },
        "spec": {"type": "LoadBalancer", "selector": {"app": "demo"}, "ports": [{"port": 80}]},
    }
    platform = _platform(job, jobset, cronjob, pinned, service)
    platform["teams"][0]["allow_load_balancers"] = True
    platform["teams"][1]["pod_security"] = "baseline"
    platform["teams"][1]["quota"]["gpus"]["a100"] = 16  # 8 + 16 > 16, and the cohort allows it
    platform["tenancy"] = {"cohorts": [{"name": "lab", "allow_overcommit": True}]}
    for team in platform["teams"]:
        team["cohort"] = "lab"
    code, violations = _check_platform(tmp_path, platform)
    assert (code, violations) == (0, [])


def test_gpu_cronjob_queued_the_kueue_way_passes(tmp_path: Path) -> None:
    code, violations = _check_platform(tmp_path, _platform(_gpu_cronjob(dict(_QUEUE))))
    assert (code, [v["policy"] for v in violations]) == (0, [])


# --- the refused corpus: configs the gate refuses before planning --------------------------
#
# Each file in tests/data/bad-stacks/refused starts with
#
#     # refuse: <config path>[, <config path>...]   (FILE: the stack file itself)
#     # <what is wrong, in words>
#     # never-print: <a secret in the file>           (optional, repeatable)
#
# and `mlstack check` must exit 2 with an error line at each path and at no other, each with
# its fix, and print none of the never-print values.

REFUSED_DIR = CORPUS_DIR / "refused"
REFUSED = sorted(REFUSED_DIR.glob("Pulumi.*.yaml"))
_REFUSE = re.compile(r"^# refuse: (?P<paths>\S+(, \S+)*)\s*$")


def _refused_header(path: Path) -> tuple[set[str], list[str]]:
    lines = path.read_text().splitlines()
    match = _REFUSE.match(lines[0])
    assert match, f"{path.name}: first line must be '# refuse: <path>[, <path>...]'"
    paths = {str(path) if p == "FILE" else p for p in match["paths"].split(", ")}
    assert re.match(r"^# \S.{10,}", lines[1]), "second line: '# <what is wrong, in words>'"
    never = [
        line.removeprefix("# never-print: ") for line in lines if line.startswith("# never-print: ")
    ]
    return paths, never


def test_the_refused_corpus_covers_every_cloud() -> None:
    assert len(REFUSED) >= 6
    clouds = set()
    for path in REFUSED:
        text = path.read_text()
        clouds |= {c for c in CLOUD_KEYS if f"cloud: {c}" in text}
    assert clouds == set(CLOUD_KEYS)


@pytest.mark.parametrize("path", REFUSED, ids=_name)
def test_refused_file_is_refused_at_its_paths(path: Path) -> None:
    expected, never = _refused_header(path)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "check.json"
        result = runner.invoke(app, ["check", str(path), "--json", str(out)])
        data = json.loads(out.read_text())
    assert result.exit_code == 2, result.output
    assert data["stacks"] == []
    (refused,) = data["refused"]
    assert refused["stack"] == str(path)
    assert {e["path"] for e in refused["errors"]} == expected, refused["errors"]
    for error in refused["errors"]:
        assert "; fix: " in error["line"] and "\n" not in error["line"], error
    printed = result.output + json.dumps(data)
    for secret in never:
        assert secret not in printed, f"{path.name} printed a secret"
