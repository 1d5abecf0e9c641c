"""The GCP backend's pure functions: service account ids, IAM conditions and team grants, team
prefixes, the region catalog, the zones each pool goes in, bucket lifecycles, registry cleanup
and the kubeconfig."""

from __future__ import annotations

import json
import re
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlstack.components.gcp.backend import GcpBackend, pool_zones, zones_of
from mlstack.components.gcp.catalog import (
    GPU_SERIES,
    MACHINES,
    REGIONS,
    Region,
    boot_disk_type,
    default_zones,
    series,
)
from mlstack.components.gcp.cluster import kubeconfig
from mlstack.components.gcp.iam import (
    BucketGrant,
    account_id,
    object_prefix_condition,
    team_bucket_grants,
)
from mlstack.components.gcp.nodepools import pool_shape, system_shape
from mlstack.components.gcp.registry import cleanup_policies
from mlstack.components.gcp.storage import archive_days, lifecycle_rules
from mlstack.stacks.catalog import ACCELERATORS
from mlstack.stacks.prefixes import prefix_problem, prefixes_nest
from mlstack.stacks.schema import BucketConfig, GcpConfig, NodePool

ACCOUNT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
DAY = 24 * 60 * 60
PURPOSES = ("datasets", "checkpoints", "models")

# --- account_id -------------------------------------------------------------------------------


def _check_account_id(value: str) -> None:
    assert 6 <= len(value) <= 30, value
    assert ACCOUNT_ID.match(value), value


def test_a_short_valid_id_is_kept_as_written() -> None:
    assert account_id("ml-dev", "vision") == "ml-dev-vision"
    assert account_id("ml-prod", "nodes") == "ml-prod-nodes"


@pytest.mark.parametrize(
    "parts",
    [
        ("a" * 40, "vision"),
        ("ml", "x"),  # too short
        ("1ml", "vision"),  # starts with a digit
        ("ML-Dev", "Vision"),  # upper case
        ("ml_dev", "vision"),  # underscore
        ("ml", "vision-"),  # ends with '-'
        ("-", "-"),
        ("",),
        ("ÿ" * 50,),
    ],
)
def test_an_id_that_is_not_valid_as_written_is_made_valid(parts: tuple[str, ...]) -> None:
    value = account_id(*parts)
    _check_account_id(value)
    assert value != "-".join(parts)


def test_long_names_that_share_their_start_get_different_ids() -> None:
    cluster = "platform-of-the-research-organisation"
    ids = {account_id(cluster, team) for team in ("vision", "language", "speech")}
    assert len(ids) == 3
    for value in ids:
        _check_account_id(value)
        assert value.startswith(cluster[:15])


_PART = st.text(max_size=45) | st.from_regex(r"[a-z][a-z0-9-]{0,40}", fullmatch=True)


@given(st.lists(_PART, min_size=1, max_size=3))
def test_account_id_is_always_a_valid_id_and_stable(parts: list[str]) -> None:
    value = account_id(*parts)
    _check_account_id(value)
    assert account_id(*parts) == value


@given(st.lists(_PART, min_size=1, max_size=3), st.lists(_PART, min_size=1, max_size=3))
def test_account_ids_of_different_names_differ(a: list[str], b: list[str]) -> None:
    if "-".join(a) != "-".join(b):
        assert account_id(*a) != account_id(*b), (a, b)


# --- object_prefix_condition ------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "/", "*", "a/../b", "vision/", "/vision", "Vision"])
def test_a_condition_on_a_prefix_that_is_not_a_plain_path_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(prefix))):
        object_prefix_condition("acme-ml-checkpoints", prefix)


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (
            "vision",
            'resource.name.startsWith("projects/_/buckets/acme-ml-checkpoints/objects/vision/")',
        ),
        (
            "research/vision",
            'resource.name.startsWith("projects/_/buckets/acme-ml-checkpoints/objects/'
            'research/vision/")',
        ),
    ],
)
def test_a_condition_on_a_plain_prefix(prefix: str, expected: str) -> None:
    assert object_prefix_condition("acme-ml-checkpoints", prefix) == expected


# --- team_bucket_grants -----------------------------------------------------------------------

