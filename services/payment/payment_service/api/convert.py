"""Proto ⇄ domain: requests into the use cases' inputs, entities and reports into responses.

Requests arrive already checked against the contract's rules (meshkit.validation): ids are
present and well-formed, quantities positive, enums defined, strings bounded. What is left here
is what the contract cannot say about one request as a whole — every price in the request's
currency — and it names the request's field paths like the kit does.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2

from meshkit.convert import dataclass_from
from meshkit.convert import timestamp as ts
from meshkit.errors import FieldViolation, InvalidArgument
from meshkit.paging import Cursor
from payment_service.domain.errors import InvalidInput, Violation
from payment_service.domain.fees import Jurisdiction, VenueTier
from payment_service.domain.model import (
    Contact,
    EventDetails,
    LineItem,
    Payment,
    PaymentFilter,
    Payout,
    Refund,
    RefundReason,
)
from payment_service.domain.states import PaymentStatus
from payment_service.usecases.events import (
    contact_proto,
    event_details_proto,
    money,
)
from payment_service.usecases.events import (
    fees_proto as fees_proto,  # shown as is: a quote is the contract's fee breakdown
)
from payment_service.usecases.payments import CreatePayment
from payment_service.usecases.payouts import Balance, RequestPayout
from payment_service.usecases.reads import PaymentView
from payment_service.usecases.reconciliation import Report
from payment_service.usecases.refunds import RefundPayment
from payment_service.usecases.webhooks import Delivery, Handled
from tickettoken.common.v1 import common_pb2
from tickettoken.payment.v1 import payment_pb2

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _time(stamp: timestamp_pb2.Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def uuids(values: Sequence[str]) -> list[uuid.UUID]:
    """Ids the contract has already checked to be UUIDs."""
    return [uuid.UUID(v) for v in values]


# -- requests ------------------------------------------------------------------------------------


def line_items(items: Sequence[payment_pb2.LineItem], currency: str) -> tuple[LineItem, ...]:
    """The cart; every price must be in the request's currency."""
    wrong = [
        Violation(f"line_items[{i}].unit_price.currency", "must equal currency")
        for i, item in enumerate(items)
        if item.unit_price.currency != currency
    ]
    if wrong:
        raise InvalidInput(wrong)
    return tuple(
        LineItem(
            ticket_type_id=item.ticket_type_id,
            quantity=item.quantity,
            unit_price=item.unit_price.amount_minor,
            description=item.description,
            section=item.section,
            row=item.row,
            seat=item.seat,
            ticket_ids=tuple(item.ticket_ids),
        )
        for item in items
    )


def contact(c: common_pb2.ContactInfo) -> Contact:
    return dataclass_from(Contact, c)


def event_details(e: payment_pb2.EventDetails) -> EventDetails:
    return EventDetails(
        event_name=e.event_name,
        venue_name=e.venue_name,
        starts_at=_time(e.starts_at) if e.HasField("starts_at") else None,
        image_url=e.image_url,
    )


def jurisdiction(j: payment_pb2.TaxJurisdiction) -> Jurisdiction:
    return Jurisdiction(
        country_code=j.country_code.upper(),
        region_code=j.region_code.upper(),
        locality=j.locality,
        postal_code=j.postal_code,
        entertainment_tax_applies=j.entertainment_tax_applies,
    )


def tier(value: int) -> VenueTier | None:
    """A requested tier (UNSPECIFIED: none; the contract refuses undefined values)."""
    return VenueTier(value) if value else None


def create_request(request: payment_pb2.CreatePaymentRequest) -> CreatePayment:
    expected: int | None = None
    if request.HasField("expected_total"):
        if request.expected_total.currency != request.currency:
            raise InvalidInput(
                [Violation("expected_total", "a positive amount in the payment currency")]
            )
        expected = request.expected_total.amount_minor
    return CreatePayment(
        idempotency_key=request.idempotency_key,
        order_id=request.order_id,
        venue_id=request.venue_id,
        event_id=request.event_id,
        buyer_id=request.buyer_id,
        currency=request.currency,
        payment_method_id=request.payment_method_id,
        line_items=line_items(request.line_items, request.currency),
        buyer_contact=contact(request.buyer_contact),
        event=event_details(request.event),
        metadata=dict(request.metadata),
        expected_total=expected,
        return_url=request.return_url,
        marketing_consent=request.marketing_consent,
    )


