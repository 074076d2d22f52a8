"""The one place where provider outcomes change our state: used by RPCs, webhooks and
reconciliation alike, always inside the caller's transaction and under the payment's row lock.

Each function moves the payment through the state machine (a conditional UPDATE that refuses
stale or invalid transitions), posts the matching ledger transaction (at most once per provider
object, by a unique constraint) and writes the outbox event, so the three commit together.

Late capture (defence in depth): when Stripe reports a captured PaymentIntent for a payment we
have already closed (CANCELLED or FAILED) — by webhook, by a create call's late answer or by
reconciliation, all of which come through `apply_intent` — the money is neither ignored nor kept.
In the caller's transaction the payment moves to SUCCEEDED (`late_capture_at` set, no
`payment.succeeded` event: nothing must be fulfilled for it), the charge is posted, and a PENDING
refund of the whole amount is held under a deterministic id. `Applied.LATE_CAPTURE` tells the
caller to send that refund to Stripe once its transaction has committed
(`payments.Payments.refund_late_capture`); if that send never happens (a crash, Stripe down),
reconciliation's stuck-refund pass sends it with the same Idempotency-Key. The refund's success
moves the payment to REFUNDED through the ordinary refund code, so the ledger nets to zero.
"""

from __future__ import annotations

import enum
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from meshkit.outbox import publish
from payment_service import convert, store
from payment_service.adapters.stripe_gateway import IntentResult
from payment_service.domain import ledger
from payment_service.domain.states import (
    CAPTURED_STATES,
    LATE_CAPTURE_FROM,
    CauseKind,
    PaymentStatus,
    RefundStatus,
    from_stripe_intent,
    from_stripe_refund,
    status_after_refunds,
)
from payment_service.store import PaymentRecord, RefundRecord
from tickettoken.payment.v1 import payment_pb2

logger = logging.getLogger(__name__)

TOPIC_SUCCEEDED = "payment.succeeded"
TOPIC_FAILED = "payment.failed"
TOPIC_REFUNDED = "payment.refunded"
TOPIC_PAYOUT_CREATED = "payout.created"


class Applied(enum.Enum):
    CHANGED = "changed"  # the state moved (and its money and events were written)
    UNCHANGED = "unchanged"  # already there: a duplicate or a confirmation of what we know
    REFUSED = "refused"  # the state machine does not allow it (stale or out of order)
    # Stripe captured a payment we had closed: charged, and a full refund is held to be sent
    # by the caller after commit (see the module docstring).
    LATE_CAPTURE = "late_capture"


@dataclass(frozen=True, slots=True)
class Cause:
    kind: CauseKind
    ref: str  # RPC method, webhook event id, or reconciliation run id


# Who "created" an automatic late-capture refund (refunds.created_by).
LATE_CAPTURE_ACTOR = "system:late-capture"


def late_capture_refund_id(payment_id: uuid.UUID) -> uuid.UUID:
    """The one automatic refund a late-captured payment can have (deterministic, so a retried
    or concurrent detection finds the same refund instead of making a second one)."""
    return convert.derive_id("late-capture-refund", str(payment_id))


def split_of(p: PaymentRecord) -> ledger.Split:
    return ledger.Split(venue=p.subtotal, platform=p.platform_fee, gas=p.gas_fee, tax=p.tax_total)