BUCKETS = {p: f"acme-ml-{p}" for p in PURPOSES}
READER_ROLE = "projects/acme-ml/roles/mlstack_ml_bucket_reader"


def _grants(prefix: str = "vision") -> list[BucketGrant]:
    return team_bucket_grants(prefix=prefix, buckets=BUCKETS, bucket_reader_role=READER_ROLE)


def test_datasets_are_read_only() -> None:
    grants = [g for g in _grants() if g.purpose == "datasets"]
    assert {(g.role, g.condition) for g in grants} == {
        (READER_ROLE, None),
        ("roles/storage.objectViewer", None),
    }


@pytest.mark.parametrize("purpose", ["checkpoints", "models"])
def test_checkpoints_and_models_are_written_only_under_the_prefix(purpose: str) -> None:
    grants = [g for g in _grants("research/vision") if g.purpose == purpose]
    assert {g.role for g in grants} == {READER_ROLE, "roles/storage.objectUser"}
    [write] = [g for g in grants if g.role == "roles/storage.objectUser"]
    assert write.condition == (
        'resource.name.startsWith("projects/_/buckets/'
        f'{BUCKETS[purpose]}/objects/research/vision/")'
    )


def test_every_bucket_gets_the_list_role_without_a_condition() -> None:
    listing = [g for g in _grants() if g.role == READER_ROLE]
    assert sorted(g.purpose for g in listing) == sorted(PURPOSES)
    assert all(g.condition is None for g in listing)


def test_no_grant_writes_without_a_condition_or_holds_another_role() -> None:
    for g in _grants():
        assert g.role in (READER_ROLE, "roles/storage.objectViewer", "roles/storage.objectUser")
        if g.role == "roles/storage.objectUser":
            assert g.condition is not None and BUCKETS[g.purpose] in g.condition, g


def test_grants_have_distinct_names() -> None:
    """TeamIdentity names each binding '<team>-<purpose>-<access>'."""
    names = [(g.purpose, g.access) for g in _grants()]
    assert len(names) == len(set(names))


def test_grants_on_a_whole_bucket_prefix_are_refused() -> None:
    with pytest.raises(ValueError, match="whole bucket"):
        _grants("*")


# --- stacks/prefixes.py -----------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "/", "*", "/*", "**", ".", "..", " ", "./"])
def test_empty_or_wildcard_prefixes_would_grant_the_whole_bucket(prefix: str) -> None:
    assert prefix_problem(prefix) == "an empty or wildcard prefix would grant the whole bucket"


@pytest.mark.parametrize(
    "prefix",
    ["a/../b", "a/..", "a/./b", "Vision", "/vision", "vision/", "a//b", "vi*on", "a b", "a/*"],
)
def test_prefixes_that_are_not_plain_paths(prefix: str) -> None:
    problem = prefix_problem(prefix)
    assert problem is not None and problem.startswith("not a plain path"), problem


@pytest.mark.parametrize("prefix", ["vision", "research/vision", "team-1", "a.b_c", "v2/run.1"])
def test_plain_paths_are_fine(prefix: str) -> None:
    assert prefix_problem(prefix) is None


@pytest.mark.parametrize(
    ("a", "b", "nest"),
    [
        ("a", "a/b", True),
        ("a", "a/b/c", True),
        ("a/b", "a/b", True),
        ("a", "ab", False),
        ("vision", "vision2", False),
        ("a/b", "a/c", False),
        ("a/b", "ab", False),
    ],
)
def test_prefixes_nest(a: str, b: str, nest: bool) -> None:
    assert prefixes_nest(a, b) is nest
    assert prefixes_nest(b, a) is nest


# --- the region catalog -----------------------------------------------------------------------


@pytest.mark.parametrize("region", sorted(REGIONS))
def test_default_zones_are_two_in_dev_and_three_otherwise(region: str) -> None:
    zones = tuple(REGIONS[region].zones)
    assert len(zones) >= 3, "prod needs three zones"
    assert default_zones(region, "dev") == zones[:2]
    assert default_zones(region, "staging") == zones[:3]
    assert default_zones(region, "prod") == zones[:3]
    assert all(re.fullmatch(re.escape(region) + "-[a-z]", z) for z in zones)


