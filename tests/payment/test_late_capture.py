"""Cancel during an in-flight create, and late captures (Stripe charging a payment closed here).

Everything runs against the real localstripe and the service over gRPC/HTTP; the ledger of every
app is checked for all its invariants at teardown (conftest).

Two test-only seams at the Stripe adapter boundary, installed with `monkeypatch` on the running
app's `StripeGateway` instance (nothing in the service or its settings can enable them):

* `HeldCreate` holds `create_intent` before it reaches Stripe until the test releases it: the
  "create is waiting on Stripe" window, made deterministic instead of raced with sleeps;
* `lose_create_answer` lets Stripe create (and charge) the PaymentIntent, then raises as if the
  connection or the process died before the answer was read: the payment stays PENDING with no
  PaymentIntent id while Stripe has the intent, exactly the state a crash leaves.

These were preferred over writing a STARTED idempotency row and a PENDING payment by hand: the
payment, its Stripe intent and the create's own late answer all come from the real code paths.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from meshkit.server import App
from meshkit.testing.servers import TestTokens, channel_for
from payment_service import store
from payment_service.adapters.stripe_gateway import IntentResult
from payment_service.domain.states import CauseKind, PaymentStatus
from tests.payment.conftest import add_venue
from tests.payment.support import (
    THREE_D_SECURE,
    PaymentClient,
    error_info,
    event_payload,
    payments_of,
    retry_delay,
    sign,
)
from tickettoken.payment.v1 import payment_pb2, payment_pb2_grpc

P = payment_pb2
Start = Callable[..., Awaitable[App]]
LATE_CAPTURE_METRIC = "payment_late_capture_refunds_total"


async def started(
    start_payment: Start, tokens: TestTokens, localstripe: str, **settings: object
) -> tuple[PaymentClient, grpc.aio.Channel]:
    """An app that gets no webhook deliveries from localstripe: the test plays Stripe."""
    app = await start_payment(register=False, **settings)
    await add_venue(app, "venue-nash")
    channel = channel_for(app)
    return PaymentClient(
        app, payment_pb2_grpc.PaymentServiceStub(channel), tokens, localstripe
    ), channel


@pytest.fixture
async def quiet(
    start_payment: Start, tokens: TestTokens, localstripe: str
) -> AsyncIterator[PaymentClient]:
    client, channel = await started(start_payment, tokens, localstripe)
    async with channel:
        yield client


class HeldCreate:
    """Holds the app's PaymentIntent create at the adapter boundary until `release()`."""

    def __init__(self, app: App, monkeypatch: pytest.MonkeyPatch) -> None:
        gateway = payments_of(app).gateway
        self._real = gateway.create_intent
        self.entered = asyncio.Event()
        self._released = asyncio.Event()
        monkeypatch.setattr(gateway, "create_intent", self._held)

    async def _held(self, **kwargs: Any) -> IntentResult:
        self.entered.set()
        await self._released.wait()
        return await self._real(**kwargs)

    async def wait_entered(self) -> None:
        await asyncio.wait_for(self.entered.wait(), timeout=10)

    def release(self) -> None:
        self._released.set()


def lose_create_answer(app: App, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Every create reaches Stripe, but its answer is lost; returns a function that undoes it."""
    gateway = payments_of(app).gateway
    real = gateway.create_intent

    async def lost(**kwargs: Any) -> IntentResult:
        await real(**kwargs)
        raise ConnectionResetError("connection lost before Stripe's answer was read")

    monkeypatch.setattr(gateway, "create_intent", lost)
    return lambda: monkeypatch.setattr(gateway, "create_intent", real)


def cancel_request(payment_id: str) -> P.CancelPaymentRequest:
    return P.CancelPaymentRequest(
        idempotency_key=str(uuid.uuid4()),
        payment_id=payment_id,
        reason=P.CANCELLATION_REASON_REQUESTED_BY_CUSTOMER,
    )


async def transitions(client: PaymentClient, payment_id: str) -> list[tuple[Any, ...]]:
    rows = await client.fetch(
        "SELECT from_status, to_status, cause_kind FROM payment_transitions "
        "WHERE payment_id = $1 ORDER BY id",
        uuid.UUID(payment_id),
    )
    return [tuple(r) for r in rows]


async def created_without_answer(
    client: PaymentClient, monkeypatch: pytest.MonkeyPatch, **create: Any
) -> tuple[str, dict[str, Any]]:
    """A create whose Stripe answer was lost: (our PENDING payment id, Stripe's intent)."""
    restore = lose_create_answer(client.app, monkeypatch)
    with pytest.raises(grpc.aio.AioRpcError):
        await client.create(**create)
    restore()
    [row] = await client.fetch(
        "SELECT id, status, provider_payment_id FROM payments WHERE status = 'PENDING'"
    )
    assert row["provider_payment_id"] is None
    [intent] = await client.intents_for(payment_id=str(row["id"]))
    return str(row["id"]), intent


async def cancelled_but_captured(
    client: PaymentClient, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, dict[str, Any]]:
    """A payment CANCELLED here whose PaymentIntent Stripe captured: what the old cancel left
    behind (it cancelled a create in doubt locally). Closed through the store, as it did."""
    payment_id, intent = await created_without_answer(client, monkeypatch)
    assert intent["status"] == "succeeded"
    assert client.app.kit is not None
    async with client.app.kit.db.transaction() as conn:
        moved = await store.transition(
            conn,
            uuid.UUID(payment_id),
            PaymentStatus.CANCELLED,
            cause=CauseKind.RPC,
            cause_ref="CancelPayment:CANCELLATION_REASON_REQUESTED_BY_CUSTOMER",
        )
    assert moved is not None
    return payment_id, intent


# -- 1. cancel while the create is in flight / in doubt ----------------------------------------


async def test_cancel_while_create_waits_on_stripe_is_aborted_and_the_charge_stands(
    quiet: PaymentClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldCreate(quiet.app, monkeypatch)
    request = quiet.create_request()
    md = quiet.buyer()

    async def create() -> P.CreatePaymentResponse:
        reply: P.CreatePaymentResponse = await quiet.stub.CreatePayment(
            request, metadata=md, timeout=20
        )
        return reply

    creating = asyncio.create_task(create())
    await held.wait_entered()
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
    held.release()
    created = (await creating).payment
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
    quiet: PaymentClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The create crashed after Stripe created the intent (3-D Secure: waiting for the buyer).
    pm = await quiet.payment_method(THREE_D_SECURE)
    payment_id, intent = await created_without_answer(quiet, monkeypatch, pm=pm)
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
    quiet: PaymentClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    payment_id, intent = await cancelled_but_captured(quiet, monkeypatch)
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
    # Nothing is fulfilled for it: no payment.succeeded of its own, only the refund's event.
    topics = sorted(r["topic"] for r in await quiet.fetch("SELECT topic FROM outbox"))
    assert topics == ["payment.refunded", "payment.succeeded"]  # the other payment's success
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
    quiet: PaymentClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    payment_id, intent = await cancelled_but_captured(quiet, monkeypatch)
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
    start_payment: Start, tokens: TestTokens, localstripe: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, channel = await started(start_payment, tokens, localstripe, reconcile_older_than_s=0)
    async with channel:
        held = HeldCreate(client.app, monkeypatch)
        creating = asyncio.create_task(client.create())
        await held.wait_entered()
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
        # ... then Stripe charges, and the create's late answer sends the money back.
        held.release()
        created = await creating
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
