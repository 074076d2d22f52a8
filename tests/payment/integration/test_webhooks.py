"""Stripe webhooks over HTTP and gRPC: verification, inbox, duplicates, order, failure + retry."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from meshdev.testing.servers import TestTokens, channel_for
from meshkit.server import App
from tests.payment.integration.support import (
    SUCCEEDED,
    THREE_D_SECURE,
    PaymentClient,
    add_venue,
    event_payload,
    sign,
)
from tickettoken.common.v1 import common_pb2
from tickettoken.payment.v1 import payment_pb2, payment_pb2_grpc

P = payment_pb2


@pytest.fixture
async def quiet(
    start_payment: Callable[..., Awaitable[App]], tokens: TestTokens, localstripe: str
) -> AsyncIterator[PaymentClient]:
    """A client whose app gets no deliveries from localstripe: the test plays Stripe."""
    app = await start_payment(register=False, webhook_lock_timeout_ms=300)
    await add_venue(app, "venue-nash")
    async with channel_for(app) as channel:
        yield PaymentClient(app, payment_pb2_grpc.PaymentServiceStub(channel), tokens, localstripe)


async def pending_3ds(client: PaymentClient) -> tuple[P.Payment, dict[str, Any]]:
    """A REQUIRES_ACTION payment, then 3-D Secure completed at Stripe: the intent succeeded
    there, and no webhook has told us yet."""
    payment = await client.create(pm=await client.payment_method(THREE_D_SECURE))
    assert payment.status == P.PAYMENT_STATUS_REQUIRES_ACTION
    await client.authenticate(payment.provider_payment_id, payment.client_secret)
    intent = await client.intent(payment.provider_payment_id)
    assert intent["status"] == "succeeded"
    return payment, intent


async def test_valid_event_over_http(quiet: PaymentClient) -> None:
    payment, intent = await pending_3ds(quiet)
    body = event_payload("payment_intent.succeeded", intent)
    status, reply = await quiet.post_webhook(body, sign(body))
    assert status == 200 and reply["status"] == "WEBHOOK_STATUS_PROCESSED"
    assert reply["payment_id"] == payment.id
    assert (await quiet.get(payment.id)).status == P.PAYMENT_STATUS_SUCCEEDED
    assert await quiet.fetchval("SELECT count(*) FROM journal_transactions") == 1
    assert [e.event_type for e in await quiet.events()] == [SUCCEEDED]
    cause = await quiet.fetchval(
        "SELECT cause_kind || ':' || cause_ref FROM payment_transitions WHERE to_status = "
        "'SUCCEEDED'"
    )
    assert cause == f"webhook:{reply['event_id']}"


async def test_same_code_over_grpc(quiet: PaymentClient) -> None:
    payment, intent = await pending_3ds(quiet)
    body = event_payload("payment_intent.succeeded", intent)
    webhook = common_pb2.ProviderWebhook(
        provider="stripe", payload=body, headers={"stripe-signature": sign(body)}
    )
    reply = await quiet.stub.HandleProviderWebhook(
        P.HandleProviderWebhookRequest(webhook=webhook), metadata=quiet.service("integration")
    )
    assert reply.status == common_pb2.WEBHOOK_STATUS_PROCESSED
    assert reply.payment_id == payment.id
    again = await quiet.stub.HandleProviderWebhook(
        P.HandleProviderWebhookRequest(webhook=webhook), metadata=quiet.admin()
    )
    assert again.status == common_pb2.WEBHOOK_STATUS_DUPLICATE
    bad = common_pb2.ProviderWebhook(
        provider="stripe", payload=body, headers={"stripe-signature": sign(body, secret="whsec_x")}
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await quiet.stub.HandleProviderWebhook(
            P.HandleProviderWebhookRequest(webhook=bad), metadata=quiet.admin()
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_bad_signature_and_stale_timestamp_are_refused(quiet: PaymentClient) -> None:
    payment, intent = await pending_3ds(quiet)
    body = event_payload("payment_intent.succeeded", intent)
    cases = {
        "wrong secret": sign(body, secret="whsec_wrong"),
        "stale": sign(body, timestamp=int(time.time()) - 301),
        "from the future": sign(body, timestamp=int(time.time()) + 600),
        "tampered body": sign(body.replace(b"succeeded", b"succeedeD")),
        "garbage": "t=1,v1=deadbeef",
    }
    for name, signature in cases.items():
        status, reply = await quiet.post_webhook(body, signature)
        assert status == 400, name
        assert reply["error"] == "WEBHOOK_SIGNATURE_INVALID", name
    status, _ = await quiet.post_webhook(body, None)
    assert status == 400
    assert await quiet.fetchval("SELECT count(*) FROM webhook_inbox") == 0
    assert (await quiet.get(payment.id)).status == P.PAYMENT_STATUS_REQUIRES_ACTION
    # Within the tolerance it is accepted.
    status, _ = await quiet.post_webhook(body, sign(body, timestamp=int(time.time()) - 290))
    assert status == 200


async def test_duplicate_delivery_is_a_noop(quiet: PaymentClient) -> None:
    payment, intent = await pending_3ds(quiet)
    body = event_payload("payment_intent.succeeded", intent)
    replies = await asyncio.gather(*(quiet.post_webhook(body, sign(body)) for _ in range(10)))
    assert all(status == 200 for status, _ in replies)
    outcomes = sorted(r["status"] for _, r in replies)
    assert outcomes == ["WEBHOOK_STATUS_DUPLICATE"] * 9 + ["WEBHOOK_STATUS_PROCESSED"]
    assert await quiet.fetchval("SELECT count(*) FROM journal_transactions") == 1
    assert await quiet.fetchval("SELECT count(*) FROM outbox") == 1
    assert await quiet.fetchval("SELECT attempts FROM webhook_inbox") == 10
    # A different event announcing the same success posts nothing either.
    other = event_payload("payment_intent.succeeded", intent)
    status, reply = await quiet.post_webhook(other, sign(other))
    assert (status, reply["status"]) == (200, "WEBHOOK_STATUS_PROCESSED")
    assert await quiet.fetchval("SELECT count(*) FROM journal_transactions") == 1
    assert (await quiet.get(payment.id)).status == P.PAYMENT_STATUS_SUCCEEDED


async def test_out_of_order_events_never_move_backwards(quiet: PaymentClient) -> None:
    payment, intent = await pending_3ds(quiet)
    stale = dict(intent, status="requires_action")
    succeeded = event_payload("payment_intent.succeeded", intent)
    late = event_payload("payment_intent.requires_action", stale)
    failed = event_payload(
        "payment_intent.payment_failed", dict(intent, status="requires_payment_method")
    )
    for body in (succeeded, late, failed):
        status, _ = await quiet.post_webhook(body, sign(body))
        assert status == 200
    current = await quiet.get(payment.id)
    assert current.status == P.PAYMENT_STATUS_SUCCEEDED
    outcomes = [
        r["outcome"]
        for r in await quiet.fetch("SELECT outcome FROM webhook_inbox ORDER BY received_at")
    ]
    assert outcomes == [
        "WEBHOOK_STATUS_PROCESSED",
        "WEBHOOK_STATUS_IGNORED",
        "WEBHOOK_STATUS_IGNORED",
    ]


async def test_processing_failure_then_retry_posts_once(quiet: PaymentClient) -> None:
    payment, intent = await pending_3ds(quiet)
    body = event_payload("payment_intent.succeeded", intent)
    assert quiet.app.kit is not None
    # Another writer holds the payment row: processing cannot finish in time and must fail
    # without changing anything (no state, ledger or outbox change; the inbox keeps the error).
    async with quiet.app.kit.db.transaction() as blocker:
        await blocker.execute(
            "SELECT 1 FROM payments WHERE id = $1 FOR UPDATE", uuid.UUID(payment.id)
        )
        status, reply = await quiet.post_webhook(body, sign(body))
        assert status == 503 and reply["error"] == "WEBHOOK_PROCESSING_FAILED"
    row = (await quiet.fetch("SELECT processed_at, last_error FROM webhook_inbox"))[0]
    assert row["processed_at"] is None and "LockNotAvailable" in row["last_error"]
    assert await quiet.fetchval("SELECT count(*) FROM journal_transactions") == 0
    assert await quiet.fetchval("SELECT count(*) FROM outbox") == 0
    assert (await quiet.get(payment.id)).status == P.PAYMENT_STATUS_REQUIRES_ACTION
    # Stripe retries the same delivery later: processed once, posted once.
    status, reply = await quiet.post_webhook(body, sign(body))
    assert (status, reply["status"]) == (200, "WEBHOOK_STATUS_PROCESSED")
    status, reply = await quiet.post_webhook(body, sign(body))
    assert (status, reply["status"]) == (200, "WEBHOOK_STATUS_DUPLICATE")
    assert await quiet.fetchval("SELECT count(*) FROM journal_transactions") == 1
    assert await quiet.fetchval("SELECT count(*) FROM outbox") == 1
    row = (await quiet.fetch("SELECT processed_at, last_error, attempts FROM webhook_inbox"))[0]
    assert row["processed_at"] is not None and row["last_error"] is None


async def test_unknown_types_and_payments_are_acknowledged(quiet: PaymentClient) -> None:
    body = event_payload("customer.created", {"id": "cus_123", "object": "customer"})
    status, reply = await quiet.post_webhook(body, sign(body))
    assert (status, reply["status"]) == (200, "WEBHOOK_STATUS_IGNORED")
    body = event_payload(
        "payment_intent.succeeded", {"id": "pi_unknown", "status": "succeeded", "metadata": {}}
    )
    status, reply = await quiet.post_webhook(body, sign(body))
    assert (status, reply["status"]) == (200, "WEBHOOK_STATUS_IGNORED")


async def test_refund_and_dispute_events(quiet: PaymentClient) -> None:
    payment = await quiet.create()
    total = payment.total.amount_minor
    charge = (await quiet.intent(payment.provider_payment_id))["latest_charge"]
    charge_id = charge["id"] if isinstance(charge, dict) else charge
    # A refund made at Stripe (dashboard) arrives as charge.refunded.
    refund_obj = {
        "id": "re_dashboard1",
        "object": "refund",
        "amount": 1_000,
        "status": "succeeded",
        "charge": charge_id,
        "payment_intent": payment.provider_payment_id,
        "metadata": {},
        "created": int(time.time()),
    }
    body = event_payload(
        "charge.refunded",
        {
            "id": charge_id,
            "object": "charge",
            "payment_intent": payment.provider_payment_id,
            "amount_refunded": 1_000,
            "refunds": {"object": "list", "data": [refund_obj]},
        },
    )
    status, reply = await quiet.post_webhook(body, sign(body))
    assert (status, reply["status"]) == (200, "WEBHOOK_STATUS_PROCESSED")
    current = await quiet.get(payment.id)
    assert current.status == P.PAYMENT_STATUS_PARTIALLY_REFUNDED
    assert current.refunded.amount_minor == 1_000
    assert current.refundable.amount_minor == total - 1_000
    # The refund later fails at the bank: charge.refund.updated → FAILED, money back, reversal.
    body = event_payload(
        "charge.refund.updated",
        dict(refund_obj, status="failed", failure_reason="expired_or_canceled_card"),
    )
    status, reply = await quiet.post_webhook(body, sign(body))
    assert (status, reply["status"]) == (200, "WEBHOOK_STATUS_PROCESSED")
    current = await quiet.get(payment.id)
    assert current.status == P.PAYMENT_STATUS_SUCCEEDED
    assert current.refunded.amount_minor == 0
    assert current.refunds[0].status == P.REFUND_STATUS_FAILED
    assert current.refunds[0].failure_reason == "expired_or_canceled_card"
    kinds = [
        r["kind"]
        for r in await quiet.fetch("SELECT kind FROM journal_transactions ORDER BY created_at")
    ]
    assert kinds == ["charge", "refund", "refund_reversal"]
    # A dispute: DISPUTED, and the venue's share held in reserve.
    body = event_payload(
        "charge.dispute.created",
        {
            "id": "dp_1",
            "object": "dispute",
            "amount": total,
            "charge": charge_id,
            "payment_intent": payment.provider_payment_id,
            "status": "needs_response",
        },
    )
    status, reply = await quiet.post_webhook(body, sign(body))
    assert (status, reply["status"]) == (200, "WEBHOOK_STATUS_PROCESSED")
    assert (await quiet.get(payment.id)).status == P.PAYMENT_STATUS_DISPUTED
    balance = await quiet.stub.GetVenueBalance(
        P.GetVenueBalanceRequest(venue_id="venue-nash", currency="USD"), metadata=quiet.admin()
    )
    assert balance.balance.reserved.amount_minor >= payment.fees.subtotal.amount_minor


async def test_dev_mode_registers_its_own_endpoint_with_localstripe(
    start_payment: Callable[..., Awaitable[App]], tokens: TestTokens, localstripe: str
) -> None:
    """STRIPE_DEV_REGISTER_WEBHOOK (what `make run` uses): localstripe's signed deliveries
    reach the service without any test help, and complete a 3-D Secure payment."""
    app = await start_payment(register=None, stripe_dev_register_webhook=True)
    await add_venue(app, "venue-nash")
    async with channel_for(app) as channel:
        client = PaymentClient(
            app, payment_pb2_grpc.PaymentServiceStub(channel), tokens, localstripe
        )
        payment = await client.create(pm=await client.payment_method(THREE_D_SECURE))
        await client.authenticate(payment.provider_payment_id, payment.client_secret)
        for _ in range(100):
            if (await client.get(payment.id)).status == P.PAYMENT_STATUS_SUCCEEDED:
                break
            await asyncio.sleep(0.05)
        assert (await client.get(payment.id)).status == P.PAYMENT_STATUS_SUCCEEDED
        assert await client.fetchval("SELECT count(*) FROM webhook_inbox") >= 1
