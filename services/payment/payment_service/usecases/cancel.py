"""CancelPayment: cancel an uncaptured payment — at Stripe first, and only ever to Stripe's
real state.

A payment is cancelled only through its PaymentIntent: Stripe cancels it (or refuses because it
moved on, e.g. it just succeeded, and we settle what it really is). An open payment with no
PaymentIntent id recorded is in doubt: its create call may be waiting on Stripe right now, or it
crashed after Stripe created and charged the intent but before we recorded the id. Nothing here
can tell those apart from "Stripe never saw it", so it is NOT cancelled locally: the answer is
`CreateInProgress` (ABORTED with RetryInfo), and nothing changes.

The doubt ends from Stripe's side: the create call records Stripe's answer; after a crash,
Stripe's webhook (every PaymentIntent carries our payment id in its metadata) or the client's
retry of CreatePayment (same Stripe Idempotency-Key) records the intent. Then a retried cancel
either cancels the intent at Stripe or finds it captured (an invalid transition: refund it
instead). If Stripe never got the request, reconciliation gives the payment up as FAILED after
its threshold.

Not chosen: looking the intent up at Stripe. Search by metadata is eventually consistent (a miss
proves nothing), listing cannot filter by metadata, and replaying the create with its
idempotency key would create and confirm the charge if Stripe never saw it, the opposite of a
cancel. Should a capture still reach a payment closed here, settlement charges and refunds it
automatically (late capture).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from meshkit.db import Database
from payment_service.adapters.stripe_gateway import StripeGateway, StripeRejected
from payment_service.domain import ids
from payment_service.domain.errors import CreateInProgress, InvalidTransition, PaymentNotFound
from payment_service.domain.model import Payment
from payment_service.domain.settlement import Cause
from payment_service.domain.states import OPEN_STATES, CauseKind, PaymentStatus
from payment_service.usecases.reads import PaymentView, load
from payment_service.usecases.settlement import Settlement

# RetryInfo bounds for a cancel that must wait for the create: a create normally answers within
# a second; one whose outcome stayed unknown for long (a crash) waits for Stripe's webhook or
# reconciliation, so the hint grows with the payment's age up to the maximum.
RETRY_MIN_S = 1.0
RETRY_MAX_S = 30.0


def not_cancellable(payment: Payment) -> InvalidTransition:
    return InvalidTransition(
        f"a {payment.status.name} payment cannot be cancelled",
        {"status": payment.status.name, "to_status": PaymentStatus.CANCELLED.name},
    )


def create_in_progress(payment: Payment) -> CreateInProgress:
    pending_s = max(0.0, (datetime.now(UTC) - payment.updated_at).total_seconds())
    return CreateInProgress(
        "the payment is still being created at the payment provider (or its outcome is not "
        "known yet); retry the cancellation later",
        {"payment_id": str(payment.id), "status": payment.status.name},
        retry_after=min(RETRY_MAX_S, max(RETRY_MIN_S, pending_s)),
    )


class Cancellations:
    """Cancels uncaptured payments (build once at start)."""

    def __init__(self, *, db: Database, gateway: StripeGateway, settlement: Settlement) -> None:
        self.db = db
        self.gateway = gateway
        self.settlement = settlement

    async def cancel(
        self, payment_id: uuid.UUID, reason: str, *, authorize: Callable[[Payment], None]
    ) -> PaymentView:
        """`reason` is kept with the transition (Stripe's own cancellation_reason has other
        values, and localstripe refuses it)."""
        view = await load(self.db, payment_id)
        if view is None:
            raise PaymentNotFound(f"payment {payment_id} not found")
        authorize(view.payment)
        payment = view.payment
        if payment.status is PaymentStatus.CANCELLED:
            return view
        if payment.status not in OPEN_STATES:
            raise not_cancellable(payment)
        if not payment.provider_payment_id:
            raise create_in_progress(payment)
        try:
            result = await self.gateway.cancel_intent(
                idempotency_key=ids.cancel_key(payment.id),
                intent_id=payment.provider_payment_id,
            )
        except StripeRejected:
            # Stripe refuses to cancel an intent that moved on (e.g. it just succeeded): learn
            # its real state and settle that instead.
            result = await self.gateway.retrieve_intent(payment.provider_payment_id)
        cause = Cause(CauseKind.RPC, f"CancelPayment:{reason}")
        settled = await self.settlement.settle_intent(payment.id, result, cause)
        if settled.after.status is not PaymentStatus.CANCELLED:
            raise not_cancellable(settled.after)
        after = await load(self.db, payment_id)
        assert after is not None
        return after
