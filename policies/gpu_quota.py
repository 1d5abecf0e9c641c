"""A team's GPUs in one pool as Kueue applies its quota: the one definition the config checks,
the namespace ResourceQuota and the ClusterQueue share.

Kueue admits a team's work up to its nominal quota in each pool's flavor. In a cohort it may also
borrow what the other members leave unused: up to its borrowing limit on top of the nominal
quota, or with no limit as much as the cohort has, and never more than the pool holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlstack.stacks.schema import Team


@dataclass(frozen=True)
class PoolGpuQuota:
    nominal: int
    borrowing_limit: int | None
    in_cohort: bool

    @property
    def queued(self) -> bool:
        """Whether the team's ClusterQueue lists the pool's flavor: where it has quota, and in a
        cohort every pool (it may borrow there)."""
        return self.nominal > 0 or self.in_cohort

    def reachable(self, pool_gpus: int) -> int:
        """The most GPUs of a pool of `pool_gpus` the team may hold at once."""
        if not self.in_cohort:
            return self.nominal
        if self.borrowing_limit is None:
            return pool_gpus
        return min(pool_gpus, self.nominal + self.borrowing_limit)


def pool_gpu_quota(team: Team, pool: str) -> PoolGpuQuota:
    """The team's GPU quota in the pool named `pool`."""
    return PoolGpuQuota(
        nominal=team.quota.gpus.get(pool, 0),
        borrowing_limit=team.quota.borrowing_limit_gpus.get(pool),
        in_cohort=team.cohort is not None,
    )
