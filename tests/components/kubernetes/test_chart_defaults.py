"""The add-on charts' recorded placement defaults and Helm's merge of values over them."""

from __future__ import annotations

from mlstack.components.kubernetes import addons
from mlstack.components.kubernetes.chart_defaults import (
    CHART_DEFAULTS,
    effective_placement,
    helm_merge,
    recorded,
)
from mlstack.components.kubernetes.device_plugin import device_plugin_values, gpu_node_affinity
from mlstack.stacks.schema import NodePool


def test_every_pinned_chart_has_its_defaults_recorded_at_its_version() -> None:
    """A version bump in addons.py fails here until the chart's values.yaml at the new tag is
    read and recorded: the placement check would otherwise use another version's defaults."""
    pinned = [c for c in vars(addons).values() if isinstance(c, addons.HelmChart)]
    assert len(pinned) == 5
    for chart in pinned:
        entry = recorded(chart)
        assert entry is not None, f"{chart.chart} {chart.version}: record its defaults"
        assert entry.version in entry.tag, entry


def test_helm_merges_maps_and_replaces_lists_and_scalars() -> None:
    defaults = {"a": {"b": 1, "c": [1, 2]}, "d": "x", "e": {"f": 1}}
    values = {"a": {"c": [3]}, "d": "y", "e": None}
    assert helm_merge(defaults, values) == {"a": {"b": 1, "c": [3]}, "d": "y"}


def test_the_device_plugin_places_exactly_on_gpu_pools() -> None:
    pool = NodePool.model_validate(
        {"name": "a", "kind": "gpu", "accelerator": "l4", "gpus_per_node": 1, "max_nodes": 1}
    )
    entry = CHART_DEFAULTS[(addons.NVIDIA_DEVICE_PLUGIN.chart, addons.NVIDIA_DEVICE_PLUGIN.version)]
    placement = effective_placement(entry, device_plugin_values([pool]))
    # The default three NFD / gpu.present terms are gone: the list was replaced, not extended.
    assert placement.affinity == gpu_node_affinity()
    assert placement.node_selector == {}
    assert placement.tolerations == [{"key": "nvidia.com/gpu", "operator": "Exists"}]


def test_without_values_the_chart_defaults_apply() -> None:
    entry = CHART_DEFAULTS[(addons.NVIDIA_DEVICE_PLUGIN.chart, addons.NVIDIA_DEVICE_PLUGIN.version)]
    placement = effective_placement(entry, {})
    terms = placement.affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert len(terms["nodeSelectorTerms"]) == 3
