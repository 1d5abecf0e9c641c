"""The cloud backend registry: known clouds, clouds not in this release, unknown names."""

from __future__ import annotations

import pytest

from components.aws.backend import AwsBackend
from components.backend import BackendUnavailableError, CloudBackend, available_clouds, get_backend
from components.onprem.backend import OnPremBackend
from stacks.catalog import CLOUDS


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


@pytest.mark.parametrize(("cloud", "issue"), [("gcp", "issue #4")])
def test_gcp_is_unavailable_with_the_reason(cloud: str, issue: str) -> None:
    with pytest.raises(BackendUnavailableError) as exc:
        get_backend(cloud)
    assert "not in this release" in str(exc.value)
    assert issue in str(exc.value)
    assert cloud not in available_clouds()


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
