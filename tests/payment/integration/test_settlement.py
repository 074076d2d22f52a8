"""One settlement step for every entry point: a late capture (Stripe capturing a payment closed
here) learnt from a create's late answer, from a webhook or from reconciliation ends the same
way — charged, refunded in full at Stripe once, REFUNDED, one PaymentRefunded, alert raised."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from meshdev.standins.faultproxy import FaultProxy
from meshkit.events import unpack_event
from payment_service.domain.settlement import Cause
from payment_service.domain.states import CauseKind, PaymentStatus
from payment_service.store import payments
from tests.payment.integration.support import (
    CREATE_INTENT,
    FAILED,
    LATE_CAPTURE_METRIC,
    REFUNDED,
    THREE_D_SECURE,
    PaymentClient,
    StartQuiet,
    created_without_answer,
    event_payload,
    sign,
    transitions,
)
from tickettoken.payment.v1 import events_pb2, payment_pb2

P = payment_pb2
A = P.ReconciliationAction


async def reconcile(client: PaymentClient, payment_id: str) -> P.ReconcilePaymentsResponse:
    reply: P.ReconcilePaymentsResponse = await client.stub.ReconcilePayments(
        P.ReconcilePaymentsRequest(idempotency_key=str(uuid.uuid4()), payment_ids=[payment_id]),
        metadata=client.admin(),
        timeout=20,
    )
    return reply


async def outcome(client: PaymentClient, payment_id: str) -> dict[str, Any]:
    """Everything a late capture leaves behind, in terms that do not depend on the path."""
    payment = await client.get(payment_id)
    total = payment.total.amount_minor
    tickets = sorted(t for line in payment.line_items for t in line.ticket_ids)
    # What the capture announced (closing the payment may have announced PaymentFailed before,
    # depending on how it was closed).
    announced = [
        e for e in await client.events() if e.aggregate_id == payment_id and e.event_type != FAILED
    ]
    refunded = [unpack_event(e, events_pb2.PaymentRefunded) for e in announced]
    journal = await client.fetch(
        "SELECT kind FROM journal_transactions WHERE payment_id = $1 ORDER BY created_at",
        uuid.UUID(payment_id),
    )
    return {
        "status": P.PaymentStatus.Name(payment.status),
        "late_capture": await client.fetchval(
            "SELECT late_capture_at IS NOT NULL FROM payments WHERE id = $1", uuid.UUID(payment_id)
        ),
        "last_transitions": [to for _, to, _ in await transitions(client, payment_id)][-2:],
        "refunds": [
            (
                P.RefundStatus.Name(r.status),
                r.amount.amount_minor == total,
                P.RefundReason.Name(r.reason),
                sorted(r.ticket_ids) == tickets,
            )
            for r in payment.refunds
        ],
        "at_stripe": [
            (s["status"], s["amount"] == total, s["metadata"]["payment_id"] == payment_id)
            for s in await client.refunds_at_stripe(payment.provider_payment_id)
        ],
        "journal": [r["kind"] for r in journal],
        "events": [e.event_type for e in announced],
        "refunded_events": [(e.full_refund, e.amount.amount_minor == total) for e in refunded],
        "alerts": await client.metric(LATE_CAPTURE_METRIC),
    }


async def cause_of_capture(client: PaymentClient, payment_id: str) -> str:
    rows = await transitions(client, payment_id)
    [kind] = [cause for _, to, cause in rows if to == "SUCCEEDED"]
    return str(kind)


async def via_create_answer(start_quiet: StartQuiet, proxy: FaultProxy) -> tuple[str, dict]:
    """Reconciliation gives the payment up while its create waits on Stripe; then Stripe
    charges, and the create's answer arrives."""
    client = await start_quiet(reconcile_older_than_s=0)
    held = proxy.hold(*CREATE_INTENT)
    creating = asyncio.create_task(client.create())
    await held.wait_arrived()
    payment_id = str(await client.fetchval("SELECT id FROM payments"))
    [found] = (await reconcile(client, payment_id)).discrepancies
    assert found.action == A.RECONCILIATION_ACTION_MARKED_FAILED
    held.release()
    assert (await creating).status == P.PAYMENT_STATUS_REFUNDED
    return await cause_of_capture(client, payment_id), await outcome(client, payment_id)


async def via_webhook(start_quiet: StartQuiet, proxy: FaultProxy) -> tuple[str, dict]:
    """The create's answer was lost and reconciliation gave the payment up; then Stripe's
    webhook announces the capture."""
    client = await start_quiet(reconcile_older_than_s=0)
    payment_id, intent = await created_without_answer(client, proxy)
    [found] = (await reconcile(client, payment_id)).discrepancies
    assert found.action == A.RECONCILIATION_ACTION_MARKED_FAILED
    body = event_payload("payment_intent.succeeded", intent)
    status, reply = await client.post_webhook(body, sign(body))
    assert (status, reply["status"]) == (200, "WEBHOOK_STATUS_PROCESSED")
    return await cause_of_capture(client, payment_id), await outcome(client, payment_id)


async def via_reconciliation(start_quiet: StartQuiet, proxy: FaultProxy) -> tuple[str, dict]:
    """Reconciliation asks Stripe about a payment whose 3-D Secure the buyer completed; the
    payment is closed here while the question is under way, and Stripe answers "succeeded"."""
    client = await start_quiet()
    payment = await client.create(pm=await client.payment_method(THREE_D_SECURE))
    await client.authenticate(payment.provider_payment_id, payment.client_secret)
    held = proxy.hold("GET", f"/v1/payment_intents/{payment.provider_payment_id}")
    running = asyncio.create_task(reconcile(client, payment.id))
    await held.wait_arrived()
    assert client.app.kit is not None
    async with client.app.kit.db.transaction() as conn:
        closed = await payments.transition(
            conn,
            uuid.UUID(payment.id),
            PaymentStatus.CANCELLED,
            cause=Cause(CauseKind.RPC, "CancelPayment:CANCELLATION_REASON_ABANDONED"),
        )
    assert closed is not None
    held.release()
    [found] = (await running).discrepancies
    assert (found.applied, found.to_status) == (True, P.PAYMENT_STATUS_REFUNDED)
    assert found.detail == "captured after the payment was CANCELLED: refunded automatically"
    return await cause_of_capture(client, payment.id), await outcome(client, payment.id)


async def test_a_late_capture_settles_the_same_from_every_entry_point(
    start_quiet: StartQuiet, stripe_proxy: FaultProxy
) -> None:
    results = {
        "create": await via_create_answer(start_quiet, stripe_proxy),
        "webhook": await via_webhook(start_quiet, stripe_proxy),
        "reconciliation": await via_reconciliation(start_quiet, stripe_proxy),
    }
    # Each path went through settlement with its own cause ...
    assert {path: cause for path, (cause, _) in results.items()} == {
        "create": "rpc",
        "webhook": "webhook",
        "reconciliation": "reconciliation",
    }
    # ... and ended exactly the same way.
    expected = {
        "status": "PAYMENT_STATUS_REFUNDED",
        "late_capture": True,
        "last_transitions": ["SUCCEEDED", "REFUNDED"],
        "refunds": [("REFUND_STATUS_SUCCEEDED", True, "REFUND_REASON_OTHER", True)],
        "at_stripe": [("succeeded", True, True)],
        "journal": ["charge", "refund"],
        "events": [REFUNDED],  # nothing to fulfil: no PaymentSucceeded
        "refunded_events": [(True, True)],
        "alerts": 1.0,
    }
    for path, (_, seen) in results.items():
        assert seen == expected, path
