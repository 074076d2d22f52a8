"""The OAuth dance per provider through the real SDKs and stand-ins over HTTP (Square with
PKCE, QuickBooks with its realm, Mailchimp with its datacenter from the metadata endpoint), the
HTTP callback, and every refusal of a state: replayed, expired, forged, another venue's — each a
clear error with nothing stored."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import httpx
import pytest

from meshdev.standins.mailchimp import MailchimpServer
from meshdev.standins.quickbooks import DEV_REALM_ID, QuickBooksServer
from meshdev.standins.square import DEV_MERCHANT_ID, SquareServer
from meshdev.testing.rpc import reason
from tests.integration.integration.support import (
    OTHER_VENUE,
    VENUE,
    Client,
    Start,
    consent,
    count,
    events,
    rows,
)
from tickettoken.integration.v1 import events_pb2 as ev
from tickettoken.integration.v1 import integration_pb2 as pb

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


async def test_square_dance_with_pkce_tests_and_reads_back(
    client: Client, square: SquareServer
) -> None:
    started = await client.start(pb.PROVIDER_SQUARE)
    query = parse_qs(urlsplit(started.authorization_url).query)
    assert query["state"] == [started.state] and query["code_challenge_method"] == ["S256"]
    assert started.expires_at.seconds > 0
    params = await consent(started.authorization_url)
    connection = (await client.complete(started.state, params)).connection
    assert connection.status == pb.CONNECTION_STATUS_CONNECTED
    assert connection.external_account_id == DEV_MERCHANT_ID
    assert connection.external_account_name == "Meshdev Venue"
    assert connection.venue_id == VENUE and connection.token_expires_at.seconds > 0
    assert square.stats.calls["oauth.code_exchange"] == 1

    tested = await client.stub.TestConnection(
        pb.TestConnectionRequest(connection_id=connection.id), metadata=client.md()
    )
    assert tested.ok and tested.connection.last_tested_at.seconds > 0
    got = await client.stub.GetConnection(
        pb.GetConnectionRequest(connection_id=connection.id), metadata=client.md()
    )
    assert got.connection.id == connection.id
    # Nothing secret in the row or the answer; the sealed credential has its own data key.
    [row] = await rows(client.app, "SELECT * FROM connections")
    text = repr(row) + repr(got)
    assert "EAAA" not in text and "EQAA" not in text
    [sealed] = await rows(client.app, "SELECT * FROM credentials")
    assert b"EAAA" not in sealed["ciphertext"] and sealed["kek_version"] == "dev-1"
    audit = await rows(client.app, "SELECT actor, purpose FROM credential_audit")
    assert {"actor": "venue-admin-1", "purpose": "test_connection"} in audit


async def test_quickbooks_dance_keeps_the_realm(
    client: Client, quickbooks: QuickBooksServer
) -> None:
    connection = await client.dance(pb.PROVIDER_QUICKBOOKS)
    assert connection.external_account_id == DEV_REALM_ID
    assert connection.external_account_name
    tested = await client.stub.TestConnection(
        pb.TestConnectionRequest(connection_id=connection.id), metadata=client.md()
    )
    assert tested.ok, tested.error_message


async def test_mailchimp_dance_finds_the_datacenter(
    client: Client, mailchimp: MailchimpServer
) -> None:
    connection = await client.dance(pb.PROVIDER_MAILCHIMP)
    assert connection.status == pb.CONNECTION_STATUS_CONNECTED
    assert not connection.HasField("token_expires_at")  # Mailchimp tokens never expire
    [row] = await rows(client.app, "SELECT api_base, webhook_secret_digest FROM connections")
    assert row["api_base"] == mailchimp.url and len(row["webhook_secret_digest"]) == 32
    tested = await client.stub.TestConnection(
        pb.TestConnectionRequest(connection_id=connection.id), metadata=client.md()
    )
    assert tested.ok, tested.error_message


async def test_the_http_callback_completes_for_whoever_started(
    client: Client, square: SquareServer
) -> None:
    callback = client.app.kit.http.local_url("/oauth/callback")  # type: ignore[union-attr]
    started = await client.start(pb.PROVIDER_SQUARE, redirect=callback)
    async with httpx.AsyncClient() as http:
        answer = await http.get(started.authorization_url, follow_redirects=True)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "CONNECTED" and body["venue_id"] == VENUE
        again = await http.get(str(answer.url))  # the browser reloads: the state is spent
        assert again.status_code == 400 and again.json()["error"] == "OAUTH_STATE_ALREADY_USED"
    [row] = await rows(client.app, "SELECT created_by FROM connections")
    assert row["created_by"] == "venue-admin-1"


async def _refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def test_replayed_forged_other_venue_and_denied_states_store_nothing(
    client: Client, square: SquareServer
) -> None:
    started = await client.start(pb.PROVIDER_SQUARE)
    params = await consent(started.authorization_url)

    forged = base64.urlsafe_b64encode(hashlib.sha256(b"x").digest()).rstrip(b"=").decode()
    err = await _refused(client.complete(forged, params))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason(err) == "OAUTH_STATE_UNKNOWN"
    err = await _refused(client.complete("not-a-state", params))
    assert reason(err) == "OAUTH_STATE_UNKNOWN"

    # A venue admin of another venue (and the same admin's colleague) cannot complete it.
    other = client.md("venue-admin-2", (OTHER_VENUE,))
    err = await _refused(client.complete(started.state, params, md=other))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason(err) == "OAUTH_STATE_OTHER_VENUE"
    colleague = client.md("venue-admin-3", (VENUE,))
    err = await _refused(client.complete(started.state, params, md=colleague))
    assert reason(err) == "OAUTH_STATE_OTHER_VENUE"
    assert await count(client.app, "connections") == 0
    assert square.stats.calls["oauth.code_exchange"] == 0

    done = await client.complete(started.state, params)  # still the starter's to complete
    assert done.connection.status == pb.CONNECTION_STATUS_CONNECTED
    err = await _refused(client.complete(started.state, params))  # a replay
    assert reason(err) == "OAUTH_STATE_ALREADY_USED"
    assert square.stats.calls["oauth.code_exchange"] == 1
    assert await count(client.app, "connections") == 1

    denied = await client.start(pb.PROVIDER_SQUARE)
    answer = await consent(denied.authorization_url, deny="1")
    err = await _refused(client.complete(denied.state, answer))
    assert reason(err) == "OAUTH_DENIED"
    assert (
        await count(client.app, "connections") == 1 and await count(client.app, "credentials") == 1
    )


async def test_an_expired_state_is_refused(start_integration: Start, connect: Any) -> None:
    app = await start_integration(integration_oauth_state_ttl_s=0.3)
    async with connect(app) as c:
        started = await c.start(pb.PROVIDER_QUICKBOOKS)
        params = await consent(started.authorization_url)
        await asyncio.sleep(0.5)
        err = await _refused(c.complete(started.state, params))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert reason(err) == "OAUTH_STATE_EXPIRED"
    assert await count(app, "connections") == 0


async def test_start_refusals(client: Client) -> None:
    err = await _refused(client.start(pb.PROVIDER_SQUARE, venue=OTHER_VENUE))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await _refused(client.start(pb.PROVIDER_SQUARE, redirect="https://evil.example/cb"))
    assert reason(err) == "REDIRECT_URI_NOT_ALLOWED"
    err = await _refused(client.start(pb.PROVIDER_STRIPE))
    assert reason(err) == "WRONG_AUTH_TYPE"


async def test_authorizing_again_recovers_the_same_connection(
    client: Client, square: SquareServer
) -> None:
    first = await client.dance(pb.PROVIDER_SQUARE)
    square.revoke_merchant(DEV_MERCHANT_ID)
    tested = await client.stub.TestConnection(
        pb.TestConnectionRequest(connection_id=first.id), metadata=client.md()
    )
    assert not tested.ok
    assert tested.connection.status == pb.CONNECTION_STATUS_NEEDS_REAUTH
    # Square refused the access token: one refresh was tried, and refused too.
    assert square.stats.calls["oauth.refresh"] == 1
    [failed] = await events(client.app, ev.ConnectionFailed)
    assert failed.connection_id == first.id and failed.detected_by == "token_refresh"

    again = await client.dance(pb.PROVIDER_SQUARE)
    assert again.id == first.id and again.status == pb.CONNECTION_STATUS_CONNECTED
    [recovered] = await events(client.app, ev.ConnectionRecovered)
    assert recovered.previous_status == pb.CONNECTION_STATUS_NEEDS_REAUTH
    assert recovered.recovered_by == "oauth"
