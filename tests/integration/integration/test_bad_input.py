"""Bad input to every RPC that stores something → INVALID_ARGUMENT with field violations, and
nothing stored: every table of the schema reads the same afterwards, no OAuth state is kept in
Redis and no provider was called."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from meshdev.standins.quickbooks import QuickBooksServer
from meshdev.standins.square import SquareServer
from meshdev.testing.rpc import violations
from meshkit.server import App
from tests.integration.integration.support import VENUE, Client, key, rows
from tickettoken.common.v1 import common_pb2
from tickettoken.integration.v1 import integration_pb2 as pb

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


async def _fingerprint(app: App) -> dict[str, str]:
    tables = await rows(
        app,
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
        "AND tablename <> 'schema_migrations'",
    )
    found = {}
    for t in tables:
        name = t["tablename"]
        [row] = await rows(
            app, f"SELECT md5(coalesce(string_agg(md5(x::text), ''), '')) AS h FROM \"{name}\" x"
        )
        found[name] = row["h"]
    return found


async def test_bad_requests_are_refused_and_change_nothing(
    client: Client, square: SquareServer, quickbooks: QuickBooksServer
) -> None:
    connection = await client.dance(pb.PROVIDER_QUICKBOOKS)
    assert client.app.kit is not None
    redis = client.app.kit.redis
    states_before = len(await redis.keys("*oauth-state*"))
    before = await _fingerprint(client.app)
    calls_before = (dict(square.stats.calls), dict(quickbooks.stats.calls))
    md = client.md()
    bad: list[tuple[str, Any]] = [
        ("StartOAuth", pb.StartOAuthRequest(idempotency_key="nope", venue_id=VENUE,
                                            provider=pb.PROVIDER_SQUARE,
                                            redirect_uri="https://a.example/cb")),
        ("StartOAuth", pb.StartOAuthRequest(idempotency_key=key(), venue_id=VENUE,
                                            provider=pb.PROVIDER_SQUARE, redirect_uri="")),
        ("StartOAuth", pb.StartOAuthRequest(idempotency_key=key(), venue_id=VENUE,
                                            provider=pb.PROVIDER_SQUARE,
                                            redirect_uri="https://admin.tickettoken.test/x")),
        ("StartOAuth", pb.StartOAuthRequest(idempotency_key=key(), venue_id=VENUE,
                                            provider=pb.PROVIDER_SQUARE, scopes=["ROOT"],
                                            redirect_uri="https://admin.tickettoken.test/"
                                            "integrations/callback")),
        ("CompleteOAuth", pb.CompleteOAuthRequest(idempotency_key=key(), state="",
                                                  code="c")),
        ("CompleteOAuth", pb.CompleteOAuthRequest(idempotency_key=key(), state="x" * 43,
                                                  code="c")),
        ("ConnectWithApiKey", pb.ConnectWithApiKeyRequest(idempotency_key=key(),
                                                          venue_id=VENUE,
                                                          provider=pb.PROVIDER_STRIPE,
                                                          api_key="")),
        ("ConnectWithApiKey", pb.ConnectWithApiKeyRequest(idempotency_key=key(),
                                                          venue_id=VENUE,
                                                          provider=pb.PROVIDER_STRIPE,
                                                          api_key="sk_live_x")),
        ("Disconnect", pb.DisconnectRequest(idempotency_key=key(), connection_id="42")),
        ("TestConnection", pb.TestConnectionRequest(connection_id="")),
        ("HandleProviderWebhook", pb.HandleProviderWebhookRequest(
            webhook=common_pb2.ProviderWebhook(provider="sendgrid", payload=b"{}"))),
        ("HandleProviderWebhook", pb.HandleProviderWebhookRequest(
            webhook=common_pb2.ProviderWebhook(provider="quickbooks", payload=b"[]",
                                               headers={"intuit-signature": "AAAA"}))),
    ]  # fmt: skip
    for method, request in bad:
        metadata = client.admin() if method == "HandleProviderWebhook" else md
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await getattr(client.stub, method)(request, metadata=metadata)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, info.value)
        assert violations(info.value), method
    assert await _fingerprint(client.app) == before
    assert len(await redis.keys("*oauth-state*")) == states_before
    assert (dict(square.stats.calls), dict(quickbooks.stats.calls)) == calls_before
    assert connection.id
