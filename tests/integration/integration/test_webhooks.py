"""Provider webhooks on the HTTP port, as the stand-ins send them, and through
HandleProviderWebhook: for each provider a valid delivery (one ProviderChangeReceived per
connection of the account, in the outbox), a bad signature, a stale one and a replay — the
refusals and the replay change nothing. Mailchimp's URL check (a GET) is answered."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
import pytest

from integration_service.adapters.keys import LocalKeys
from integration_service.domain import webhooks
from integration_service.store import credentials as credentials_store
from integration_service.usecases.vault import Vault
from meshdev.standins.mailchimp import DEV_LIST_ID, MailchimpServer
from meshdev.standins.quickbooks import DEV_REALM_ID, DEV_VERIFIER_TOKEN, QuickBooksServer
from meshdev.standins.square import DEV_MERCHANT_ID, SquareServer
from meshdev.testing.rpc import reason
from meshkit.server import App
from tests.integration.integration.support import Client, count, events, key
from tickettoken.common.v1 import common_pb2
from tickettoken.integration.v1 import events_pb2 as ev
from tickettoken.integration.v1 import integration_pb2 as pb

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
ENDPOINT_SECRET = "whsec_meshdev_test_endpoint"


async def _state(app: App) -> tuple[int, int]:
    return await count(app, "webhook_inbox"), await count(app, "outbox")


async def test_square_valid_bad_stale_replayed(client: Client, square: SquareServer) -> None:
    connection = await client.dance(pb.PROVIDER_SQUARE)
    url = client.app.kit.http.local_url("/webhooks/square")  # type: ignore[union-attr]
    square.webhook_url = url
    data = {"type": "customer", "id": "CUST1", "object": {}}
    delivered = await square.emit("customer.updated", data)
    assert delivered.status == 200
    [change] = await events(client.app, ev.ProviderChangeReceived)
    assert change.connection_id == connection.id and change.external_ids == ["CUST1"]
    assert change.entity_type == pb.ENTITY_TYPE_CUSTOMER and change.operation == "updated"
    before = await _state(client.app)

    event_id = json.loads(delivered.body)["event_id"]
    assert (await square.resend(event_id)).status == 200  # a replay: acknowledged, nothing new
    forged = await square.emit("customer.updated", data, forge=True)
    assert forged.status == 401
    stale = await square.emit("customer.updated", data, created_at=time.time() - 3 * 86400)
    assert stale.status == 400
    assert await _state(client.app) == before
    assert len(await events(client.app, ev.ProviderChangeReceived)) == 1

    # The seller removes the application: the connection needs a new authorization.
    square.revoke_merchant(DEV_MERCHANT_ID)
    for _ in range(50):
        if await events(client.app, ev.ConnectionFailed):
            break
        import asyncio

        await asyncio.sleep(0.05)
    [failed] = await events(client.app, ev.ConnectionFailed)
    assert failed.detected_by == "webhook" and failed.error_code == "authorization_revoked"


async def test_quickbooks_valid_bad_stale_replayed(
    client: Client, quickbooks: QuickBooksServer
) -> None:
    connection = await client.dance(pb.PROVIDER_QUICKBOOKS)
    quickbooks.webhook_url = client.app.kit.http.local_url("/webhooks/quickbooks")  # type: ignore[union-attr]
    delivered = await quickbooks.emit([("Customer", "58", "Create"), ("Item", "9", "Update")])
    assert delivered.status == 200
    changes = await events(client.app, ev.ProviderChangeReceived)
    assert {(c.entity_type, tuple(c.external_ids)) for c in changes} == {
        (pb.ENTITY_TYPE_CUSTOMER, ("58",)),
        (pb.ENTITY_TYPE_PRODUCT, ("9",)),
    }
    assert {c.connection_id for c in changes} == {connection.id}
    before = await _state(client.app)
    [first_id, _] = [e["id"] for e in json.loads(delivered.body)]
    assert (await quickbooks.resend(first_id)).status == 200
    assert (await quickbooks.emit([("Customer", "59", "Create")], forge=True)).status == 401
    old = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    body = json.dumps(
        [
            {
                "specversion": "1.0",
                "id": str(uuid.uuid4()),
                "type": "qbo.customer.updated.v1",
                "time": old,
                "intuitentityid": "58",
                "intuitaccountid": DEV_REALM_ID,
                "data": {},
            }
        ]
    ).encode()
    async with httpx.AsyncClient() as http:
        stale = await http.post(
            quickbooks.webhook_url,
            content=body,
            headers={"intuit-signature": webhooks.intuit_signature(DEV_VERIFIER_TOKEN, body)},
        )
    assert stale.status_code == 400 and stale.json()["error"] == "WEBHOOK_STALE"
    assert await _state(client.app) == before


async def _webhook_secret(app: App, connection_id: str) -> str:
    """The per-connection secret the sync engine would register (from the vault)."""
    assert app.kit is not None
    vault = Vault(LocalKeys.dev(app.settings.dev_kek_path))  # type: ignore[attr-defined]
    async with app.kit.db.acquire() as conn:
        sealed = await credentials_store.get(conn, uuid.UUID(connection_id))
    assert sealed is not None
    return (await vault.open_sealed(sealed)).webhook_secret.reveal()


async def test_mailchimp_url_check_valid_bad_secret_stale_replayed(
    client: Client, mailchimp: MailchimpServer
) -> None:
    connection = await client.dance(pb.PROVIDER_MAILCHIMP)
    secret = await _webhook_secret(client.app, connection.id)
    base = client.app.kit.http.local_url(f"/webhooks/mailchimp/{connection.id}")  # type: ignore[union-attr]
    url = f"{base}?secret={secret}"
    # Saving the webhook at Mailchimp sends the GET check first: it must answer 2xx.
    async with httpx.AsyncClient() as http:
        saved = await http.post(
            f"{mailchimp.url}/3.0/lists/{DEV_LIST_ID}/webhooks",
            json={"url": url},
            auth=("any", mailchimp.api_key),
        )
    assert saved.status_code == 200, saved.text
    [delivered] = await mailchimp.emit("subscribe", "ada@example.com")
    assert delivered.status == 200
    [change] = await events(client.app, ev.ProviderChangeReceived)
    assert change.connection_id == connection.id and change.event_type == "subscribe"
    assert change.entity_type == pb.ENTITY_TYPE_CUSTOMER
    before = await _state(client.app)
    async with httpx.AsyncClient() as http:
        replay = await http.post(url, content=delivered.body)
        assert replay.status_code == 200 and replay.json()["status"] == "DUPLICATE"
        bad = await http.post(f"{base}?secret=wrong", content=delivered.body)
        assert bad.status_code == 401
        missing = await http.post(base, content=delivered.body)
        assert missing.status_code == 401
        old = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%d %H:%M:%S")
        stale = await http.post(url, content=f"type=subscribe&fired_at={old}&data[id]=x".encode())
        assert stale.status_code == 400
    assert await _state(client.app) == before


async def test_stripe_valid_bad_stale_replayed_over_http_and_rpc(client: Client) -> None:
    connection = (
        await client.stub.ConnectWithApiKey(
            pb.ConnectWithApiKeyRequest(
                idempotency_key=key(),
                venue_id="venue-nash",
                provider=pb.PROVIDER_STRIPE,
                api_key="rk_test_meshdev_catalogue_key_42",
                settings={"webhook_secret": ENDPOINT_SECRET},
            ),
            metadata=client.md(),
        )
    ).connection
    url = client.app.kit.http.local_url(f"/webhooks/stripe/{connection.id}")  # type: ignore[union-attr]
    body = json.dumps(
        {"id": "evt_1", "type": "product.updated", "data": {"object": {"id": "prod_1"}}}
    ).encode()

    def signed(payload: bytes, secret: str = ENDPOINT_SECRET, age: int = 0) -> Any:
        t = int(time.time()) - age
        return {"stripe-signature": f"t={t},v1={webhooks.stripe_signature(secret, t, payload)}"}

    async with httpx.AsyncClient() as http:
        ok = await http.post(url, content=body, headers=signed(body))
        assert ok.status_code == 200 and ok.json()["status"] == "PROCESSED"
        before = await _state(client.app)
        again = await http.post(url, content=body, headers=signed(body))
        assert again.json()["status"] == "DUPLICATE"
        bad = await http.post(url, content=body, headers=signed(body, "whsec_other"))
        assert bad.status_code == 401
        stale = await http.post(url, content=body, headers=signed(body, age=301))
        assert stale.status_code == 400
    assert await _state(client.app) == before

    # The same verification through HandleProviderWebhook (admins: e.g. a relay of deliveries).
    body2 = body.replace(b"evt_1", b"evt_2")
    answer = await client.stub.HandleProviderWebhook(
        pb.HandleProviderWebhookRequest(
            webhook=common_pb2.ProviderWebhook(
                provider="stripe", payload=body2, headers=signed(body2), url=url, http_method="POST"
            )
        ),
        metadata=client.admin(),
    )
    assert answer.status == common_pb2.WEBHOOK_STATUS_PROCESSED and answer.event_id == "evt_2"
    assert answer.connection_id == connection.id
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.stub.HandleProviderWebhook(
            pb.HandleProviderWebhookRequest(
                webhook=common_pb2.ProviderWebhook(
                    provider="stripe",
                    payload=body2,
                    headers=signed(body2, "whsec_x"),
                    url=url,
                    http_method="POST",
                )
            ),
            metadata=client.admin(),
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason(refused.value) == "WEBHOOK_SIGNATURE_INVALID"
    assert hashlib.sha256(body2).hexdigest()  # (the bytes were signed as sent)
