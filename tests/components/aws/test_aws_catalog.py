"""The AWS machine table: every instance type mlstack resolves pools to or uses by default, with
the shape the EC2 instance type pages give it."""

from __future__ import annotations

import pytest
from tests_support import machine_samples

from mlstack.components.aws.catalog import MACHINES, family, is_gpu_family
from mlstack.stacks.catalog import ACCELERATORS, MachineType
from mlstack.stacks.schema import AwsConfig

#: Shapes checked against the pages (name, vCPUs, memory GiB, GPUs, accelerator).
SAMPLES = """
g4dn.metal 96 384 8 t4
g5.12xlarge 48 192 4 a10g
g6.xlarge 4 16 1 l4
g6e.xlarge 4 32 1 l40s
g6e.48xlarge 192 1536 8 l40s
p4de.24xlarge 96 1152 8 a100-80gb
p5.48xlarge 192 2048 8 h100-80gb
p5en.48xlarge 192 2048 8 h200
m6i.large 2 8
m6i.2xlarge 8 32
"""


@pytest.mark.parametrize("machine", machine_samples(SAMPLES), ids=lambda m: m.name)
def test_sampled_shapes_match_the_instance_type_pages(machine: MachineType) -> None:
    assert MACHINES[machine.name] == machine


def test_the_default_cpu_and_system_types_are_in_the_table() -> None:
    cfg = AwsConfig(region="us-east-1")
    for itype in (cfg.default_cpu_instance_type, cfg.system_pool.instance_type):
        assert itype in MACHINES and MACHINES[itype].gpus == 0


def test_gpu_types_are_gpu_families_of_known_accelerators_and_cpu_types_are_not() -> None:
    for machine in MACHINES.values():
        assert is_gpu_family(family(machine.name)) == (machine.gpus > 0), machine.name
        assert (machine.accelerator is None) == (machine.gpus == 0), machine.name
        assert machine.accelerator is None or machine.accelerator in ACCELERATORS
        assert machine.vcpus > 0 and machine.memory_gib > 0
