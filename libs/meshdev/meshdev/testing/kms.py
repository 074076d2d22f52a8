"""AWS KMS for tests: moto's server mode (`meshdev.embedded.MotoServer`) on 127.0.0.1, one per
test session, reached over HTTP by boto3 exactly as AWS KMS would be.

    def test_vault(kms_endpoint: KmsEndpoint) -> None:
        kms = boto3.client("kms", **kms_endpoint.client_kwargs())
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]

Keys created by one test stay visible to the next (the server is shared): create your own key
per test rather than listing keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from meshdev.embedded import MotoServer

__all__ = ["KmsEndpoint", "kms_endpoint"]


@dataclass(frozen=True, slots=True)
class KmsEndpoint:
    """Where moto's KMS answers, and the settings a boto3 client needs for it."""

    url: str
    region: str
    access_key_id: str
    secret_access_key: str

    def client_kwargs(self) -> dict[str, Any]:
        """`boto3.client("kms", **kwargs)` pointed at moto."""
        return {
            "endpoint_url": self.url,
            "region_name": self.region,
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
        }


@pytest.fixture(scope="session")
def kms_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsEndpoint]:
    """moto's server mode for the session (started on first use, port 0)."""
    with MotoServer(tmp_path_factory.mktemp("moto")) as server:
        yield KmsEndpoint(
            url=server.url,
            region=server.region,
            access_key_id=server.credentials["aws_access_key_id"],
            secret_access_key=server.credentials["aws_secret_access_key"],
        )
