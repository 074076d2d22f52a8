"""Settlement: the one step that applies a provider's result to our state.

Create, cancel, refund, webhooks and reconciliation all come through here, so a result has the
same consequences whoever learnt it: the decision (`domain.settlement`), the transition (a
conditional UPDATE that refuses stale or invalid moves), the ledger posting (at most once per
provider object) and the contract event, in one transaction under the object's row lock.

    async with settlement.session(cause) as s:     # one transaction
        payment = await s.lock_payment(payment_id)
        payment, applied = await s.apply_intent(payment, result)
    # committed; a late capture's refund has been sent

or, for a caller with nothing else to do in the transaction, `settle_intent(...)`.

The late-capture protocol lives here only: when Stripe reports a capture for a payment we
closed, `apply_intent` charges it and holds a full refund in the transaction, and the session,
once committed, sends that refund to Stripe (Idempotency-Key `tt-autorefund-<payment id>`),
raises the alert (an ERROR log line and `payment_late_capture_refunds_total`) and reports the
payment as it stands afterwards. A send that fails is logged and left to reconciliation, which
sends the PENDING refund again with the same key; the caller's own outcome is not failed for it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from google.protobuf.message import Message
from prometheus_client import CollectorRegistry, Counter

from meshkit.db import Database
from meshkit.events import EventPublisher
from payment_service.adapters.stripe_gateway import StripeGateway, StripeRejected
from payment_service.domain import ids, ledger
from payment_service.domain import payouts as payout_rules
from payment_service.domain.model import Payment, Payout, Refund
from payment_service.domain.provider import IntentResult, PayoutResult, RefundResult
from payment_service.domain.settlement import (
    Announce,
    Applied,
    Cause,
    RefundHold,
    Value,
    Verdict,
    charge_posting,
    decide_dispute,
    decide_intent,
    decide_payout,
    decide_refund,
    late_capture_hold,
    refund_object_id,
    status_for_refunds,
)
from payment_service.domain.states import PaymentStatus, RefundStatus
from payment_service.store import ledger as ledger_store
from payment_service.store import payments, payouts, refunds
from payment_service.usecases import events
from payment_service.usecases.reads import PaymentView, load

logger = logging.getLogger(__name__)


class SettlementMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.late_capture_refunds = Counter(
            "payment_late_capture_refunds_total",
            "Automatic full refunds of money Stripe captured for a payment closed here "
            "(CANCELLED or FAILED).",
            registry=registry,
        )


@dataclass(frozen=True, slots=True)
class Settled:
    """A payment before and after a provider result was applied to it."""

    before: Payment
    after: Payment
    applied: Applied


class Session:
    """One settlement transaction (`Settlement.session`): apply results to row-locked objects."""

    def __init__(self, settlement: Settlement, conn: asyncpg.Connection, cause: Cause) -> None:
        self._s = settlement
        self.conn = conn
        self.cause = cause
        # Late captures found in this transaction: payment id → the state it was closed in.
        self.late_captures: dict[uuid.UUID, PaymentStatus] = {}
        # After commit: each late-captured payment as it stands once its refund was sent.
        self.after_commit: dict[uuid.UUID, Payment] = {}

    # -- locks --------------------------------------------------------------------------------

    async def lock_payment(self, payment_id: uuid.UUID) -> Payment:
        payment = await payments.get(self.conn, payment_id, for_update=True)
        if payment is None:
            raise LookupError(f"payment {payment_id} does not exist")
        return payment

    async def lock_refund(self, refund_id: uuid.UUID) -> Refund:
        refund = await refunds.get(self.conn, refund_id, for_update=True)
        if refund is None:
            raise LookupError(f"refund {refund_id} does not exist")
        return refund

    async def lock_payout(self, payout_id: uuid.UUID) -> Payout:
        payout = await payouts.get(self.conn, payout_id, for_update=True)
        if payout is None:
            raise LookupError(f"payout {payout_id} does not exist")
        return payout

    # -- payment intents ----------------------------------------------------------------------

    async def apply_intent(self, payment: Payment, result: IntentResult) -> tuple[Payment, Applied]:
        """Bring a (row-locked) payment to the PaymentIntent's state, if that moves it forward."""
        decision = decide_intent(payment, result)
        if decision.verdict is Verdict.REFUSE:
            # Stale results are routine (INFO); another payment's intent is a data error.
            logger.log(
                logging.ERROR if decision.target is None else logging.INFO,
                "payment result refused: %s",
                decision.why,
                extra={"payment_id": str(payment.id), "intent_id": result.intent_id},
            )
            return payment, Applied.REFUSED
        if decision.verdict is Verdict.KEEP:
            if decision.changes:
                payment = await payments.update(self.conn, payment.id, decision.changes)
            return payment, Applied.UNCHANGED
        assert decision.target is not None
        changes: dict[str, Value] = dict(decision.changes)
        if decision.verdict is Verdict.LATE_CAPTURE:
            changes["late_capture_at"] = datetime.now(UTC)
        moved = await payments.transition(
            self.conn,
            payment.id,
            decision.target,
            cause=self.cause,
            changes=changes,
            from_states=decision.from_states,
        )
        if moved is None:
            logger.info(
                "payment transition refused",
                extra={
                    "payment_id": str(payment.id),
                    "from_status": payment.status.name,
                    "to_status": decision.target.name,
                    "cause": self.cause.kind.value,
                },
            )
            return payment, Applied.REFUSED
        if decision.post_charge:
            await ledger_store.post(
                self.conn,
                charge_posting(moved, datetime.now(UTC) + self._s.funds_hold),
                cause=str(self.cause),
                payment_id=moved.id,
                venue_id=moved.venue_id,
            )
        if decision.announce is Announce.SUCCEEDED:
            await self._publish_payment(moved, events.payment_succeeded(moved), Announce.SUCCEEDED)
        elif decision.announce is Announce.FAILED:
            await self._publish_payment(moved, events.payment_failed(moved), Announce.FAILED)
        if decision.verdict is Verdict.LATE_CAPTURE:
            # Charged (the ledger says a captured payment has exactly one charge posting) and
            # held whole for the automatic refund, sent once this transaction has committed.
            moved, _ = await self.hold_refund(moved, late_capture_hold(moved, payment.status))
            self.late_captures[moved.id] = payment.status
            return moved, Applied.LATE_CAPTURE
        return moved, Applied.CHANGED

    # -- refunds ------------------------------------------------------------------------------

    async def hold_refund(self, payment: Payment, hold: RefundHold) -> tuple[Payment, Refund]:
        """Hold `hold.amount` of a (row-locked) payment for a new PENDING refund."""
        refund = await refunds.insert(self.conn, payment.id, payment.currency, hold)
        payment = await payments.update(
            self.conn, payment.id, {"refund_held": payment.refund_held + hold.amount}
        )
        return payment, refund

    async def apply_refund(
        self, payment: Payment, refund: Refund, result: RefundResult
    ) -> tuple[Payment, Refund, Applied]:
        """Apply a refund's provider state to the (row-locked) payment and refund."""
        decision = decide_refund(payment, refund, result)
        if decision.applied is not Applied.CHANGED:
            if decision.changes:
                refund = await refunds.update(self.conn, refund.id, decision.changes)
            return payment, refund, decision.applied
        cause = str(self.cause)
        object_id = refund_object_id(refund, result.refund_id)
        if decision.share is not None:
            available_at = await ledger_store.charge_available_at(self.conn, payment.id)
            await ledger_store.post(
                self.conn,
                ledger.refund_posting(
                    object_id=object_id,
                    currency=payment.currency,
                    venue_id=payment.venue_id,
                    share=decision.share,
                    available_at=available_at or datetime.now(UTC),
                ),
                cause=cause,
                payment_id=payment.id,
                venue_id=payment.venue_id,
            )
        if decision.reverse:
            await ledger_store.post_reversal(
                self.conn,
                object_id,
                ledger.EntryKind.REFUND,
                ledger.EntryKind.REFUND_REVERSAL,
                cause=cause,
            )
        refund = await refunds.update(
            self.conn, refund.id, decision.changes, status=decision.status
        )
        if decision.succeeded is not None:
            payment = await self._refund_totals(payment, decision.succeeded, decision.held)
        if decision.announce is Announce.REFUNDED:
            await self._s.events.publish(
                self.conn,
                events.payment_refunded(payment, refund),
                aggregate_type="payment",
                aggregate_id=str(payment.id),
                event_id=ids.event_id(refund.id, Announce.REFUNDED.value),
            )
        return payment, refund, Applied.CHANGED

    async def _refund_totals(self, payment: Payment, succeeded: int, held: int | None) -> Payment:
        changes: dict[str, Value] = {"refund_succeeded": succeeded}
        if held is not None:
            changes["refund_held"] = held
        payment = await payments.update(self.conn, payment.id, changes)
        target = status_for_refunds(payment, succeeded)
        if target is not None:
            moved = await payments.transition(self.conn, payment.id, target, cause=self.cause)
            if moved is not None:
                payment = moved
        return payment

    # -- disputes -----------------------------------------------------------------------------

    async def apply_dispute(
        self, payment: Payment, dispute_id: str, amount: int
    ) -> tuple[Payment, Applied]:
        """An opened dispute: DISPUTED, and the disputed venue money moved into reserve."""
        decision = decide_dispute(payment, amount)
        if decision.applied is not Applied.CHANGED:
            return payment, decision.applied
        available_at = await ledger_store.charge_available_at(self.conn, payment.id)
        posted = await ledger_store.post(
            self.conn,
            ledger.dispute_posting(
                object_id=dispute_id,
                currency=payment.currency,
                venue_id=payment.venue_id,
                amount=decision.reserve,
                available_at=available_at or datetime.now(UTC),
            ),
            cause=str(self.cause),
            payment_id=payment.id,
            venue_id=payment.venue_id,
        )
        moved = await payments.transition(
            self.conn, payment.id, PaymentStatus.DISPUTED, cause=self.cause
        )
        if moved is None and not posted:
            return payment, Applied.UNCHANGED
        return moved or payment, Applied.CHANGED

    # -- payouts ------------------------------------------------------------------------------

    async def apply_payout(self, payout: Payout, result: PayoutResult) -> Payout:
        """Apply the provider's view of a (row-locked) payout: ids, status, and a reversal of
        its posting if it failed."""
        decision = decide_payout(payout, result)
        if decision.reverse:
            await ledger_store.post_reversal(
                self.conn,
                payout_rules.object_id(payout.id),
                ledger.EntryKind.PAYOUT,
                ledger.EntryKind.PAYOUT_REVERSAL,
                cause=str(self.cause),
            )
        if decision.changes or decision.status is not None:
            payout = await payouts.update(
                self.conn, payout.id, decision.changes, status=decision.status
            )
        if decision.announce is Announce.PAYOUT_CREATED:
            await self._s.events.publish(
                self.conn,
                events.payout_created(payout),
                aggregate_type="payout",
                aggregate_id=str(payout.id),
                event_id=ids.event_id(payout.id, Announce.PAYOUT_CREATED.value),
            )
        return payout

    async def _publish_payment(self, payment: Payment, event: Message, what: Announce) -> None:
        await self._s.events.publish(
            self.conn,
            event,
            aggregate_type="payment",
            aggregate_id=str(payment.id),
            event_id=ids.event_id(payment.id, what.value),
        )


