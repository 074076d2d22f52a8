"""The events payment publishes are the contract's event messages in envelopes (never RPC
responses), carrying what consumers need without reading payment's tables."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from meshdev.testing.servers import TestTokens
from meshkit.events import unpack_event
from payment_service.domain.ids import event_id
from tests.payment.integration.support import (
    AUD,
    DECLINE_AT_CHARGE,
    FAILED,
    REFUNDED,
    SUCCEEDED,
    PaymentClient,
)
from tickettoken.common.v1 import common_pb2
from tickettoken.payment.v1 import events_pb2, payment_pb2

P = payment_pb2
STARTS = datetime(2031, 5, 1, 19, 30, tzinfo=UTC)


def contact() -> common_pb2.ContactInfo:
    return common_pb2.ContactInfo(
        name="Ada Lovelace",
        email="ada@example.com",
        phone="+16155550100",
        wallet_address="9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin",
        locale="en-US",
        time_zone="America/Chicago",
    )


def event_details() -> P.EventDetails:
    starts = timestamp_pb2.Timestamp()
    starts.FromDatetime(STARTS)
    return P.EventDetails(
        event_name="The Band: Fall Tour",
        venue_name="Ryman Auditorium",
        starts_at=starts,
        image_url="https://img.example/band.png",
    )


async def test_payment_succeeded_and_refunded_carry_contact_tickets_and_event(
    client: PaymentClient, venue: str, tokens: TestTokens
) -> None:
    request = client.create_request(buyer_contact=contact(), event=event_details())
    del request.line_items[:]
    request.line_items.extend(
        [
            P.LineItem(
                ticket_type_id="reserved",
                description="Orchestra",
                unit_price=common_pb2.Money(currency="USD", amount_minor=7_500),
                quantity=2,
                section="ORCH",
                row="C",
                seat="12",
            ),
            P.LineItem(
                ticket_type_id="ga",
                description="General Admission",
                unit_price=common_pb2.Money(currency="USD", amount_minor=4_000),
                quantity=1,
                ticket_ids=["ticket-from-the-shop"],
            ),
        ]
    )
    request.metadata["channel"] = "web"
    md = tokens.metadata(tokens.user("buyer-1", ["buyer"], aud=AUD), request_id="req-events-1")
    payment = (await client.stub.CreatePayment(request, metadata=md, timeout=20)).payment
    assert payment.status == P.PAYMENT_STATUS_SUCCEEDED

    [envelope] = await client.events()
    assert (envelope.event_type, envelope.producer) == (SUCCEEDED, "payment")
    assert (envelope.aggregate_type, envelope.aggregate_id) == ("payment", payment.id)
    assert envelope.event_id == str(event_id(uuid.UUID(payment.id), "payment.succeeded"))
    assert envelope.schema_version == 1 and envelope.request_id == "req-events-1"
    succeeded = unpack_event(envelope, events_pb2.PaymentSucceeded)
    assert succeeded.payment_id == payment.id and succeeded.order_id == payment.order_id
    assert succeeded.buyer_contact == contact()
    assert succeeded.event == event_details()
    assert succeeded.total == payment.total and succeeded.fees == payment.fees
    assert succeeded.provider_payment_id == payment.provider_payment_id
    assert dict(succeeded.metadata) == {"channel": "web"}
    assert succeeded.succeeded_at == payment.succeeded_at
    tickets = [
        (t.ticket_type_id, t.description, t.section, t.row, t.seat, t.unit_price.amount_minor)
        for t in succeeded.tickets
    ]
    assert tickets == [
        ("reserved", "Orchestra", "ORCH", "C", "12", 7_500),
        ("reserved", "Orchestra", "ORCH", "C", "12", 7_500),
        ("ga", "General Admission", "", "", "", 4_000),
    ]
    ids = [t.ticket_id for t in succeeded.tickets]
    assert ids == [t for line in payment.line_items for t in line.ticket_ids]
    assert ids[2] == "ticket-from-the-shop" and len(set(ids)) == 3

    # A partial refund of one ticket, then the rest.
    first = await client.stub.RefundPayment(
        P.RefundPaymentRequest(
            idempotency_key=str(uuid.uuid4()),
            payment_id=payment.id,
            amount=common_pb2.Money(currency="USD", amount_minor=7_500),
            reason=P.REFUND_REASON_EVENT_RESCHEDULED,
            ticket_ids=[ids[0]],
        ),
        metadata=client.admin(),
        timeout=20,
    )
    rest = await client.refund(payment.id)
    announced = await client.events(REFUNDED)
    assert [e.aggregate_id for e in announced] == [payment.id, payment.id]
    partial, full = (unpack_event(e, events_pb2.PaymentRefunded) for e in announced)
    assert announced[0].event_id == str(event_id(uuid.UUID(first.refund.id), "payment.refunded"))
    assert (partial.refund_id, partial.amount.amount_minor, partial.full_refund) == (
        first.refund.id,
        7_500,
        False,
    )
    assert list(partial.ticket_ids) == [ids[0]]
    assert partial.reason == P.REFUND_REASON_EVENT_RESCHEDULED
    assert partial.provider_refund_id == first.refund.provider_refund_id
    assert partial.buyer_contact == contact() and partial.event == event_details()
    assert partial.refunded_total.amount_minor == 7_500
    assert partial.payment_total == payment.total
    total = payment.total.amount_minor
    assert (full.refund_id, full.amount.amount_minor, full.full_refund) == (
        rest.refund.id,
        total - 7_500,
        True,
    )
    assert full.refunded_total.amount_minor == total

    # The outbox holds envelopes only: no RPC message leaves as an event.
    types = {r["type_name"] for r in await client.fetch("SELECT type_name FROM outbox")}
    assert types == {"tickettoken.common.v1.EventEnvelope"}


async def test_payment_failed_tells_the_buyer_why(client: PaymentClient, venue: str) -> None:
    pm = await client.payment_method(DECLINE_AT_CHARGE)
    payment = await client.create(pm=pm, buyer_contact=contact())
    assert payment.status == P.PAYMENT_STATUS_FAILED
    [envelope] = await client.events()
    assert envelope.event_type == FAILED
    failed = unpack_event(envelope, events_pb2.PaymentFailed)
    assert (failed.payment_id, failed.failure_code) == (payment.id, "card_declined")
    assert failed.failure_message == payment.failure_message
    assert failed.buyer_contact == contact() and failed.total == payment.total
