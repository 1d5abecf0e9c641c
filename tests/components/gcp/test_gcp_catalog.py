"""The GCP machine table: every machine type mlstack resolves pools to or uses by default, with
the shape Compute Engine's machine type pages give it, and the GKE name of each GPU."""

from __future__ import annotations

import pytest
from tests_support import machine_samples

from mlstack.components.gcp.catalog import ACCELERATOR_TYPES, GPU_SERIES, MACHINES, series
from mlstack.stacks.catalog import ACCELERATORS, MachineType
from mlstack.stacks.schema import GcpConfig

#: Shapes checked against the pages (name, vCPUs, memory GiB, GPUs, accelerator).
SAMPLES = """
n1-standard-8 8 30 1 t4
g2-standard-24 24 96 2 l4
g2-standard-96 96 384 8 l4
a2-megagpu-16g 96 1360 16 a100-40gb
a2-ultragpu-1g 12 170 1 a100-80gb
a3-highgpu-1g 26 234 1 h100-80gb
a3-highgpu-8g 208 1872 8 h100-80gb
a3-ultragpu-8g 224 2952 8 h200
e2-standard-4 4 16
n2-standard-8 8 32
"""


@pytest.mark.parametrize("machine", machine_samples(SAMPLES), ids=lambda m: m.name)
def test_sampled_shapes_match_the_machine_type_pages(machine: MachineType) -> None:
    assert MACHINES[machine.name] == machine


def test_the_default_cpu_and_system_types_are_in_the_table() -> None:
    cfg = GcpConfig(project="acme-ml-dev", region="us-central1")
    for mtype in (cfg.default_cpu_machine_type, cfg.system_pool.machine_type):
        assert mtype in MACHINES and MACHINES[mtype].gpus == 0


def test_gpu_machines_are_gpu_series_or_n1_with_t4s() -> None:
    for machine in MACHINES.values():
        assert (machine.accelerator is None) == (machine.gpus == 0), machine.name
        if machine.gpus:
            assert series(machine.name) in GPU_SERIES or machine.accelerator == "t4"
        else:
            assert series(machine.name) not in GPU_SERIES, machine.name


def test_every_accelerator_gcp_carries_has_its_gke_name_and_only_those() -> None:
    carried = {m.accelerator for m in MACHINES.values() if m.accelerator is not None}
    assert carried == set(ACCELERATOR_TYPES)
    assert carried <= set(ACCELERATORS)