def refund_request(request: payment_pb2.RefundPaymentRequest) -> RefundPayment:
    has_amount = request.HasField("amount")
    return RefundPayment(
        idempotency_key=request.idempotency_key,
        payment_id=uuid.UUID(request.payment_id),
        amount=request.amount.amount_minor if has_amount else None,
        currency=request.amount.currency if has_amount else None,
        reason=RefundReason(request.reason),
        note=request.note,
        ticket_ids=list(request.ticket_ids),
    )


def cancellation_reason(request: payment_pb2.CancelPaymentRequest) -> str:
    return payment_pb2.CancellationReason.Name(request.reason)


def payout_request(request: payment_pb2.RequestPayoutRequest) -> RequestPayout:
    return RequestPayout(
        idempotency_key=request.idempotency_key,
        venue_id=request.venue_id,
        currency=request.amount.currency,
        amount=request.amount.amount_minor,
        instant=request.instant,
        statement_descriptor=request.statement_descriptor,
    )


def payment_filter(request: payment_pb2.ListPaymentsRequest) -> PaymentFilter:
    created = request.created
    return PaymentFilter(
        buyer_id=request.buyer_id,
        venue_ids=[request.venue_id] if request.venue_id else [],
        event_id=request.event_id,
        order_id=request.order_id,
        statuses=[PaymentStatus(s) for s in request.statuses],
        created_from=_time(created.start) if created.HasField("start") else None,
        created_to=_time(created.end) if created.HasField("end") else None,
    )


def delivery(webhook: common_pb2.ProviderWebhook) -> Delivery:
    return Delivery(
        payload=webhook.payload, headers={k.lower(): v for k, v in webhook.headers.items()}
    )


# -- pagination ----------------------------------------------------------------------------------


def cursor_of(view: PaymentView) -> Cursor:
    """A payment's place in the newest-first order: (created_at in µs, id)."""
    micros = (view.payment.created_at - _EPOCH) // timedelta(microseconds=1)
    return (micros, str(view.payment.id))


def page_after(cursor: Cursor | None) -> tuple[datetime, uuid.UUID] | None:
    if cursor is None:
        return None
    try:
        micros, pid = cursor
        when = _EPOCH + timedelta(microseconds=int(micros))
        return when, uuid.UUID(str(pid))
    except (ValueError, TypeError, OverflowError):
        raise InvalidArgument(
            "page_token is not valid",
            reason="INVALID_PAGE_TOKEN",
            field_violations=[FieldViolation("page_token", "not a page token of this service")],
        ) from None


# -- responses -----------------------------------------------------------------------------------


def refund_proto(r: Refund) -> payment_pb2.Refund:
    return payment_pb2.Refund(
        id=str(r.id),
        payment_id=str(r.payment_id),
        status=payment_pb2.RefundStatus.ValueType(int(r.status)),
        amount=money(r.currency, r.amount),
        reason=payment_pb2.RefundReason.ValueType(int(r.reason)),
        note=r.note,
        ticket_ids=list(r.ticket_ids),
        provider_refund_id=r.provider_refund_id or "",
        failure_reason=r.failure_reason or "",
        created_at=ts(r.created_at),
        updated_at=ts(r.updated_at),
    )


