"""The vault against AWS KMS (moto's server mode, reached over HTTP by boto3): a round trip
through the service, a flipped byte in the ciphertext or the associated data refused, and key
rotation (integrationctl rotate-keys) while 20 readers read: no read fails, and afterwards no
credential opens under the old key."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from dataclasses import replace
from typing import Any

import boto3
import pytest

from integration_service.adapters.keys import KmsKeys
from integration_service.domain.errors import CredentialCorrupt, CredentialUnavailable
from integration_service.domain.model import AuthKind, Credential, Secret
from integration_service.store import credentials as credentials_store
from integration_service.usecases.vault import Vault
from meshdev.testing.kms import KmsEndpoint
from meshkit.server import App
from tests.integration.integration.support import Client, Start, key, rows
from tickettoken.integration.v1 import integration_pb2 as pb

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class Direct:
    """A pass-through guard for opening credentials from the test itself."""

    async def call(self, operation: str, fn: Any, **_: Any) -> Any:
        return await fn()


@pytest.fixture
def kms(kms_endpoint: KmsEndpoint, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", kms_endpoint.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", kms_endpoint.secret_access_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", kms_endpoint.region)
    return boto3.client("kms", **kms_endpoint.client_kwargs())


def kms_settings(endpoint: KmsEndpoint, versions: dict[str, str], active: str) -> dict[str, Any]:
    return {
        "integration_kek_backend": "kms",
        "integration_kek_versions": ",".join(f"{v}={k}" for v, k in versions.items()),
        "integration_kek_active": active,
        "integration_kms_endpoint_url": endpoint.url,
        "integration_kms_region": endpoint.region,
    }


def keys_for(endpoint: KmsEndpoint, versions: dict[str, str], active: str) -> KmsKeys:
    return KmsKeys(
        versions, Direct(), active=active, endpoint_url=endpoint.url, region=endpoint.region
    )


async def _sealed_rows(app: App) -> list[Any]:
    assert app.kit is not None
    async with app.kit.db.acquire() as conn:
        found = await rows(app, "SELECT connection_id FROM credentials ORDER BY connection_id")
        return [await credentials_store.get(conn, r["connection_id"]) for r in found]


async def test_kms_round_trip_and_tampering_refused(
    start_integration: Start, connect: Any, kms: Any, kms_endpoint: KmsEndpoint
) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    versions = {"kms-1": key_id}
    app = await start_integration(**kms_settings(kms_endpoint, versions, "kms-1"))
    async with connect(app) as client:
        made = await client.stub.ConnectWithApiKey(
            pb.ConnectWithApiKeyRequest(
                idempotency_key=key(),
                venue_id="venue-nash",
                provider=pb.PROVIDER_STRIPE,
                api_key="rk_test_meshdev_kms_round_trip",
            ),
            metadata=client.md(),
        )
        tested = await client.stub.TestConnection(
            pb.TestConnectionRequest(connection_id=made.connection.id), metadata=client.md()
        )
        assert tested.ok
    [sealed] = await _sealed_rows(app)
    assert sealed.kek_version == "kms-1" and key_id.encode() in sealed.wrapped_key  # moto blob
    vault = Vault(keys_for(kms_endpoint, versions, "kms-1"))
    opened = await vault.open_sealed(sealed)
    assert opened.api_key.reveal() == "rk_test_meshdev_kms_round_trip"
    flipped = bytearray(sealed.ciphertext)
    flipped[len(flipped) // 2] ^= 0x01
    with pytest.raises(CredentialCorrupt):
        await vault.open_sealed(replace(sealed, ciphertext=bytes(flipped)))
    with pytest.raises(CredentialCorrupt):  # associated data: another connection
        await vault.open_sealed(replace(sealed, connection_id=uuid.uuid4()))
    with pytest.raises((CredentialCorrupt, CredentialUnavailable)):  # the wrapped key's context
        await vault.open_sealed(replace(sealed, provider="square"))


async def test_rotation_while_20_readers_read(
    start_integration: Start,
    connect: Any,
    kms: Any,
    kms_endpoint: KmsEndpoint,
    postgres_url: str,
    redis_url: str,
) -> None:
    old = kms.create_key()["KeyMetadata"]["KeyId"]
    new = kms.create_key()["KeyMetadata"]["KeyId"]
    schema = f"t_{uuid.uuid4().hex[:12]}"
    before = await start_integration(
        db_schema=schema, **kms_settings(kms_endpoint, {"v1": old}, "v1")
    )
    ids: list[str] = []
    async with connect(before) as client:
        for i in range(12):
            made = await client.stub.ConnectWithApiKey(
                pb.ConnectWithApiKeyRequest(
                    idempotency_key=key(),
                    venue_id=f"venue-{i}",
                    provider=pb.PROVIDER_STRIPE,
                    api_key=f"rk_test_meshdev_rotation_{i:04d}",
                ),
                metadata=client.md("ops", (), admin=True),
            )
            ids.append(made.connection.id)
    # Every replica learns the new version first (the old one still listed), then rotate.
    both = kms_settings(kms_endpoint, {"v1": old, "v2": new}, "v2")
    app = await start_integration(db_schema=schema, **both)
    stop = asyncio.Event()
    reads: list[bool] = []

    async def reader(client: Client, n: int) -> None:
        while not stop.is_set() or len(reads) < 40:
            answer = await client.stub.TestConnection(
                pb.TestConnectionRequest(connection_id=ids[n % len(ids)]),
                metadata=client.admin(),
            )
            reads.append(answer.ok)
            n += 1

    env = {
        **os.environ,
        "APP_ENV": "test",
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        "DB_SCHEMA": schema,
        **{k.upper(): str(v) for k, v in both.items()},
    }
    async with connect(app) as client:
        readers = [asyncio.create_task(reader(client, n)) for n in range(20)]
        await asyncio.sleep(0.2)
        rotated = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "integration_service.integrationctl", "rotate-keys"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        stop.set()
        await asyncio.gather(*readers)
    assert rotated.returncode == 0, rotated.stderr[-2000:]
    assert '"remaining": 0' in rotated.stdout and '"rewrapped": 12' in rotated.stdout
    assert reads and all(reads), f"{reads.count(False)} failed reads of {len(reads)}"

    sealed_all = await _sealed_rows(app)
    assert {s.kek_version for s in sealed_all} == {"v2"} and len(sealed_all) == 12
    new_only = Vault(keys_for(kms_endpoint, {"v2": new}, "v2"))
    for sealed in sealed_all:
        assert (await new_only.open_sealed(sealed)).kind is AuthKind.API_KEY
        # Nothing opens under the old key any more: its wrapped key is the new key's blob (KMS
        # refuses to decrypt it with the old key id).
        with pytest.raises((CredentialCorrupt, CredentialUnavailable)):
            await Vault(keys_for(kms_endpoint, {"v2": old}, "v2")).open_sealed(sealed)
    assert Credential(AuthKind.API_KEY, api_key=Secret("x")).bearer == "x"
