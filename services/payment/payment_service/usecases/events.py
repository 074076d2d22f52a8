"""The contract messages this service's entities leave in: its events, and the message pieces
(money, timestamps, contact, event details, fee breakdown) the API shows them with too.

Events are messages of their own (`tickettoken.payment.v1.events_pb2`), never RPC responses:
they carry what consumers need (the buyer's contact, the tickets, the event) so nft, notify and
integration never read payment's tables. Their ids derive from the aggregate and what happened
(`domain.ids.event_id`), so two racing paths cannot announce one change twice.
"""

from __future__ import annotations

from meshkit.convert import message_from
from meshkit.convert import timestamp as ts
from payment_service.domain.fees import FeeQuote, Jurisdiction, TaxQuote
from payment_service.domain.model import Contact, EventDetails, Payment, Payout, Refund
from tickettoken.common.v1 import common_pb2
from tickettoken.payment.v1 import events_pb2, payment_pb2

# -- pieces --------------------------------------------------------------------------------------


def money(currency: str, amount: int) -> common_pb2.Money:
    return common_pb2.Money(currency=currency, amount_minor=amount)


def contact_proto(c: Contact) -> common_pb2.ContactInfo:
    return message_from(common_pb2.ContactInfo, c)


def event_details_proto(e: EventDetails) -> payment_pb2.EventDetails:
    details = payment_pb2.EventDetails(
        event_name=e.event_name, venue_name=e.venue_name, image_url=e.image_url
    )
    if e.starts_at is not None:
        details.starts_at.CopyFrom(ts(e.starts_at))
    return details


def jurisdiction_proto(j: Jurisdiction) -> payment_pb2.TaxJurisdiction:
    return payment_pb2.TaxJurisdiction(
        country_code=j.country_code,
        region_code=j.region_code,
        locality=j.locality,
        postal_code=j.postal_code,
        entertainment_tax_applies=j.entertainment_tax_applies,
    )


def tax_proto(currency: str, tax: TaxQuote) -> payment_pb2.TaxBreakdown:
    return payment_pb2.TaxBreakdown(
        jurisdiction=jurisdiction_proto(tax.jurisdiction),
        state_tax_bps=tax.rates.state_bps,
        state_tax=money(currency, tax.state_tax),
        local_tax_bps=tax.rates.local_bps,
        local_tax=money(currency, tax.local_tax),
        special_tax_bps=tax.rates.special_bps,
        special_tax=money(currency, tax.special_tax),
        total_tax=money(currency, tax.total_tax),
    )


def fees_proto(q: FeeQuote) -> payment_pb2.FeeBreakdown:
    c = q.currency
    return payment_pb2.FeeBreakdown(
        subtotal=money(c, q.subtotal),
        ticket_count=q.ticket_count,
        venue_tier=payment_pb2.VenueTier.ValueType(int(q.tier)),
        platform_fee_bps=q.platform_fee_bps,
        platform_fee=money(c, q.platform_fee),
        gas_fee_per_ticket=money(c, q.gas_fee_per_ticket),
        gas_fee=money(c, q.gas_fee),
        tax=tax_proto(c, q.tax),
        total=money(c, q.total),
        venue_payout=money(c, q.venue_payout),
    )


# -- events --------------------------------------------------------------------------------------


def payment_succeeded(p: Payment) -> events_pb2.PaymentSucceeded:
    """The tickets are paid for: everything nft needs to mint and notify needs to confirm."""
    c = p.currency
    event = events_pb2.PaymentSucceeded(
        payment_id=str(p.id),
        order_id=p.order_id,
        venue_id=p.venue_id,
        event_id=p.event_id,
        buyer_id=p.buyer_id,
        buyer_contact=contact_proto(p.buyer_contact),
        tickets=[
            events_pb2.TicketLine(
                ticket_id=t.ticket_id,
                ticket_type_id=t.line.ticket_type_id,
                description=t.line.description,
                section=t.line.section,
                row=t.line.row,
                seat=t.line.seat,
                unit_price=money(c, t.line.unit_price),
            )
            for t in p.tickets
        ],
        event=event_details_proto(p.event),
        total=money(c, p.total),
        provider=p.provider,
        provider_payment_id=p.provider_payment_id or "",
        metadata=dict(p.metadata),
        marketing_consent=p.marketing_consent,
    )
    if p.fees is not None:
        event.fees.CopyFrom(fees_proto(p.fees))
    event.succeeded_at.CopyFrom(ts(p.succeeded_at or p.updated_at))
    return event


def payment_failed(p: Payment) -> events_pb2.PaymentFailed:
    return events_pb2.PaymentFailed(
        payment_id=str(p.id),
        order_id=p.order_id,
        venue_id=p.venue_id,
        event_id=p.event_id,
        buyer_id=p.buyer_id,
        buyer_contact=contact_proto(p.buyer_contact),
        event=event_details_proto(p.event),
        total=money(p.currency, p.total),
        failure_code=p.failure_code or "",
        decline_code=p.decline_code or "",
        failure_message=p.failure_message or "",
        failed_at=ts(p.updated_at),
    )


def payment_refunded(p: Payment, refund: Refund) -> events_pb2.PaymentRefunded:
    """A refund succeeded (`p` is the payment with the refund counted): revoke its tickets and
    tell the buyer. A refund that makes the payment fully refunded cancels every ticket of it,
    whichever tickets it named (none, when it refunded the remainder by amount or was made at
    Stripe): nft revokes each at most once."""
    c = p.currency
    full = p.refund_succeeded >= p.total
    return events_pb2.PaymentRefunded(
        payment_id=str(p.id),
        refund_id=str(refund.id),
        order_id=p.order_id,
        venue_id=p.venue_id,
        event_id=p.event_id,
        buyer_id=p.buyer_id,
        buyer_contact=contact_proto(p.buyer_contact),
        event=event_details_proto(p.event),
        amount=money(c, refund.amount),
        refunded_total=money(c, p.refund_succeeded),
        payment_total=money(c, p.total),
        full_refund=full,
        ticket_ids=p.ticket_ids if full else list(refund.ticket_ids),
        reason=payment_pb2.RefundReason.ValueType(int(refund.reason)),
        provider_refund_id=refund.provider_refund_id or "",
        refunded_at=ts(refund.updated_at),
    )


def payout_created(payout: Payout) -> events_pb2.PayoutCreated:
    c = payout.currency
    event = events_pb2.PayoutCreated(
        payout_id=str(payout.id),
        venue_id=payout.venue_id,
        amount=money(c, payout.amount),
        fee=money(c, payout.fee),
        net_amount=money(c, payout.net_amount),
        instant=payout.instant,
        provider_payout_id=payout.provider_payout_id or "",
        created_at=ts(payout.created_at),
    )
    if payout.expected_arrival_at is not None:
        event.expected_arrival_at.CopyFrom(ts(payout.expected_arrival_at))
    return event
