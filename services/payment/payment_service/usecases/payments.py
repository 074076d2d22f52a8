"""CreatePayment, GetPayment, ListPayments.

Creating a payment runs in recoverable phases, each one committed before the next starts:

1. a PENDING payment row under an id derived from (caller, idempotency key), so a retry after
   any failure finds the same row instead of making a second payment;
2. the Stripe PaymentIntent, created and confirmed in one call with an Idempotency-Key derived
   from that id (Stripe replays its first answer to a retried key);
3. the outcome settled (`settlement.settle_intent`) — the same step webhooks and reconciliation
   use, late capture included — with the ledger posting and the event in one transaction.

If phase 2 fails in transport, the RPC fails retryably (the kit releases the idempotency key),
the row stays PENDING, and either the client's retry, the webhook, or reconciliation finishes it.

The row keeps the trace context of the request that created it, and the PaymentIntent carries
it in its metadata (`traceparent`, `tracestate`): the same values on every retry of phase 2 (the
stored ones, not the retry's), so Stripe's idempotent replay sees the same parameters. A webhook
that settles the payment later continues that trace (usecases/webhooks.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from meshkit.db import Database
from meshkit.events import TraceContext
from meshkit.tracing import TRACEPARENT, TRACESTATE
from payment_service.adapters.stripe_gateway import StripeGateway, StripeRejected
from payment_service.domain import ids, provider
from payment_service.domain.cart import check_total, price_cart
from payment_service.domain.errors import PaymentNotFound, TotalMismatch
from payment_service.domain.fees import Pricing
from payment_service.domain.model import (
    Contact,
    EventDetails,
    LineItem,
    NewPayment,
    Payment,
    PaymentFilter,
)
from payment_service.domain.settlement import Cause
from payment_service.domain.states import CauseKind, PaymentStatus
from payment_service.store import payments, refunds
from payment_service.usecases.reads import PaymentView, load, venue_jurisdiction
from payment_service.usecases.settlement import Settlement
from payment_service.usecases.tiers import VenueTiers

CREATE = Cause(CauseKind.RPC, "CreatePayment")


@dataclass(frozen=True, slots=True)
class CreatePayment:
    """What a buyer asks to pay for."""

    idempotency_key: str
    order_id: str
    venue_id: str
    event_id: str
    buyer_id: str
    currency: str
    payment_method_id: str
    line_items: tuple[LineItem, ...]
    buyer_contact: Contact
    event: EventDetails
    metadata: Mapping[str, str]
    expected_total: int | None = None
    return_url: str = ""
    marketing_consent: bool = False


@dataclass(frozen=True, slots=True)
class PaymentRules:
    """This deployment's limits on payments."""

    supported_currencies: Sequence[str]
    max_tickets_per_order: int
    max_payment_minor: int


STRIPE_METADATA_VALUE_MAX = 500
"""Stripe refuses longer metadata values."""


def intent_metadata(payment: Payment) -> dict[str, str]:
    """The PaymentIntent's metadata: our ids, and the trace context the payment was created in
    (tracestate only within Stripe's 500-character limit for a value)."""
    metadata = {
        "payment_id": str(payment.id),
        "order_id": payment.order_id,
        "venue_id": payment.venue_id,
        "event_id": payment.event_id,
        "buyer_id": payment.buyer_id,
    }
    if payment.traceparent:
        metadata[TRACEPARENT] = payment.traceparent
        if payment.tracestate and len(payment.tracestate) <= STRIPE_METADATA_VALUE_MAX:
            metadata[TRACESTATE] = payment.tracestate
    return metadata


