"""GPU capacity per pool against the teams' quotas, from the config alone."""

from __future__ import annotations

from dataclasses import dataclass

from mlstack.stacks.schema import Platform


@dataclass(frozen=True)
class PoolCapacity:
    pool: str
    accelerator: str
    gpus_per_node: int
    max_nodes: int
    max_gpus: int
    quota_gpus: int

    @property
    def headroom(self) -> int:
        """GPUs left at full scale once every team uses its whole quota (< 0: overcommitted)."""
        return self.max_gpus - self.quota_gpus


@dataclass(frozen=True)
class TeamGpuQuota:
    team: str
    pool: str
    gpus: int
    share: float  # of the pool's maximum


def pool_capacity(platform: Platform) -> list[PoolCapacity]:
    return [
        PoolCapacity(
            pool=p.name,
            accelerator=p.accelerator or "",
            gpus_per_node=p.gpus,
            max_nodes=p.max_nodes,
            max_gpus=p.max_gpus,
            quota_gpus=sum(t.quota.gpus.get(p.name, 0) for t in platform.teams),
        )
        for p in platform.gpu_pools
    ]


def team_quotas(platform: Platform) -> list[TeamGpuQuota]:
    maxima = {p.name: p.max_gpus for p in platform.gpu_pools}
    return [
        TeamGpuQuota(team.name, pool, gpus, gpus / maxima[pool] if maxima[pool] else 0.0)
        for team in platform.teams
        for pool, gpus in team.quota.gpus.items()
    ]
