"""ConnectWithApiKey (Stripe restricted keys, checked at the stand-in before anything is
stored), who sees what (venue admins their venues, admins all), listing with pages, and
Disconnect: revoked at the provider, the data key destroyed."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from meshdev.standins.square import DEV_MERCHANT_ID, SquareServer
from meshdev.testing.rpc import reason
from tests.integration.integration.support import OTHER_VENUE, VENUE, Client, count, key, rows
from tickettoken.integration.v1 import integration_pb2 as pb

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

RESTRICTED = "rk_test_meshdev_venue_catalogue_0001"


def api_key_request(venue: str = VENUE, api_key: str = RESTRICTED, **settings: str) -> Any:
    return pb.ConnectWithApiKeyRequest(
        idempotency_key=key(),
        venue_id=venue,
        provider=pb.PROVIDER_STRIPE,
        api_key=api_key,
        settings=settings,
    )


async def _refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def test_stripe_restricted_key_connects_masked_and_tests(client: Client) -> None:
    request = api_key_request(webhook_secret="whsec_meshdev_endpoint", audience="x")
    made = (await client.stub.ConnectWithApiKey(request, metadata=client.md())).connection
    assert made.auth_type == pb.AUTH_TYPE_API_KEY and made.credential_hint == "0001"
    replay = await client.stub.ConnectWithApiKey(request, metadata=client.md())
    assert replay.connection.id == made.id  # the same idempotency key: the stored answer
    [row] = await rows(client.app, "SELECT settings::text AS s FROM connections")
    assert "whsec" not in row["s"] and "audience" in row["s"]  # the secret went to the vault
    tested = await client.stub.TestConnection(
        pb.TestConnectionRequest(connection_id=made.id), metadata=client.md()
    )
    assert tested.ok
    # Connecting again (a rotated key) replaces the credential of the same connection.
    again = await client.stub.ConnectWithApiKey(
        api_key_request(api_key="rk_test_meshdev_venue_catalogue_0002"), metadata=client.md()
    )
    assert again.connection.id == made.id and again.connection.credential_hint == "0002"
    assert await count(client.app, "connections") == 1


async def test_bad_keys_are_refused_and_nothing_is_stored(client: Client) -> None:
    err = await _refused(
        client.stub.ConnectWithApiKey(api_key_request(api_key="sk_test_x"), metadata=client.md())
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and reason(err) == "API_KEY_REFUSED"
    err = await _refused(
        client.stub.ConnectWithApiKey(
            api_key_request(webhook_secret="not-a-whsec"), metadata=client.md()
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    wrong = pb.ConnectWithApiKeyRequest(
        idempotency_key=key(), venue_id=VENUE, provider=pb.PROVIDER_SQUARE, api_key="x" * 20
    )
    err = await _refused(client.stub.ConnectWithApiKey(wrong, metadata=client.md()))
    assert reason(err) == "WRONG_AUTH_TYPE"
    assert await count(client.app, "connections") == 0
    assert await count(client.app, "credentials") == 0


async def test_venue_admins_see_only_their_venues_admins_see_all(client: Client) -> None:
    mine = []
    for _ in range(3):
        request = api_key_request()
        mine.append((await client.stub.ConnectWithApiKey(request, metadata=client.md())).connection)
        await client.stub.Disconnect(  # one live Stripe connection per venue account
            pb.DisconnectRequest(idempotency_key=key(), connection_id=mine[-1].id),
            metadata=client.md(),
        )
    theirs_md = client.md("venue-admin-2", (OTHER_VENUE,))
    theirs = (
        await client.stub.ConnectWithApiKey(api_key_request(OTHER_VENUE), metadata=theirs_md)
    ).connection

    err = await _refused(
        client.stub.GetConnection(
            pb.GetConnectionRequest(connection_id=theirs.id), metadata=client.md()
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    for call in (
        client.stub.TestConnection(
            pb.TestConnectionRequest(connection_id=theirs.id), metadata=client.md()
        ),
        client.stub.Disconnect(
            pb.DisconnectRequest(idempotency_key=key(), connection_id=theirs.id),
            metadata=client.md(),
        ),
    ):
        assert (await _refused(call)).code() == grpc.StatusCode.NOT_FOUND
    err = await _refused(
        client.stub.ConnectWithApiKey(api_key_request(OTHER_VENUE), metadata=client.md())
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED

    seen: list[str] = []
    token = ""
    while True:
        page = await client.stub.ListConnections(
            pb.ListConnectionsRequest(page_size=2, page_token=token), metadata=client.md()
        )
        seen += [c.id for c in page.connections]
        token = page.next_page_token
        if not token:
            break
    assert seen == [c.id for c in mine]
    err = await _refused(
        client.stub.ListConnections(
            pb.ListConnectionsRequest(venue_id=OTHER_VENUE), metadata=client.md()
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    everything = await client.stub.ListConnections(
        pb.ListConnectionsRequest(), metadata=client.admin()
    )
    assert len(everything.connections) == 4
    live = await client.stub.ListConnections(
        pb.ListConnectionsRequest(statuses=[pb.CONNECTION_STATUS_CONNECTED]),
        metadata=client.admin(),
    )
    assert [c.id for c in live.connections] == [theirs.id]
    expired = await client.stub.ListConnections(
        pb.ListConnectionsRequest(statuses=[pb.CONNECTION_STATUS_EXPIRED]), metadata=client.admin()
    )
    assert list(expired.connections) == []  # a state this version never sets


async def test_disconnect_revokes_at_square_and_destroys_the_data_key(
    client: Client, square: SquareServer
) -> None:
    connection = await client.dance(pb.PROVIDER_SQUARE)
    done = await client.stub.Disconnect(
        pb.DisconnectRequest(
            idempotency_key=key(), connection_id=connection.id, revoke_at_provider=True
        ),
        metadata=client.md(),
    )
    assert done.connection.status == pb.CONNECTION_STATUS_DISCONNECTED
    assert square.stats.calls["oauth.revoke"] == 1
    assert all(
        g.revoked
        for g in square.access_tokens.values()
        if g.merchant_id == DEV_MERCHANT_ID and g.expires_at is not None
    )
    assert await count(client.app, "credentials") == 0  # wrapped data key and ciphertext gone
    tested = await client.stub.TestConnection(
        pb.TestConnectionRequest(connection_id=connection.id), metadata=client.md()
    )
    assert not tested.ok and tested.error_code == "disconnected"
    audit = await rows(client.app, "SELECT purpose FROM credential_audit")
    assert {"purpose": "disconnect_revoke"} in audit