def test_default_zones_of_an_unknown_region_is_none() -> None:
    assert "europe-north1" not in REGIONS
    assert default_zones("europe-north1", "dev") is None
    assert default_zones("europe-north1", "prod") is None


def test_offering_lists_the_zones_with_the_gpu_in_catalog_order() -> None:
    region = Region(
        "xx-test1",
        zones=MappingProxyType(
            {
                "xx-test1-c": frozenset({"l4"}),
                "xx-test1-a": frozenset({"t4"}),
                "xx-test1-b": frozenset({"l4", "t4"}),
            }
        ),
    )
    assert region.offering("l4") == ("xx-test1-c", "xx-test1-b")
    assert region.offering("t4") == ("xx-test1-a", "xx-test1-b")
    assert region.offering("h100-80gb") == ()


def test_offering_in_us_central1() -> None:
    us = REGIONS["us-central1"]
    assert "us-central1-f" not in us.offering("l4")
    assert "us-central1-f" not in us.offering("h100-80gb")
    assert us.offering("h200") == ("us-central1-b",)


def test_the_catalog_names_only_gpus_gcp_offers() -> None:
    for region in REGIONS.values():
        for zone, gpus in region.zones.items():
            for gpu in gpus:
                assert gpu in ACCELERATORS and GcpBackend.gpu_machines(gpu), (zone, gpu)


def test_every_gcp_machine_of_the_accelerator_catalog_is_a_gpu_series_except_n1() -> None:
    """Else a CPU pool could name it; N1 machines are CPU machines that T4s attach to."""
    for acc in ACCELERATORS.values():
        for machine in GcpBackend.gpu_machines(acc.name):
            assert series(machine) in GPU_SERIES or series(machine) == "n1", machine


@pytest.mark.parametrize(
    ("machine", "expected"),
    [("a3-highgpu-8g", "a3"), ("g2-standard-8", "g2"), ("n2-standard-8", "n2"), ("odd", "odd")],
)
def test_series(machine: str, expected: str) -> None:
    assert series(machine) == expected


# --- boot disks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("machine", "disk"),
    [
        # A3 Ultra (H200) and the Hyperdisk-only series cannot boot from Persistent Disk.
        ("a3-ultragpu-8g", "hyperdisk-balanced"),
        ("a4-highgpu-8g", "hyperdisk-balanced"),
        ("a4x-highgpu-4g", "hyperdisk-balanced"),
        ("c4-standard-8", "hyperdisk-balanced"),
        ("n4-standard-8", "hyperdisk-balanced"),
        # The rest of A3 and the older series keep pd-balanced.
        ("a3-highgpu-8g", "pd-balanced"),
        ("a3-megagpu-8g", "pd-balanced"),
        ("a2-ultragpu-8g", "pd-balanced"),
        ("g2-standard-48", "pd-balanced"),
        ("n1-standard-8", "pd-balanced"),
        ("e2-standard-4", "pd-balanced"),
        ("n2-standard-16", "pd-balanced"),
    ],
)
def test_boot_disk_type_by_machine_series(machine: str, disk: str) -> None:
    assert boot_disk_type(machine) == disk


def test_every_h200_machine_of_the_catalog_boots_from_hyperdisk() -> None:
    h200 = [m for m in MACHINES.values() if m.accelerator == "h200"]
    assert h200
    for machine in h200:
        assert boot_disk_type(machine.name) == "hyperdisk-balanced", machine.name


def test_pool_shapes_carry_the_boot_disk_of_their_machine() -> None:
    pool = NodePool.model_validate(
        {
            "name": "h200",
            "kind": "gpu",
            "accelerator": "h200",
            "gpus_per_node": 8,
            "instance_type": "a3-ultragpu-8g",
            "max_nodes": 2,
        }
    )
    assert pool_shape(pool, ("us-central1-b",), "1.35").disk_type == "hyperdisk-balanced"
    assert system_shape("e2-standard-4", ("us-central1-a",), (1, 2)).disk_type == "pd-balanced"
    assert system_shape("n4-standard-4", ("us-central1-a",), (1, 2)).disk_type == (
        "hyperdisk-balanced"
    )


# --- zones_of and pool_zones ------------------------------------------------------------------


def _cfg(**fields: Any) -> GcpConfig:
    return GcpConfig.model_validate({"project": "acme-ml-dev", "region": "us-central1", **fields})