def payment_proto(p: Payment, refunds: Sequence[Refund] = ()) -> payment_pb2.Payment:
    c = p.currency
    payment = payment_pb2.Payment(
        id=str(p.id),
        status=payment_pb2.PaymentStatus.ValueType(int(p.status)),
        order_id=p.order_id,
        venue_id=p.venue_id,
        event_id=p.event_id,
        buyer_id=p.buyer_id,
        line_items=[
            payment_pb2.LineItem(
                ticket_type_id=item.ticket_type_id,
                description=item.description,
                unit_price=money(c, item.unit_price),
                quantity=item.quantity,
                section=item.section,
                row=item.row,
                seat=item.seat,
                ticket_ids=list(item.ticket_ids),
            )
            for item in p.line_items
        ],
        total=money(c, p.total),
        refunded=money(c, p.refund_held),
        refundable=money(c, p.shown_refundable),
        provider=p.provider,
        provider_payment_id=p.provider_payment_id or "",
        payment_method_id=p.payment_method_id,
        failure_code=p.failure_code or "",
        decline_code=p.decline_code or "",
        failure_message=p.failure_message or "",
        buyer_contact=contact_proto(p.buyer_contact),
        event=event_details_proto(p.event),
        metadata=dict(p.metadata),
        refunds=[refund_proto(r) for r in refunds],
        created_at=ts(p.created_at),
        updated_at=ts(p.updated_at),
    )
    if p.fees is not None:
        payment.fees.CopyFrom(fees_proto(p.fees))
    if p.status is PaymentStatus.REQUIRES_ACTION:
        payment.client_secret = p.client_secret or ""
        payment.next_action_url = p.next_action_url or ""
    if p.succeeded_at is not None:
        payment.succeeded_at.CopyFrom(ts(p.succeeded_at))
    return payment


def view_proto(view: PaymentView) -> payment_pb2.Payment:
    return payment_proto(view.payment, view.refunds)


def payout_proto(p: Payout) -> payment_pb2.Payout:
    payout = payment_pb2.Payout(
        id=str(p.id),
        venue_id=p.venue_id,
        status=payment_pb2.PayoutStatus.ValueType(int(p.status)),
        amount=money(p.currency, p.amount),
        fee=money(p.currency, p.fee),
        net_amount=money(p.currency, p.net_amount),
        instant=p.instant,
        provider="stripe",
        provider_payout_id=p.provider_payout_id or "",
        failure_code=p.failure_code or "",
        failure_message=p.failure_message or "",
        created_at=ts(p.created_at),
        updated_at=ts(p.updated_at),
    )
    if p.expected_arrival_at is not None:
        payout.expected_arrival_at.CopyFrom(ts(p.expected_arrival_at))
    return payout


def balance_proto(b: Balance) -> payment_pb2.VenueBalance:
    c = b.currency
    return payment_pb2.VenueBalance(
        venue_id=b.venue_id,
        currency=c,
        pending=money(c, b.balance.pending),
        available=money(c, b.balance.available),
        reserved=money(c, b.balance.reserved),
        payable=money(c, b.balance.payable),
        payout_remaining_today=money(c, b.payout_remaining_today),
        as_of=ts(b.as_of),
    )


def report_proto(report: Report) -> payment_pb2.ReconcilePaymentsResponse:
    response = payment_pb2.ReconcilePaymentsResponse(
        payments_checked=report.payments_checked,
        payments_updated=report.payments_updated,
        outbox_events_requeued=report.outbox_events_requeued,
        dry_run=report.dry_run,
        started_at=ts(report.started_at),
    )
    for d in report.discrepancies:
        response.discrepancies.append(
            payment_pb2.Discrepancy(
                payment_id=d.payment_id,
                provider_payment_id=d.provider_payment_id,
                from_status=payment_pb2.PaymentStatus.ValueType(int(d.from_status or 0)),
                to_status=payment_pb2.PaymentStatus.ValueType(int(d.to_status or 0)),
                provider_status=d.provider_status,
                action=payment_pb2.ReconciliationAction.ValueType(int(d.action or 0)),
                applied=d.applied,
                outbox_event_id=d.outbox_event_id,
                detail=d.detail,
            )
        )
    if report.finished_at is not None:
        response.finished_at.CopyFrom(ts(report.finished_at))
    return response


def webhook_response(handled: Handled) -> payment_pb2.HandleProviderWebhookResponse:
    return payment_pb2.HandleProviderWebhookResponse(
        event_id=handled.event_id,
        event_type=handled.event_type,
        status=common_pb2.WebhookStatus.Value(handled.outcome.value),
        payment_id=str(handled.payment_id) if handled.payment_id else "",
    )
