"""Cancel during an in-flight create, and late captures (Stripe charging a payment closed here).

Everything runs against the real localstripe and the service over gRPC/HTTP; the ledger of every
app is checked for all its invariants at teardown (conftest).

The service's Stripe traffic goes through a fault-injecting HTTP proxy (`stripe_proxy`): the
service and its `stripe` SDK run unmodified, and the faults are made on the network, where they
happen in production:

* `hold` keeps the PaymentIntent create at the proxy, before it reaches Stripe, until the test
  releases it: the "create is waiting on Stripe" window, made deterministic instead of raced
  with sleeps;
* `lose_answer` lets Stripe create (and charge) the PaymentIntent, then closes the connection
  without its answer and cuts the guard's retries: the create fails as UNAVAILABLE and the
  payment stays PENDING with no PaymentIntent id while Stripe has the intent, exactly the state
  a crash leaves.

These were preferred over writing a STARTED idempotency row and a PENDING payment by hand: the
payment, its Stripe intent and the create's own late answer all come from the real code paths.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from meshdev.standins.faultproxy import FaultProxy
from meshdev.testing.rpc import error_info, retry_delay
from meshkit.server import App
from payment_service.domain.settlement import Cause
from payment_service.domain.states import CauseKind, PaymentStatus
from payment_service.store import payments
from tests.payment.integration.support import (
    CREATE_INTENT,
    LATE_CAPTURE_METRIC,
    REFUNDED,
    SUCCEEDED,
    THREE_D_SECURE,
    PaymentClient,
    StartQuiet,
    created_without_answer,
    event_payload,
    sign,
    transitions,
)
from tickettoken.payment.v1 import payment_pb2

P = payment_pb2
Start = Callable[..., Awaitable[App]]


@pytest.fixture
async def quiet(start_quiet: StartQuiet) -> PaymentClient:
    return await start_quiet()


def cancel_request(payment_id: str) -> P.CancelPaymentRequest:
    return P.CancelPaymentRequest(
        idempotency_key=str(uuid.uuid4()),
        payment_id=payment_id,
        reason=P.CANCELLATION_REASON_REQUESTED_BY_CUSTOMER,
    )


async def cancelled_but_captured(
    client: PaymentClient, proxy: FaultProxy
) -> tuple[str, dict[str, Any]]:
    """A payment CANCELLED here whose PaymentIntent Stripe captured: what the old cancel left
    behind (it cancelled a create in doubt locally). Closed through the store, as it did."""
    payment_id, intent = await created_without_answer(client, proxy)
    assert intent["status"] == "succeeded"
    assert client.app.kit is not None
    async with client.app.kit.db.transaction() as conn:
        moved = await payments.transition(
            conn,
            uuid.UUID(payment_id),
            PaymentStatus.CANCELLED,
            cause=Cause(CauseKind.RPC, "CancelPayment:CANCELLATION_REASON_REQUESTED_BY_CUSTOMER"),
        )
    assert moved is not None
    return payment_id, intent


# -- 1. cancel while the create is in flight / in doubt ----------------------------------------


async def test_cancel_while_create_waits_on_stripe_is_aborted_and_the_charge_stands(
    quiet: PaymentClient, stripe_proxy: FaultProxy
) -> None:
    held = stripe_proxy.hold(*CREATE_INTENT)
    request = quiet.create_request()
    md = quiet.buyer()

    async def create() -> P.CreatePaymentResponse:
        reply: P.CreatePaymentResponse = await quiet.stub.CreatePayment(
            request, metadata=md, timeout=20
        )
        return reply

    creating = asyncio.create_task(create())
    await held.wait_arrived()
    [row] = await quiet.fetch("SELECT id, status, provider_payment_id FROM payments")
    payment_id = str(row["id"])
    assert (row["status"], row["provider_payment_id"]) == ("PENDING", None)

    cancel = cancel_request(payment_id)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await quiet.stub.CancelPayment(cancel, metadata=md, timeout=10)
    assert info.value.code() is grpc.StatusCode.ABORTED
    assert error_info(info.value).reason == "PAYMENT_CREATE_IN_PROGRESS"
    delay = retry_delay(info.value)
    assert delay is not None and 1.0 <= delay <= 30.0
    # Nothing changed.
    assert await transitions(quiet, payment_id) == [(None, "PENDING", "rpc")]
    assert (await quiet.get(payment_id)).status == P.PAYMENT_STATUS_PENDING

    # Stripe now charges: the create's answer is the payment's real state.
    assert held.forwarded == 0
    held.release()
    created = (await creating).payment
    assert (held.matched, held.forwarded) == (1, 1)
    assert created.status == P.PAYMENT_STATUS_SUCCEEDED
    [intent] = await quiet.intents_for(payment_id=payment_id)
    assert intent["status"] == "succeeded" and intent["id"] == created.provider_payment_id

    # The client retries the cancel as told (ABORTED released its key): a captured payment
    # cannot be cancelled, and nothing was refunded or cancelled behind its back.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await quiet.stub.CancelPayment(cancel, metadata=md, timeout=10)
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(info.value).reason == "INVALID_TRANSITION"
    assert (await quiet.get(payment_id)).status == P.PAYMENT_STATUS_SUCCEEDED
    assert await transitions(quiet, payment_id) == [
        (None, "PENDING", "rpc"),
        ("PENDING", "SUCCEEDED", "rpc"),
    ]
    assert await quiet.refunds_at_stripe(intent["id"]) == []
    assert await quiet.fetchval("SELECT count(*) FROM refunds") == 0


async def test_cancel_after_a_lost_create_answer_waits_for_stripe_then_cancels_there(
    quiet: PaymentClient, stripe_proxy: FaultProxy
) -> None:
    # The create crashed after Stripe created the intent (3-D Secure: waiting for the buyer).
    pm = await quiet.payment_method(THREE_D_SECURE)
    payment_id, intent = await created_without_answer(quiet, stripe_proxy, pm=pm)
    assert intent["status"] == "requires_action"

    cancel = cancel_request(payment_id)
    md = quiet.buyer()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await quiet.stub.CancelPayment(cancel, metadata=md, timeout=10)
    assert info.value.code() is grpc.StatusCode.ABORTED
    assert error_info(info.value).reason == "PAYMENT_CREATE_IN_PROGRESS"
    assert retry_delay(info.value) is not None
    assert (await quiet.get(payment_id)).status == P.PAYMENT_STATUS_PENDING

    # Stripe's webhook names the intent (our payment id is in its metadata) ...
    body = event_payload("payment_intent.requires_action", intent)
    status, reply = await quiet.post_webhook(body, sign(body))
    assert (status, reply["status"]) == (200, "WEBHOOK_STATUS_PROCESSED")
    assert (await quiet.get(payment_id)).provider_payment_id == intent["id"]

    # ... so the retried cancel cancels it at Stripe first, then here.
    cancelled = (await quiet.stub.CancelPayment(cancel, metadata=md, timeout=10)).payment
    assert cancelled.status == P.PAYMENT_STATUS_CANCELLED
    assert (await quiet.intent(intent["id"]))["status"] == "canceled"


# -- 2. late capture: charged for a closed payment ----------------------------------------------


async def test_succeeded_webhook_for_a_cancelled_payment_is_refunded_automatically(
    quiet: PaymentClient, stripe_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    payment_id, intent = await cancelled_but_captured(quiet, stripe_proxy)
    total = intent["amount"]
    # The buyer has paid the order since with another payment: that one stays untouched.
    order_id = (await quiet.get(payment_id)).order_id
    other = await quiet.create(order=order_id)
    assert other.status == P.PAYMENT_STATUS_SUCCEEDED

    body = event_payload("payment_intent.succeeded", intent)
    with caplog.at_level(logging.ERROR, logger="payment_service"):
        status, reply = await quiet.post_webhook(body, sign(body))
    assert (status, reply["status"], reply["payment_id"]) == (
        200,
        "WEBHOOK_STATUS_PROCESSED",
        payment_id,
    )

    # Refunded at Stripe, in full, once, under the key derived from the payment id.
    [refund] = await quiet.refunds_at_stripe(intent["id"])
    assert (refund["amount"], refund["status"]) == (total, "succeeded")
    assert refund["metadata"]["payment_id"] == payment_id

    payment = await quiet.get(payment_id)
    assert payment.status == P.PAYMENT_STATUS_REFUNDED
    assert payment.provider_payment_id == intent["id"]
    [ours] = payment.refunds
    assert (ours.status, ours.amount.amount_minor, ours.provider_refund_id) == (
        P.REFUND_STATUS_SUCCEEDED,
        total,
        refund["id"],
    )
    assert await quiet.fetchval(
        "SELECT late_capture_at IS NOT NULL FROM payments WHERE id = $1", uuid.UUID(payment_id)
    )
    assert await transitions(quiet, payment_id) == [
        (None, "PENDING", "rpc"),
        ("PENDING", "CANCELLED", "rpc"),
        ("CANCELLED", "SUCCEEDED", "webhook"),
        ("SUCCEEDED", "REFUNDED", "webhook"),
    ]
    # The ledger took the money in and paid it all back: the buyer nets to zero.
    kinds = await quiet.fetch(
        "SELECT kind FROM journal_transactions WHERE payment_id = $1 ORDER BY created_at",
        uuid.UUID(payment_id),
    )
    assert [r["kind"] for r in kinds] == ["charge", "refund"]
    net = await quiet.fetchval(
        "SELECT sum(e.amount) FROM journal_transactions t JOIN ledger_entries e "
        "ON e.txn_id = t.id WHERE t.payment_id = $1 AND e.account = 'stripe_clearing'",
        uuid.UUID(payment_id),
    )
    assert net == 0
    # Nothing is fulfilled for it: no PaymentSucceeded of its own, only the refund's event.
    announced = [(e.event_type, e.aggregate_id) for e in await quiet.events()]
    assert sorted(announced) == sorted([(REFUNDED, payment_id), (SUCCEEDED, other.id)])
    assert (await quiet.get(other.id)).status == P.PAYMENT_STATUS_SUCCEEDED
    # The alert: an ERROR line naming the payment, and the counter.
    alerts = [
        r
        for r in caplog.records
        if r.levelno == logging.ERROR and getattr(r, "payment_id", None) == payment_id
    ]
    assert alerts and "refunding it automatically" in alerts[0].getMessage()
    assert await quiet.metric(LATE_CAPTURE_METRIC) == 1.0


async def test_replayed_late_capture_webhook_refunds_once(
    quiet: PaymentClient, stripe_proxy: FaultProxy
) -> None:
    payment_id, intent = await cancelled_but_captured(quiet, stripe_proxy)
    body = event_payload("payment_intent.succeeded", intent)
    status, reply = await quiet.post_webhook(body, sign(body))
    assert (status, reply["status"]) == (200, "WEBHOOK_STATUS_PROCESSED")

    # Stripe delivers the same event again, concurrently and later, and a second event
    # announces the same success: nothing more happens.
    replies = await asyncio.gather(*(quiet.post_webhook(body, sign(body)) for _ in range(3)))
    assert [(s, r["status"]) for s, r in replies] == [(200, "WEBHOOK_STATUS_DUPLICATE")] * 3
    again = event_payload("payment_intent.succeeded", intent)
    status, reply = await quiet.post_webhook(again, sign(again))
    assert (status, reply["status"]) == (200, "WEBHOOK_STATUS_IGNORED")

    assert len(await quiet.refunds_at_stripe(intent["id"])) == 1
    assert await quiet.fetchval("SELECT count(*) FROM refunds") == 1
    assert (
        await quiet.fetchval("SELECT count(*) FROM journal_transactions WHERE kind = 'charge'") == 1
    )
    assert (await quiet.get(payment_id)).status == P.PAYMENT_STATUS_REFUNDED
    assert await quiet.metric(LATE_CAPTURE_METRIC) == 1.0


async def test_late_create_answer_after_reconciliation_gave_up_is_refunded(
    start_quiet: StartQuiet, stripe_proxy: FaultProxy
) -> None:
    client = await start_quiet(reconcile_older_than_s=0)
    held = stripe_proxy.hold(*CREATE_INTENT)
    creating = asyncio.create_task(client.create())
    await held.wait_arrived()
    payment_id = str(await client.fetchval("SELECT id FROM payments"))
    # Reconciliation gives up on the PaymentIntent-less payment while its create still
    # waits on Stripe ...
    report = await client.stub.ReconcilePayments(
        P.ReconcilePaymentsRequest(idempotency_key=str(uuid.uuid4()), payment_ids=[payment_id]),
        metadata=client.admin(),
    )
    [found] = report.discrepancies
    assert (found.action, found.applied) == (
        P.RECONCILIATION_ACTION_MARKED_FAILED,
        True,
    )
    assert (await client.get(payment_id)).status == P.PAYMENT_STATUS_FAILED
    assert held.forwarded == 0
    # ... then Stripe charges, and the create's late answer sends the money back.
    held.release()
    created = await creating
    assert (held.matched, held.forwarded) == (1, 1)
    assert created.status == P.PAYMENT_STATUS_REFUNDED
    assert [r.status for r in created.refunds] == [P.REFUND_STATUS_SUCCEEDED]
    [refund] = await client.refunds_at_stripe(created.provider_payment_id)
    assert refund["amount"] == created.total.amount_minor
    assert await transitions(client, payment_id) == [
        (None, "PENDING", "rpc"),
        ("PENDING", "FAILED", "reconciliation"),
        ("FAILED", "SUCCEEDED", "rpc"),
        ("SUCCEEDED", "REFUNDED", "rpc"),
    ]
    assert await client.metric(LATE_CAPTURE_METRIC) == 1.0
