"""Problems print as one line, and never with the credentials of a URL in it."""

from __future__ import annotations

from typing import Any

import pytest

from mlstack.stacks.errors import Problem, mask_credentials
from mlstack.stacks.validate import load_platform


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("https://admin:hunter2@minio.lab:9000", "https://***@minio.lab:9000"),
        ("s3://AKIA:secret/key@host/bucket", "s3://***@host/bucket"),
        ("see git+https://ghp_token@github.com/x", "see git+https://***@github.com/x"),
        ("'https://u:p@a' and 'http://v:q@b'", "'https://***@a' and 'http://***@b'"),
        # An "@" later in the URL is masked too: better than printing a password with a "/".
        ("https://minio.lab:9000/a@b", "https://***@b"),
        ("user@example.com", "user@example.com"),
    ],
)
def test_mask_credentials(text: str, masked: str) -> None:
    assert mask_credentials(text) == masked


def test_a_long_value_is_masked_before_it_is_shortened() -> None:
    value = "https://admin:" + "x" * 80 + "@minio.lab:9000"
    line = str(Problem("platform.onprem.storage_endpoint", "bad", "fix it", value))
    assert "xxx" not in line and "***" in line


def test_a_url_with_credentials_is_refused_and_not_echoed(lab_config: dict[str, Any]) -> None:
    lab_config["onprem"]["storage_endpoint"] = "https://admin:hunter2@minio.lab.internal:9000"
    with pytest.raises(Exception) as exc:
        load_platform(lab_config)
    text = str(exc.value)
    assert "platform.onprem.storage_endpoint" in text
    assert "remove the credentials from the URL" in text
    assert "hunter2" not in text and "admin" not in text
