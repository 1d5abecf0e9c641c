"""A team's GPUs in one pool as Kueue applies its quota: the nominal quota alone, or in a cohort
what it may borrow on top, up to the pool."""

from __future__ import annotations

import pytest

from mlstack.policies.gpu_quota import PoolGpuQuota, pool_gpu_quota
from mlstack.stacks.schema import Quota, Team

POOL_GPUS = 16


@pytest.mark.parametrize(
    ("quota", "reachable"),
    [
        (PoolGpuQuota(nominal=8, borrowing_limit=None, in_cohort=False), 8),
        # Without a cohort nothing is capped here: a quota above the pool is its own problem.
        (PoolGpuQuota(nominal=20, borrowing_limit=None, in_cohort=False), 20),
        (PoolGpuQuota(nominal=8, borrowing_limit=None, in_cohort=True), POOL_GPUS),
        (PoolGpuQuota(nominal=8, borrowing_limit=4, in_cohort=True), 12),
        (PoolGpuQuota(nominal=8, borrowing_limit=100, in_cohort=True), POOL_GPUS),
        (PoolGpuQuota(nominal=8, borrowing_limit=0, in_cohort=True), 8),
        (PoolGpuQuota(nominal=0, borrowing_limit=None, in_cohort=True), POOL_GPUS),
    ],
)
def test_reachable_gpus_follow_kueue_borrowing(quota: PoolGpuQuota, reachable: int) -> None:
    assert quota.reachable(POOL_GPUS) == reachable


def test_a_queue_lists_the_pools_with_quota_and_in_a_cohort_every_pool() -> None:
    assert PoolGpuQuota(nominal=1, borrowing_limit=None, in_cohort=False).queued
    assert not PoolGpuQuota(nominal=0, borrowing_limit=None, in_cohort=False).queued
    assert PoolGpuQuota(nominal=0, borrowing_limit=0, in_cohort=True).queued


def test_the_quota_is_read_from_the_team() -> None:
    team = Team(
        name="vision",
        cohort="shared",
        quota=Quota(gpus={"a100": 8}, borrowing_limit_gpus={"a100": 4}),
    )
    assert pool_gpu_quota(team, "a100") == PoolGpuQuota(8, 4, True)
    assert pool_gpu_quota(team, "l40s") == PoolGpuQuota(0, None, True)
