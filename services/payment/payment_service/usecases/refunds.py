"""RefundPayment.

The refundable remainder is held under the payment's row lock before Stripe is called, so
concurrent refunds can never exceed what was paid (juspay/hyperswitch#13182); Stripe gets a key
derived from the refund id, which derives from (caller, idempotency key), so a retry resumes the
same refund. A refund whose Stripe call fails in transport stays PENDING, holding its amount,
until the client's retry or reconciliation sends it with the same key.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from meshkit.callerlimits import CallerRateLimiter
from meshkit.db import Database
from payment_service.domain import ids
from payment_service.domain import refunds as rules
from payment_service.domain.errors import PaymentNotFound
from payment_service.domain.model import Payment, Refund, RefundReason
from payment_service.domain.settlement import Cause, RefundHold
from payment_service.domain.states import CauseKind, RefundStatus
from payment_service.store import refunds
from payment_service.usecases.reads import PaymentView, load
from payment_service.usecases.settlement import Settlement

REFUND = Cause(CauseKind.RPC, "RefundPayment")


@dataclass(frozen=True, slots=True)
class RefundPayment:
    idempotency_key: str
    payment_id: uuid.UUID
    amount: int | None  # None: the whole refundable remainder
    currency: str | None  # of `amount`, when given
    reason: RefundReason
    note: str
    ticket_ids: Sequence[str]


class Refunds:
    """Refunds on request (build once at start)."""

    def __init__(self, *, db: Database, settlement: Settlement, limiter: CallerRateLimiter) -> None:
        self.db = db
        self.settlement = settlement
        self.limiter = limiter

    async def refund(
        self, request: RefundPayment, *, actor: str, authorize: Callable[[Payment], None]
    ) -> tuple[Refund, PaymentView]:
        view = await load(self.db, request.payment_id)
        if view is None:
            raise PaymentNotFound(f"payment {request.payment_id} not found")
        authorize(view.payment)
        rules.check_request(view.payment, request.currency, request.ticket_ids)
        refund_id = ids.refund_id(actor, request.idempotency_key)
        await self.limiter.check(actor)
        async with self.settlement.session(REFUND) as s:
            refund = await refunds.get(s.conn, refund_id)
            payment = await s.lock_payment(request.payment_id)
            if refund is None:
                amount, tickets = rules.plan(payment, request.amount, request.ticket_ids)
                payment, refund = await s.hold_refund(
                    payment,
                    RefundHold(
                        refund_id=refund_id,
                        amount=amount,
                        reason=request.reason,
                        note=request.note,
                        ticket_ids=tickets,
                        created_by=actor,
                    ),
                )
        if refund.status is RefundStatus.PENDING and not refund.provider_refund_id:
            refund = await self.settlement.send_refund(payment, refund, REFUND)
        after = await load(self.db, request.payment_id)
        assert after is not None
        return refund, after
