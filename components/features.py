"""Features of the shared config schema that a cloud may lack.

Each backend declares the ones its cloud cannot provide, with the reason
(`CloudBackend.unsupported`); the config checks refuse a config that needs one and say why.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from mlstack.stacks.schema import Capacity


class Feature(StrEnum):
    """Features of the shared schema a cloud may lack (declared in CloudBackend.unsupported)."""

    SPOT_CAPACITY = "capacity.spot"
    RESERVED_CAPACITY = "capacity.reserved"
    #: Pools the backend creates and scales (min_nodes); without it pools are existing nodes
    #: the config lists by name.
    AUTOSCALING = "autoscaling"


#: The feature each pool capacity needs (on-demand needs none).
CAPACITY_FEATURES: Mapping[Capacity, Feature] = {
    Capacity.SPOT: Feature.SPOT_CAPACITY,
    Capacity.RESERVED: Feature.RESERVED_CAPACITY,
}