class Core:
    """State-changing rules shared by every entry point (build once; holds settings only)."""

    def __init__(self, *, funds_hold_s: float) -> None:
        self.funds_hold = timedelta(seconds=funds_hold_s)

    # -- payment intents ----------------------------------------------------------------------

    async def apply_intent(
        self, conn: asyncpg.Connection, payment: PaymentRecord, result: IntentResult, cause: Cause
    ) -> tuple[PaymentRecord, Applied]:
        """Bring a (row-locked) payment to the PaymentIntent's state, if that moves it forward."""
        target = PaymentStatus.FAILED if result.declined else from_stripe_intent(result.status)
        if result.intent_id and payment.provider_payment_id not in (None, result.intent_id):
            # Another PaymentIntent claims this payment (metadata copied by hand, or a provider
            # that does not deduplicate): never let it move our payment.
            logger.error(
                "payment intent does not belong to the payment",
                extra={"payment_id": str(payment.id), "intent_id": result.intent_id},
            )
            return payment, Applied.REFUSED
        changes: dict[str, Any] = {}
        if result.intent_id and not payment.provider_payment_id:
            changes["provider_payment_id"] = result.intent_id
        if result.charge_id and result.charge_id != payment.provider_charge_id:
            changes["provider_charge_id"] = result.charge_id
        if target is None or target is PaymentStatus.PENDING or target is payment.state:
            if changes:
                payment = await store.update_payment(conn, payment.id, **changes)
            return payment, Applied.UNCHANGED
        if target is PaymentStatus.REQUIRES_ACTION:
            changes["client_secret"] = result.client_secret or None
            changes["next_action_url"] = result.next_action_url or None
        else:
            changes["client_secret"] = None
            changes["next_action_url"] = None
        if target is PaymentStatus.FAILED:
            changes["failure_code"] = result.failure_code or "payment_failed"
            changes["decline_code"] = result.decline_code or None
            changes["failure_message"] = result.failure_message or None
        if target is PaymentStatus.SUCCEEDED and payment.state in LATE_CAPTURE_FROM:
            return await self._late_capture(conn, payment, changes, cause)
        if target is PaymentStatus.SUCCEEDED and payment.state not in (
            PaymentStatus.PENDING,
            PaymentStatus.PROCESSING,
            PaymentStatus.REQUIRES_ACTION,
        ):
            # Already captured and moved on (refunded, disputed): a late "succeeded" is stale.
            return payment, Applied.REFUSED
        moved = await store.transition(
            conn, payment.id, target, cause=cause.kind, cause_ref=cause.ref, **changes
        )
        if moved is None:
            logger.info(
                "payment transition refused",
                extra={
                    "payment_id": str(payment.id),
                    "from_status": payment.status,
                    "to_status": target.name,
                    "cause": cause.kind.value,
                },
            )
            return payment, Applied.REFUSED
        if target is PaymentStatus.SUCCEEDED:
            await self._post_charge(conn, moved, cause)
            await publish(
                conn,
                TOPIC_SUCCEEDED,
                convert.payment_to_proto(moved),
                key=moved.order_id,
                event_id=convert.derive_id(str(moved.id), TOPIC_SUCCEEDED),
            )
        elif target is PaymentStatus.FAILED:
            await publish(
                conn,
                TOPIC_FAILED,
                convert.payment_to_proto(moved),
                key=moved.order_id,
                event_id=convert.derive_id(str(moved.id), TOPIC_FAILED),
            )
        return moved, Applied.CHANGED

    async def _late_capture(
        self,
        conn: asyncpg.Connection,
        payment: PaymentRecord,
        changes: dict[str, Any],
        cause: Cause,
    ) -> tuple[PaymentRecord, Applied]:
        """Stripe captured a payment we closed: record the money, and hold it all for a refund.

        The payment must pass through SUCCEEDED because the ledger (and its invariant check)
        says a captured payment has exactly one charge posting, and the refund's posting later
        takes exactly that back. No `payment.succeeded` event is written: the order was closed,
        nothing may be fulfilled for this money. The refund holds the whole total, so no other
        refund can be taken from it meanwhile.
        """
        closed_as = payment.status
        moved = await store.transition(
            conn,
            payment.id,
            PaymentStatus.SUCCEEDED,
            cause=cause.kind,
            cause_ref=cause.ref,
            from_states=LATE_CAPTURE_FROM,
            late_capture_at=datetime.now(UTC),
            **changes,
        )
        if moved is None:  # pragma: no cover - the caller holds the row lock
            return payment, Applied.REFUSED
        await self._post_charge(conn, moved, cause)
        moved, _ = await self.new_refund(
            conn,
            moved,
            refund_id=late_capture_refund_id(moved.id),
            amount=moved.total,
            reason=payment_pb2.REFUND_REASON_OTHER,
            note=f"automatic refund: Stripe captured the payment after it was {closed_as}",
            ticket_ids=convert.ticket_ids_of(moved),
            created_by=LATE_CAPTURE_ACTOR,
        )
        return moved, Applied.LATE_CAPTURE

    async def _post_charge(
        self, conn: asyncpg.Connection, payment: PaymentRecord, cause: Cause
    ) -> None:
        object_id = payment.provider_payment_id or f"payment:{payment.id}"
        posting = ledger.charge_posting(
            object_id=object_id,
            currency=payment.currency,
            venue_id=payment.venue_id,
            split=split_of(payment),
            available_at=datetime.now(UTC) + self.funds_hold,
        )
        await store.post(
            conn,
            posting,
            cause=f"{cause.kind.value}:{cause.ref}",
            payment_id=payment.id,
            venue_id=payment.venue_id,
        )

    # -- refunds ------------------------------------------------------------------------------

    async def apply_refund(
        self,
        conn: asyncpg.Connection,
        payment: PaymentRecord,
        refund: RefundRecord,
        *,
        provider_status: str,
        provider_refund_id: str,
        failure_reason: str,
        cause: Cause,
    ) -> tuple[PaymentRecord, RefundRecord, Applied]:
        """Apply a refund's provider state to the (row-locked) payment and refund."""
        new = from_stripe_refund(provider_status)
        old = refund.state
        changes: dict[str, object] = {}
        if provider_refund_id and refund.provider_refund_id != provider_refund_id:
            changes["provider_refund_id"] = provider_refund_id
        if old in (RefundStatus.FAILED, RefundStatus.CANCELLED) or new is old:
            if changes:
                refund = await store.update_refund(conn, refund.id, **changes)
            return payment, refund, Applied.UNCHANGED
        cause_text = f"{cause.kind.value}:{cause.ref}"
        object_id = provider_refund_id or refund.provider_refund_id or f"refund:{refund.id}"
        if new is RefundStatus.SUCCEEDED:
            before = await store.posted_refund_total(conn, payment.id)
            share = ledger.refund_split(split_of(payment), before, refund.amount)
            available_at = await store.charge_available_at(conn, payment.id) or datetime.now(UTC)
            await store.post(
                conn,
                ledger.refund_posting(
                    object_id=object_id,
                    currency=payment.currency,
                    venue_id=payment.venue_id,
                    share=share,
                    available_at=available_at,
                ),
                cause=cause_text,
                payment_id=payment.id,
                venue_id=payment.venue_id,
            )
            refund = await store.update_refund(conn, refund.id, status=new.name, **changes)
            payment = await self._refund_totals(
                conn, payment, succeeded=payment.refund_succeeded + refund.amount, cause=cause
            )
            await publish(
                conn,
                TOPIC_REFUNDED,
                payment_pb2.RefundPaymentResponse(
                    refund=convert.refund_to_proto(refund),
                    payment=convert.payment_to_proto(
                        payment, (await store.refunds_of(conn, [payment.id]))[payment.id]
                    ),
                ),
                key=payment.order_id,
                event_id=convert.derive_id(str(refund.id), TOPIC_REFUNDED),
            )
            return payment, refund, Applied.CHANGED
        if new in (RefundStatus.FAILED, RefundStatus.CANCELLED):
            succeeded = payment.refund_succeeded
            if old is RefundStatus.SUCCEEDED:
                await store.post_reversal(
                    conn,
                    object_id,
                    ledger.EntryKind.REFUND,
                    ledger.EntryKind.REFUND_REVERSAL,
                    cause=cause_text,
                )
                succeeded -= refund.amount
            refund = await store.update_refund(
                conn,
                refund.id,
                status=new.name,
                failure_reason=failure_reason or None,
                **changes,
            )
            payment = await self._refund_totals(
                conn,
                payment,
                succeeded=succeeded,
                held=payment.refund_held - refund.amount,
                cause=cause,
            )
            return payment, refund, Applied.CHANGED
        # pending / requires_action: only the provider's id and status are news.
        refund = await store.update_refund(conn, refund.id, status=new.name, **changes)
        return payment, refund, Applied.CHANGED

    async def _refund_totals(
        self,
        conn: asyncpg.Connection,
        payment: PaymentRecord,
        *,
        succeeded: int,
        held: int | None = None,
        cause: Cause,
    ) -> PaymentRecord:
        changes: dict[str, object] = {"refund_succeeded": succeeded}
        if held is not None:
            changes["refund_held"] = held
        payment = await store.update_payment(conn, payment.id, **changes)
        if payment.state in CAPTURED_STATES or payment.state is PaymentStatus.REFUNDED:
            target = status_after_refunds(payment.total, succeeded)
            if target is not payment.state or target is PaymentStatus.PARTIALLY_REFUNDED:
                moved = await store.transition(
                    conn, payment.id, target, cause=cause.kind, cause_ref=cause.ref
                )
                if moved is not None:
                    payment = moved
        return payment

    async def new_refund(
        self,
        conn: asyncpg.Connection,
        payment: PaymentRecord,
        *,
        refund_id: uuid.UUID,
        amount: int,
        reason: int,
        note: str,
        ticket_ids: list[str],
        created_by: str,
        provider_refund_id: str | None = None,
    ) -> tuple[PaymentRecord, RefundRecord]:
        """Hold `amount` of a (row-locked) payment for a new PENDING refund."""
        refund = await store.insert_refund(
            conn,
            {
                "id": refund_id,
                "payment_id": payment.id,
                "status": RefundStatus.PENDING.name,
                "amount": amount,
                "currency": payment.currency,
                "reason": reason,
                "note": note,
                "ticket_ids": ticket_ids,
                "provider_refund_id": provider_refund_id,
                "created_by": created_by,
            },
        )
        payment = await store.update_payment(
            conn, payment.id, refund_held=payment.refund_held + amount
        )
        return payment, refund

    # -- disputes -----------------------------------------------------------------------------

    async def apply_dispute(
        self,
        conn: asyncpg.Connection,
        payment: PaymentRecord,
        *,
        dispute_id: str,
        amount: int,
        cause: Cause,
    ) -> tuple[PaymentRecord, Applied]:
        """An opened dispute: DISPUTED, and the disputed venue money moved into reserve."""
        if payment.state not in CAPTURED_STATES:
            return payment, (
                Applied.UNCHANGED if payment.state is PaymentStatus.DISPUTED else Applied.REFUSED
            )
        disputed = min(amount, payment.subtotal) if amount > 0 else payment.subtotal
        available_at = await store.charge_available_at(conn, payment.id) or datetime.now(UTC)
        posted = await store.post(
            conn,
            ledger.dispute_posting(
                object_id=dispute_id,
                currency=payment.currency,
                venue_id=payment.venue_id,
                amount=disputed,
                available_at=available_at,
            ),
            cause=f"{cause.kind.value}:{cause.ref}",
            payment_id=payment.id,
            venue_id=payment.venue_id,
        )
        moved = await store.transition(
            conn, payment.id, PaymentStatus.DISPUTED, cause=cause.kind, cause_ref=cause.ref
        )
        if moved is None and not posted:
            return payment, Applied.UNCHANGED
        return moved or payment, Applied.CHANGED