def _pool(name: str, kind: str = "gpu", accelerator: str | None = None) -> NodePool:
    return NodePool.model_validate(
        {"name": name, "kind": kind, "accelerator": accelerator, "max_nodes": 2}
    )


@pytest.mark.parametrize("environment", ["dev", "staging", "prod"])
def test_zones_of_defaults_to_the_catalog(environment: str) -> None:
    zones = zones_of(_cfg(), environment)
    assert zones == default_zones("us-central1", environment)
    assert len(zones) == (2 if environment == "dev" else 3)


def test_zones_of_takes_the_listed_zones() -> None:
    listed = ("us-central1-f", "us-central1-a")
    assert zones_of(_cfg(zones=listed), "prod") == listed


def test_zones_of_an_unknown_region_without_zones_fails_loudly() -> None:
    with pytest.raises(AssertionError):
        zones_of(_cfg(region="europe-north1"), "dev")


ALL_ZONES = tuple(REGIONS["us-central1"].zones)


def test_a_gpu_pool_goes_in_the_cluster_zones_that_offer_its_gpu() -> None:
    cluster_zones = ("us-central1-f", "us-central1-c", "us-central1-a")
    got = pool_zones(_cfg(), _pool("h100", accelerator="h100-80gb"), cluster_zones)
    assert got == ("us-central1-c", "us-central1-a")
    offering = REGIONS["us-central1"].offering("h100-80gb")
    assert all(z in offering for z in got)


def test_a_gpu_pool_no_cluster_zone_offers_gets_no_zone() -> None:
    assert pool_zones(_cfg(), _pool("l4", accelerator="l4"), ("us-central1-f",)) == ()


def test_a_cpu_pool_goes_in_every_cluster_zone() -> None:
    assert pool_zones(_cfg(), _pool("cpu", kind="cpu"), ALL_ZONES) == ALL_ZONES


def test_a_pools_own_zones_win() -> None:
    cfg = _cfg(pool_zones={"h100": ["us-central1-b"], "cpu": ["us-central1-f"]})
    assert pool_zones(cfg, _pool("h100", accelerator="h100-80gb"), ALL_ZONES) == ("us-central1-b",)
    assert pool_zones(cfg, _pool("cpu", kind="cpu"), ALL_ZONES) == ("us-central1-f",)
    # Another pool is not affected.
    assert pool_zones(cfg, _pool("l4", accelerator="l4"), ("us-central1-a",)) == ("us-central1-a",)


def test_in_an_unknown_region_a_gpu_pool_goes_in_every_zone() -> None:
    zones = ("europe-north1-a", "europe-north1-b")
    cfg = _cfg(region="europe-north1", zones=zones)
    assert pool_zones(cfg, _pool("h100", accelerator="h100-80gb"), zones) == zones


# --- bucket lifecycles ------------------------------------------------------------------------


def test_checkpoints_archive_after_30_days_by_default_and_the_rest_never() -> None:
    assert archive_days("checkpoints", BucketConfig()) == 30
    assert archive_days("datasets", BucketConfig()) is None
    assert archive_days("models", BucketConfig()) is None


@pytest.mark.parametrize("purpose", PURPOSES)
def test_archive_after_days_wins(purpose: str) -> None:
    assert archive_days(purpose, BucketConfig(archive_after_days=90)) == 90


def _rules(purpose: str, cfg: BucketConfig) -> dict[str, Any]:
    """The rules by action type, untyped (pulumi types each field as a possible Output)."""
    rules: list[Any] = list(lifecycle_rules(purpose, cfg))
    by_action = {r.action.type: r for r in rules}
    assert len(by_action) == len(rules), "one rule per action"
    return by_action


def test_default_checkpoint_rules() -> None:
    rules = _rules("checkpoints", BucketConfig(noncurrent_version_days=7))
    assert set(rules) == {"Delete", "AbortIncompleteMultipartUpload", "SetStorageClass"}
    delete = rules["Delete"].condition
    assert (delete.with_state, delete.days_since_noncurrent_time) == ("ARCHIVED", 7)
    assert delete.age is None, "live objects are never deleted"
    assert rules["AbortIncompleteMultipartUpload"].condition.age == 7
    archive = rules["SetStorageClass"]
    assert archive.action.storage_class == "NEARLINE"
    assert archive.condition.age == 30
    assert archive.condition.with_state == "LIVE"
    assert archive.condition.matches_storage_classes == ["STANDARD"]


