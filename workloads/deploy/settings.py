"""Workload settings with every default filled in: a training job's from its pool and model
config, an inference service's from its pool and canary.

Plain Python (no Pulumi, no JAX): the config's validation and the manifest builder read the
same numbers from here, so what is checked is what is deployed.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlstack.stacks.schema import Capacity, InferenceService, NodePool, PoolKind, TrainingJob
from mlstack.workloads.train.configs import CONFIGS, TrainConfig

#: A training pod's time from SIGTERM to the kill when its job does not say: enough to finish
#: the step and save a checkpoint; on spot capacity no more than the cloud's reclaim notice.
DEFAULT_TRAINING_GRACE_S = 300
#: A serving replica's, likewise: the preStop pause, then the drain of what is in flight.
DEFAULT_SERVING_GRACE_S = 60


def grace_period_s(chosen: int | None, default: int, pool: NodePool, notice_s: int | None) -> int:
    """A pod's terminationGracePeriodSeconds: the config's choice, else `default`, capped on a
    spot pool at `notice_s` (what the cloud gives a pod when it reclaims the node: a longer
    grace would be cut short by the node's end, so the default never asks for more)."""
    if chosen is not None:
        return chosen
    if pool.capacity is Capacity.SPOT and notice_s is not None:
        return min(default, notice_s)
    return default


@dataclass(frozen=True)
class JobSettings:
    """A validated training job on its pool."""

    job: TrainingJob
    pool: NodePool
    config: TrainConfig
    #: The cloud's spot reclaim notice for pods (CloudBackend.spot_notice_s); None: unknown or
    #: no spot on this cloud.
    spot_notice_s: int | None = None

    @property
    def termination_grace_period_s(self) -> int:
        return grace_period_s(
            self.job.termination_grace_period_s,
            DEFAULT_TRAINING_GRACE_S,
            self.pool,
            self.spot_notice_s,
        )

    @property
    def gpus_per_host(self) -> int:
        """GPUs each pod requests: the job's choice, else a whole node; 0 on CPU pools."""
        return self.job.gpus_per_host or self.pool.gpus

    @property
    def devices(self) -> int:
        """Accelerator devices of the whole job: every GPU, or one CPU device per process (the
        training code runs one device per process on CPU)."""
        return self.job.num_hosts * max(self.gpus_per_host, 1)

    @property
    def steps(self) -> int:
        return self.job.steps or self.config.total_steps

    @property
    def global_batch_size(self) -> int:
        return self.job.global_batch_size or self.config.global_batch_size


def job_settings(job: TrainingJob, pool: NodePool, spot_notice_s: int | None = None) -> JobSettings:
    """The settings of `job` on `pool`; its model must be one of CONFIGS (validation checks)."""
    return JobSettings(job=job, pool=pool, config=CONFIGS[job.model], spot_notice_s=spot_notice_s)


@dataclass(frozen=True)
class ServiceSettings:
    """A validated inference service on its pool: the replica counts of its two tracks."""

    service: InferenceService
    pool: NodePool
    #: As JobSettings.spot_notice_s.
    spot_notice_s: int | None = None

    @property
    def termination_grace_period_s(self) -> int:
        return grace_period_s(
            self.service.termination_grace_period_s,
            DEFAULT_SERVING_GRACE_S,
            self.pool,
            self.spot_notice_s,
        )

    @property
    def gpus_per_replica(self) -> int:
        """The service's choice, else one GPU on GPU pools; 0 on CPU pools."""
        if self.service.gpus_per_replica is not None:
            return self.service.gpus_per_replica
        return 1 if self.pool.kind is PoolKind.GPU else 0

    @property
    def max_replicas(self) -> int:
        return self.service.max_replicas or self.service.replicas

    @property
    def canary_replicas(self) -> int:
        return self.service.canary.replicas if self.service.canary is not None else 0

    @property
    def stable_min_replicas(self) -> int:
        """The stable track's autoscaling range: the service's, less the canary's replicas."""
        return self.service.replicas - self.canary_replicas

    @property
    def stable_max_replicas(self) -> int:
        return self.max_replicas - self.canary_replicas

    @property
    def deployments(self) -> int:
        """Deployments of the service: stable, and canary when configured."""
        return 2 if self.service.canary is not None else 1

    @property
    def peak_replicas(self) -> int:
        """Pods at once at most: every replica, plus each Deployment's surge pod while a
        rolling update replaces its pods one by one."""
        return self.max_replicas + self.deployments


def service_settings(
    service: InferenceService, pool: NodePool, spot_notice_s: int | None = None
) -> ServiceSettings:
    return ServiceSettings(service=service, pool=pool, spot_notice_s=spot_notice_s)
