"""Workload settings with every default filled in: a training job's from its pool and model
config, an inference service's from its pool and canary.

Plain Python (no Pulumi, no JAX): the config's validation and the manifest builder read the
same numbers from here, so what is checked is what is deployed.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlstack.stacks.schema import InferenceService, NodePool, PoolKind, TrainingJob
from mlstack.workloads.train.configs import CONFIGS, TrainConfig


@dataclass(frozen=True)
class JobSettings:
    """A validated training job on its pool."""

    job: TrainingJob
    pool: NodePool
    config: TrainConfig

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


def job_settings(job: TrainingJob, pool: NodePool) -> JobSettings:
    """The settings of `job` on `pool`; its model must be one of CONFIGS (validation checks)."""
    return JobSettings(job=job, pool=pool, config=CONFIGS[job.model])


@dataclass(frozen=True)
class ServiceSettings:
    """A validated inference service on its pool: the replica counts of its two tracks."""

    service: InferenceService
    pool: NodePool

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


def service_settings(service: InferenceService, pool: NodePool) -> ServiceSettings:
    return ServiceSettings(service=service, pool=pool)
