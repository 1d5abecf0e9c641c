"""The cloud backend registry: known clouds, clouds marked unavailable, unknown names; and what
every backend declares for the shared code (unsupported features, internal load balancers)."""

from __future__ import annotations

import pytest

from mlstack.components import backend as backend_module
from mlstack.components.aws.backend import AwsBackend
from mlstack.components.backend import (
    BackendUnavailableError,
    CloudBackend,
    available_clouds,
    get_backend,
)
from mlstack.components.features import Feature
from mlstack.components.gcp.backend import GcpBackend
from mlstack.components.onprem.backend import OnPremBackend
from mlstack.stacks.catalog import CLOUDS, Machine


def test_onprem_is_available() -> None:
    assert "onprem" in available_clouds()
    backend = get_backend("onprem")
    assert backend is OnPremBackend
    assert issubclass(backend, CloudBackend)
    assert backend.cloud == "onprem"


def test_aws_is_available() -> None:
    assert "aws" in available_clouds()
    assert get_backend("aws") is AwsBackend
    assert AwsBackend.cloud == "aws"


def test_gcp_is_available() -> None:
    assert "gcp" in available_clouds()
    assert get_backend("gcp") is GcpBackend
    assert GcpBackend.cloud == "gcp"
    # GKE installs the driver and runs its own device plugin.
    assert GcpBackend.needs_gpu_device_plugin is False


def test_a_cloud_marked_unavailable_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(backend_module._BACKENDS, "gcp")
    monkeypatch.setitem(backend_module._UNAVAILABLE, "gcp", "not in this release (issue #9)")
    with pytest.raises(BackendUnavailableError) as exc:
        get_backend("gcp")
    assert str(exc.value) == "not in this release (issue #9)"
    assert "gcp" not in available_clouds()


def test_an_unknown_cloud_lists_the_available_ones() -> None:
    with pytest.raises(LookupError) as exc:
        get_backend("azure")
    assert not isinstance(exc.value, BackendUnavailableError)
    assert "'azure'" in str(exc.value)
    assert all(cloud in str(exc.value) for cloud in available_clouds())


def test_every_cloud_of_the_schema_is_either_available_or_explained() -> None:
    for cloud in CLOUDS:
        try:
            assert get_backend(cloud).cloud == cloud
        except BackendUnavailableError as exc:
            assert str(exc).strip()


@pytest.mark.parametrize("cloud", CLOUDS)
def test_every_unsupported_feature_is_a_feature_with_its_reason(cloud: str) -> None:
    for feature, reason in get_backend(cloud).unsupported.items():
        assert isinstance(feature, Feature), feature
        assert reason.strip(), feature


def test_only_onprem_lacks_autoscaling_and_spot() -> None:
    assert not OnPremBackend.supports(Feature.AUTOSCALING)
    assert not OnPremBackend.supports(Feature.SPOT_CAPACITY)
    assert AwsBackend.supports(Feature.AUTOSCALING) and AwsBackend.supports(Feature.SPOT_CAPACITY)
    assert GcpBackend.supports(Feature.AUTOSCALING) and GcpBackend.supports(Feature.SPOT_CAPACITY)


@pytest.mark.parametrize("cloud", CLOUDS)
def test_every_cloud_says_what_keeps_a_load_balancer_internal(cloud: str) -> None:
    annotations = get_backend(cloud).internal_lb_annotations
    assert annotations and all(k and v for k, v in annotations.items())


def test_onprem_has_no_machine_table_and_takes_any_known_accelerator() -> None:
    assert OnPremBackend.machines == {}
    assert OnPremBackend.resolve_gpu_machine("h100-80gb", None, 8) == Machine(None, 8)
