"""Token refresh: 50 concurrent calls across 4 service processes with an expired QuickBooks
access token refresh it exactly once at the stand-in, and the rotated refresh token is the one
kept; `invalid_grant` makes the connection NEEDS_REAUTH with one ConnectionFailed event (and a
new authorization recovers it); the proactive job refreshes a token before it expires."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from integration_service.adapters.keys import LocalKeys
from integration_service.store import credentials as credentials_store
from integration_service.usecases.vault import Vault
from meshdev.embedded import free_port
from meshdev.standins.quickbooks import QuickBooksServer
from meshkit.server import App
from tests.integration.integration.conftest import provider_settings
from tests.integration.integration.support import Client, Start, events, rows
from tickettoken.integration.v1 import events_pb2 as ev
from tickettoken.integration.v1 import integration_pb2 as pb
from tickettoken.integration.v1 import integration_pb2_grpc

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


async def _expire(app: App, connection_id: str) -> None:
    await rows(
        app,
        "UPDATE connections SET token_expires_at = now() - interval '1 minute' WHERE id = $1 "
        "RETURNING id",
        uuid.UUID(connection_id),
    )


async def _stored_refresh_token(app: App, connection_id: str) -> str:
    assert app.kit is not None
    vault = Vault(LocalKeys.dev(app.settings.dev_kek_path))  # type: ignore[attr-defined]
    async with app.kit.db.acquire() as conn:
        sealed = await credentials_store.get(conn, uuid.UUID(connection_id))
    assert sealed is not None
    return (await vault.open_sealed(sealed)).refresh_token.reveal()


async def test_fifty_calls_in_four_processes_refresh_once(
    start_integration: Start,
    connect: Any,
    quickbooks: QuickBooksServer,
    postgres_url: str,
    redis_url: str,
    dev_dir: Path,
) -> None:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    app = await start_integration(db_schema=schema)
    async with connect(app) as client:
        connection = await client.dance(pb.PROVIDER_QUICKBOOKS)
        md = client.md()
    first_refresh_token = await _stored_refresh_token(app, connection.id)
    quickbooks.clock.advance(3700)  # the access token expired at Intuit too
    await _expire(app, connection.id)

    settings = provider_settings(quickbooks=quickbooks)
    env = {
        **os.environ,
        "APP_ENV": "test",
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        "DB_SCHEMA": schema,
        "GUARD_KEY_PREFIX": app.settings.guard_key_prefix,
        "DEV_DIR": str(dev_dir),
        "OPS_PORT": "0",
        "HTTP_PORT": "0",
        "LOG_LEVEL": "WARNING",
        "OAUTHLIB_INSECURE_TRANSPORT": "1",
        **{k.upper(): str(v) for k, v in settings.items()},
    }
    ports = [free_port() for _ in range(4)]
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "integration_service",
            env={**env, "GRPC_PORT": str(port)},
            stderr=asyncio.subprocess.DEVNULL,
        )
        for port in ports
    ]
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for port in ports]
    try:
        stubs = [integration_pb2_grpc.IntegrationServiceStub(c) for c in channels]
        for stub in stubs:  # every process up before the burst
            await stub.GetConnection(
                pb.GetConnectionRequest(connection_id=connection.id),
                metadata=md,
                wait_for_ready=True,
                timeout=60,
            )
        answers = await asyncio.gather(
            *(
                stubs[i % 4].TestConnection(
                    pb.TestConnectionRequest(connection_id=connection.id), metadata=md, timeout=60
                )
                for i in range(50)
            )
        )
    finally:
        for channel in channels:
            await channel.close()
        for process in processes:
            process.kill()
            await process.wait()
    assert [a.ok for a in answers] == [True] * 50, {a.error_code for a in answers}
    assert quickbooks.stats.calls["oauth.refresh"] == 1
    [authorization] = quickbooks.authorizations.values()
    kept = await _stored_refresh_token(app, connection.id)
    assert kept == authorization.latest_refresh and kept != first_refresh_token
    audit = await rows(
        app, "SELECT count(*) AS n FROM credential_audit WHERE purpose = 'token_refresh'"
    )
    assert audit[0]["n"] == 1


async def test_invalid_grant_needs_reauth_then_recovers(
    client: Client, quickbooks: QuickBooksServer
) -> None:
    connection = await client.dance(pb.PROVIDER_QUICKBOOKS)
    [authorization] = quickbooks.authorizations.values()
    quickbooks.revoke_authorization(authorization)  # the company disconnected the app
    await _expire(client.app, connection.id)
    tests = [
        await client.stub.TestConnection(
            pb.TestConnectionRequest(connection_id=connection.id), metadata=client.md()
        )
        for _ in range(3)
    ]
    assert not any(t.ok for t in tests)
    assert tests[-1].connection.status == pb.CONNECTION_STATUS_NEEDS_REAUTH
    assert tests[-1].connection.last_error_code == "invalid_grant"
    assert quickbooks.stats.calls["oauth.refresh"] == 1  # then nothing more is tried
    [failed] = await events(client.app, ev.ConnectionFailed)
    assert failed.connection_id == connection.id and failed.error_code == "invalid_grant"
    assert failed.detected_by == "token_refresh"
    assert failed.status == pb.CONNECTION_STATUS_NEEDS_REAUTH
    assert client.app.kit is not None
    refused = client.app.kit.registry.get_sample_value(
        "integration_token_refreshes_total", {"provider": "quickbooks", "outcome": "refused"}
    )
    assert refused == 1

    again = await client.dance(pb.PROVIDER_QUICKBOOKS)
    assert again.id == connection.id and again.status == pb.CONNECTION_STATUS_CONNECTED
    [recovered] = await events(client.app, ev.ConnectionRecovered)
    assert recovered.previous_status == pb.CONNECTION_STATUS_NEEDS_REAUTH
    assert len(await events(client.app, ev.ConnectionFailed)) == 1


async def test_the_proactive_job_refreshes_before_expiry(
    start_integration: Start, connect: Any, quickbooks: QuickBooksServer
) -> None:
    app = await start_integration(integration_refresh_interval_s=0.1)
    async with connect(app) as client:
        connection = await client.dance(pb.PROVIDER_QUICKBOOKS)
    await rows(
        app,
        "UPDATE connections SET token_expires_at = now() + interval '5 minutes', "
        "refresh_due_at = now() WHERE id = $1 RETURNING id",
        uuid.UUID(connection.id),
    )
    for _ in range(100):
        if quickbooks.stats.calls["oauth.refresh"]:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # a few more rounds of the job: nothing more is due
    assert quickbooks.stats.calls["oauth.refresh"] == 1
    [row] = await rows(
        app,
        "SELECT token_expires_at > now() + interval '30 minutes' AS renewed FROM connections",
    )
    assert row["renewed"]


async def test_a_token_refused_before_its_expiry_is_refreshed_once_and_the_call_retried(
    client: Client, quickbooks: QuickBooksServer
) -> None:
    connection = await client.dance(pb.PROVIDER_QUICKBOOKS)
    quickbooks.clock.advance(3700)  # expired at Intuit, while we still hold it for valid
    tested = await client.stub.TestConnection(
        pb.TestConnectionRequest(connection_id=connection.id), metadata=client.md()
    )
    assert tested.ok and tested.connection.status == pb.CONNECTION_STATUS_CONNECTED
    assert quickbooks.stats.calls["oauth.refresh"] == 1
    assert await events(client.app, ev.ConnectionFailed) == []