class Settlement:
    """Applies provider results (build once at start; see the module docstring)."""

    def __init__(
        self,
        *,
        db: Database,
        gateway: StripeGateway,
        events: EventPublisher,
        funds_hold_s: float,
        registry: CollectorRegistry,
    ) -> None:
        self.db = db
        self.gateway = gateway
        self.events = events
        self.funds_hold = timedelta(seconds=funds_hold_s)
        self.metrics = SettlementMetrics(registry)

    @asynccontextmanager
    async def session(self, cause: Cause) -> AsyncIterator[Session]:
        """One transaction of settlement steps; once it has committed, the refunds of late
        captures it found are sent (module doc)."""
        async with self.db.transaction() as conn:
            session = Session(self, conn, cause)
            yield session
        for payment_id, closed_as in session.late_captures.items():
            after = await self._refund_late_capture(payment_id, closed_as, cause)
            if after is not None:
                session.after_commit[payment_id] = after

    async def settle_intent(
        self, payment_id: uuid.UUID, result: IntentResult, cause: Cause
    ) -> Settled:
        """Apply a PaymentIntent result to a payment in a transaction of its own."""
        async with self.session(cause) as s:
            before = await s.lock_payment(payment_id)
            after, applied = await s.apply_intent(before, result)
        return Settled(before, s.after_commit.get(payment_id, after), applied)

    async def settle_refund(
        self, payment_id: uuid.UUID, refund_id: uuid.UUID, result: RefundResult, cause: Cause
    ) -> Refund:
        """Apply a refund result in a transaction of its own."""
        async with self.session(cause) as s:
            payment = await s.lock_payment(payment_id)
            refund = await s.lock_refund(refund_id)
            _, refund, _ = await s.apply_refund(payment, refund, result)
        return refund

    async def settle_payout(
        self, payout_id: uuid.UUID, result: PayoutResult, cause: Cause
    ) -> Payout:
        """Apply a payout result in a transaction of its own."""
        async with self.session(cause) as s:
            payout = await s.apply_payout(await s.lock_payout(payout_id), result)
        return payout

    async def send_refund(self, payment: Payment, refund: Refund, cause: Cause) -> Refund:
        """Create the refund at Stripe (the same Idempotency-Key on every try) and settle
        Stripe's answer; a refusal settles as a failed refund."""
        assert payment.provider_payment_id is not None
        try:
            result = await self.gateway.create_refund(
                idempotency_key=ids.refund_key(payment.id, refund.id),
                intent_id=payment.provider_payment_id,
                amount=refund.amount,
                metadata={
                    "refund_id": str(refund.id),
                    "payment_id": str(payment.id),
                    "reason": f"REFUND_REASON_{refund.reason.name}",
                },
            )
        except StripeRejected as exc:
            result = RefundResult(refund_id="", status="failed", failure_reason=exc.code)
        return await self.settle_refund(payment.id, refund.id, result, cause)

    async def _refund_late_capture(
        self, payment_id: uuid.UUID, closed_as: PaymentStatus, cause: Cause
    ) -> Payment | None:
        """Alert, then send the held refund of a late capture; returns the payment as it stands
        afterwards (None if it could not even be read). Never raises (module doc)."""
        refund_id = ids.late_capture_refund_id(payment_id)
        self.metrics.late_capture_refunds.inc()
        try:
            view = await self._load(payment_id)
            logger.error(
                "Stripe captured a payment that was closed here; refunding it automatically",
                extra={
                    "payment_id": str(payment_id),
                    "provider_payment_id": view.payment.provider_payment_id,
                    "closed_as": closed_as.name,
                    "amount": view.payment.total,
                    "currency": view.payment.currency,
                    "refund_id": str(refund_id),
                    "cause": str(cause),
                },
            )
            refund = next((r for r in view.refunds if r.id == refund_id), None)
            if (
                refund is None
                or refund.status is not RefundStatus.PENDING
                or refund.provider_refund_id
            ):
                return view.payment  # already sent (or settled) by someone else
            refund = await self.send_refund(view.payment, refund, cause)
            if refund.status in (RefundStatus.FAILED, RefundStatus.CANCELLED):
                logger.error(
                    "Stripe refused the automatic refund of a late capture; refund it by hand",
                    extra={
                        "payment_id": str(payment_id),
                        "refund_id": str(refund_id),
                        "failure_reason": refund.failure_reason,
                    },
                )
        except Exception:
            logger.warning(
                "automatic refund not sent yet; reconciliation will send it",
                extra={"payment_id": str(payment_id), "refund_id": str(refund_id)},
                exc_info=True,
            )
        try:
            return (await self._load(payment_id)).payment
        except Exception:
            logger.warning("could not read a late-captured payment", exc_info=True)
            return None

    async def _load(self, payment_id: uuid.UUID) -> PaymentView:
        view = await load(self.db, payment_id)
        if view is None:
            raise LookupError(f"payment {payment_id} does not exist")
        return view