class Payments:
    """Create and read payments (build once at start)."""

    def __init__(
        self,
        *,
        db: Database,
        gateway: StripeGateway,
        settlement: Settlement,
        pricing: Pricing,
        tiers: VenueTiers,
        rules: PaymentRules,
    ) -> None:
        self.db = db
        self.gateway = gateway
        self.settlement = settlement
        self.pricing = pricing
        self.tiers = tiers
        self.rules = rules

    async def create(self, order: CreatePayment, *, actor: str) -> PaymentView:
        cart = price_cart(
            order.currency,
            order.line_items,
            supported_currencies=self.rules.supported_currencies,
            max_tickets=self.rules.max_tickets_per_order,
            require_subtotal=True,
        )
        payment_id = ids.payment_id(actor, order.idempotency_key)
        trace = TraceContext.current()
        async with self.db.transaction() as conn:
            jurisdiction = await venue_jurisdiction(conn, order.venue_id)
            tier = await self.tiers.of(conn, order.venue_id)
            quote = self.pricing.quote(
                order.currency, cart.subtotal, cart.ticket_count, tier, jurisdiction
            )
            check_total(quote.total, self.rules.max_payment_minor)
            if order.expected_total is not None and order.expected_total != quote.total:
                raise TotalMismatch(
                    "the total changed since it was shown",
                    {"expected": str(order.expected_total), "total": str(quote.total)},
                )
            inserted = await payments.insert(
                conn,
                NewPayment(
                    id=payment_id,
                    order_id=order.order_id,
                    venue_id=order.venue_id,
                    event_id=order.event_id,
                    buyer_id=order.buyer_id,
                    currency=order.currency,
                    quote=quote,
                    payment_method_id=order.payment_method_id,
                    line_items=ids.assign_ticket_ids(payment_id, order.line_items),
                    buyer_contact=order.buyer_contact,
                    event=order.event,
                    metadata=order.metadata,
                    created_by=actor,
                    traceparent=trace.traceparent,
                    tracestate=trace.tracestate,
                    marketing_consent=order.marketing_consent,
                ),
            )
            if inserted:
                await payments.record_creation(conn, payment_id, CREATE)
            payment = await payments.get(conn, payment_id)
        assert payment is not None
        if payment.status is PaymentStatus.PENDING and not payment.provider_payment_id:
            payment = await self._confirm(payment, order.return_url)
        if payment.late_capture_at is not None:
            # Only a late capture gets a refund during a create: show it with the payment.
            view = await load(self.db, payment.id)
            assert view is not None
            return view
        return PaymentView(payment)

    async def _confirm(self, payment: Payment, return_url: str) -> Payment:
        try:
            result = await self.gateway.create_intent(
                idempotency_key=ids.intent_key(payment.id),
                amount=payment.total,
                currency=payment.currency,
                payment_method=payment.payment_method_id,
                metadata=intent_metadata(payment),
                return_url=return_url,
            )
        except StripeRejected as exc:
            # Stripe will never accept this request as sent (e.g. an unknown payment method):
            # a failed payment, recorded like a decline.
            result = provider.refused(exc.code, exc.message)
        # Stripe may answer after the payment was closed here (e.g. reconciliation gave up on
        # this slow create): settlement then charges and refunds it.
        return (await self.settlement.settle_intent(payment.id, result, CREATE)).after

    async def get(
        self, payment_id: uuid.UUID, *, authorize: Callable[[Payment], None]
    ) -> PaymentView:
        """The payment, if `authorize` lets the caller see it (it raises otherwise)."""
        view = await load(self.db, payment_id)
        if view is None:
            raise PaymentNotFound(f"payment {payment_id} not found")
        authorize(view.payment)
        return view

    async def find(
        self, flt: PaymentFilter, *, limit: int, after: tuple[datetime, uuid.UUID] | None
    ) -> list[PaymentView]:
        """Payments matching `flt` (already narrowed to what the caller may see), newest first."""
        async with self.db.acquire() as conn:
            rows = await payments.list_payments(conn, flt, limit=limit, after=after)
            found = await refunds.of_payments(conn, [p.id for p in rows])
        return [PaymentView(p, found[p.id]) for p in rows]
