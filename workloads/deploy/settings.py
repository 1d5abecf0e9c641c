"""A training job's settings with every default filled in, from its pool and model config.

Plain Python (no Pulumi, no JAX): the config's validation and the manifest builder read the
same numbers from here, so what is checked is what is deployed.
"""

from __future__ import annotations

from dataclasses import dataclass

from stacks.schema import NodePool, TrainingJob
from workloads.train.configs import CONFIGS, TrainConfig

#: The registry repository training images are pushed to (`<registry>/train:<tag>`).
TRAIN_REPOSITORY = "train"


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