@pytest.mark.parametrize("purpose", ["datasets", "models"])
def test_other_buckets_are_not_archived_unless_asked(purpose: str) -> None:
    assert "SetStorageClass" not in _rules(purpose, BucketConfig())
    archive = _rules(purpose, BucketConfig(archive_after_days=45))["SetStorageClass"]
    assert (archive.action.storage_class, archive.condition.age) == ("NEARLINE", 45)


# --- registry cleanup -------------------------------------------------------------------------


@pytest.mark.parametrize("keep_last", [1, 20, 100])
def test_cleanup_keeps_the_newest_and_deletes_old_and_untagged(keep_last: int) -> None:
    policies: dict[str, Any] = {str(p.id): p for p in cleanup_policies(keep_last)}
    assert len(policies) == 3
    keep = [p for p in policies.values() if p.action == "KEEP"]
    assert len(keep) == 1
    assert keep[0].most_recent_versions.keep_count == keep_last
    deletes = {
        (p.condition.tag_state, p.condition.older_than)
        for p in policies.values()
        if p.action == "DELETE"
    }
    assert deletes == {("ANY", f"{30 * DAY}s"), ("UNTAGGED", f"{7 * DAY}s")}


def test_cleanup_keeps_every_pinned_tag_and_digest() -> None:
    digest = "sha256:" + "ab" * 32
    policies: dict[str, Any] = {
        str(p.id): p for p in cleanup_policies(20, ["0.2.0", digest, "0.1.0", "0.2.0"])
    }
    tags, digests = policies["keep-deployed-tags"], policies["keep-deployed-digests"]
    assert (tags.action, digests.action) == ("KEEP", "KEEP")
    assert tags.condition.tag_state == "TAGGED"
    assert tags.condition.tag_prefixes == ["0.1.0", "0.2.0"]
    assert digests.condition.tag_state == "ANY"
    assert digests.condition.version_name_prefixes == [digest]
    assert len(policies) == 5  # Artifact Registry allows 10 per repository


# --- kubeconfig -------------------------------------------------------------------------------


def test_kubeconfig_authenticates_with_the_gke_plugin_and_holds_no_secret() -> None:
    text = kubeconfig("ml-prod", "34.1.2.3", "Q0E=")
    config = json.loads(text)
    assert (config["apiVersion"], config["kind"]) == ("v1", "Config")
    assert config["current-context"] == "ml-prod"
    [cluster] = config["clusters"]
    assert cluster == {
        "name": "ml-prod",
        "cluster": {"server": "https://34.1.2.3", "certificate-authority-data": "Q0E="},
    }
    [context] = config["contexts"]
    assert context == {"name": "ml-prod", "context": {"cluster": "ml-prod", "user": "ml-prod"}}
    [user] = config["users"]
    assert user["name"] == "ml-prod"
    assert set(user["user"]) == {"exec"}, "no token, password or client key"
    exec_ = user["user"]["exec"]
    assert exec_["apiVersion"] == "client.authentication.k8s.io/v1beta1"
    assert exec_["command"] == "gke-gcloud-auth-plugin"
    # Tokens from Application Default Credentials, what the README and CI set up, not from a
    # gcloud CLI login.
    assert exec_["args"] == ["--use_application_default_credentials"]
    assert exec_["interactiveMode"] == "Never"
    for word in ("token", "password", "client-key-data", "client-certificate-data", "secret"):
        assert f'"{word}"' not in text


def test_a_dns_endpoint_kubeconfig_has_no_cluster_ca() -> None:
    config = json.loads(kubeconfig("ml-prod", "gke-abc-123.us-central1.gke.goog", None))
    [cluster] = config["clusters"]
    # The DNS endpoint's certificate is publicly trusted: the system roots verify it.
    assert cluster["cluster"] == {"server": "https://gke-abc-123.us-central1.gke.goog"}
    [user] = config["users"]
    assert user["user"]["exec"]["args"] == ["--use_application_default_credentials"]
