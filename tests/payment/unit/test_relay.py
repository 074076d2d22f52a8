"""payment's relay without I/O: the requests its events become, checked against the consumers'
contract rules (the same validator their servers run)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from meshkit.validation import RequestValidator
from payment_service.jobs.relay import (
    FEES_LINE,
    mint_request,
    payment_failed_message,
    refund_message,
    refund_transaction,
    revoke_request,
    sale_transaction,
)
from tickettoken.common.v1 import common_pb2
from tickettoken.integration.v1 import integration_pb2
from tickettoken.nft.v1 import nft_pb2
from tickettoken.notify.v1 import notify_pb2
from tickettoken.payment.v1 import events_pb2, payment_pb2

WALLET = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"
VALIDATOR = RequestValidator()


def usd(minor: int) -> common_pb2.Money:
    return common_pb2.Money(currency="USD", amount_minor=minor)


def details(*, named: bool = True) -> payment_pb2.EventDetails:
    if not named:
        return payment_pb2.EventDetails()
    event = payment_pb2.EventDetails(
        event_name="The Band: Fall Tour",
        venue_name="Ryman Auditorium",
        image_url="https://img.example/band.png",
    )
    event.starts_at.FromDatetime(datetime(2026, 10, 2, 1, 0, tzinfo=UTC))
    return event


def succeeded(wallet: str = "", named: bool = True) -> events_pb2.PaymentSucceeded:
    return events_pb2.PaymentSucceeded(
        payment_id="pay-1",
        order_id="order-1",
        venue_id="venue-1",
        event_id="event-1",
        buyer_id="buyer-1",
        buyer_contact=common_pb2.ContactInfo(
            name="Ada", email="ada@example.com", wallet_address=wallet
        ),
        tickets=[
            events_pb2.TicketLine(
                ticket_id="t-1",
                ticket_type_id="ga",
                description="General Admission",
                unit_price=usd(5_000),
            ),
            events_pb2.TicketLine(
                ticket_id="t-2",
                ticket_type_id="orchestra",
                description="Orchestra, centre section, with a long description",
                section="ORCH",
                row="C",
                seat="12",
                unit_price=usd(7_500),
            ),
        ],
        event=details(named=named),
        total=usd(13_000),
    )


def test_a_paid_order_mints_every_ticket_to_the_buyers_wallet() -> None:
    key = str(uuid.uuid4())
    request = mint_request(succeeded(WALLET), key)
    assert VALIDATOR.violations(request) == []
    assert request.idempotency_key == key
    assert (request.payment_id, request.order_id, request.buyer_id) == (
        "pay-1",
        "order-1",
        "buyer-1",
    )
    assert [t.ticket_id for t in request.tickets] == ["t-1", "t-2"]
    assert {t.owner_wallet for t in request.tickets} == {WALLET}
    first, second = request.tickets
    assert (first.event_name, first.venue_name) == ("The Band: Fall Tour", "Ryman Auditorium")
    assert first.event_starts_at.ToDatetime(tzinfo=UTC) == datetime(2026, 10, 2, 1, tzinfo=UTC)
    assert first.ticket_type == "General Admission"
    assert second.ticket_type == "Orchestra, centre section, with a"[:32]
    assert (second.section, second.row, second.seat) == ("ORCH", "C", "12")
    assert request.buyer_contact.email == "ada@example.com"  # nft puts it in its events


def test_without_a_wallet_the_tickets_go_to_the_custodial_wallet() -> None:
    request = mint_request(succeeded(), str(uuid.uuid4()))
    assert {t.owner_wallet for t in request.tickets} == {""}
    assert VALIDATOR.violations(request) == []


def test_the_same_event_always_makes_the_same_request() -> None:
    key = str(uuid.uuid4())
    first = mint_request(succeeded(WALLET), key).SerializeToString(deterministic=True)
    assert mint_request(succeeded(WALLET), key).SerializeToString(deterministic=True) == first


def test_an_order_without_the_events_facts_is_not_given_invented_ones() -> None:
    request = mint_request(succeeded(named=False), str(uuid.uuid4()))
    fields = {v.field for v in VALIDATOR.violations(request)}
    assert "tickets[0].event_name" in fields and "tickets[0].event_starts_at" in fields


def refunded(**fields: object) -> events_pb2.PaymentRefunded:
    values: dict[str, object] = {
        "payment_id": "pay-1",
        "refund_id": "ref-1",
        "order_id": "order-1",
        "event_id": "event-1",
        "buyer_id": "buyer-1",
        "buyer_contact": common_pb2.ContactInfo(name="Ada", email="ada@example.com"),
        "event": details(),
        "amount": usd(5_000),
        "ticket_ids": ["t-1", "t-2"],
    }
    values.update(fields)
    return events_pb2.PaymentRefunded(**values)  # type: ignore[arg-type]


def test_a_refunded_ticket_is_revoked_for_the_refund() -> None:
    request = revoke_request(refunded(), "t-2", str(uuid.uuid4()))
    assert VALIDATOR.violations(request) == []
    assert (request.ticket_id, request.reason) == ("t-2", nft_pb2.REVOKE_REASON_REFUND)
    assert request.reference_id == "ref-1"


def test_the_refund_message() -> None:
    key = str(uuid.uuid4())
    request = refund_message(refunded(), key)
    assert request is not None
    assert VALIDATOR.violations(request) == []
    assert (request.template_id, request.channel) == ("refund_issued", notify_pb2.CHANNEL_EMAIL)
    assert request.variables == {
        "event_name": "The Band: Fall Tour",
        "amount": "$50.00",
        "ticket_count": "2",
    }
    assert request.dedup_key == "refund:ref-1:refund_issued"
    assert request.recipient.user_id == "buyer-1" and request.recipient.email == "ada@example.com"
    # An unnamed event is named by its id; a refund that cancels no ticket counts none.
    unnamed = refund_message(refunded(event=details(named=False), ticket_ids=[]), key)
    assert unnamed is not None
    assert unnamed.variables == {"event_name": "event-1", "amount": "$50.00"}


def test_the_payment_failed_message_goes_by_email_only() -> None:
    event = events_pb2.PaymentFailed(
        payment_id="pay-1",
        order_id="order-1",
        event_id="event-1",
        buyer_id="buyer-1",
        buyer_contact=common_pb2.ContactInfo(email="ada@example.com", phone="+16155550100"),
        event=details(),
        total=usd(13_000),
        failure_message="Your card was declined.",
    )
    request = payment_failed_message(event, str(uuid.uuid4()))
    assert request is not None
    assert VALIDATOR.violations(request) == []
    assert request.template_id == "payment_failed"
    assert request.priority == notify_pb2.NOTIFICATION_PRIORITY_HIGH
    assert request.variables["amount"] == "$130.00"
    assert request.variables["failure_message"] == "Your card was declined."
    assert request.dedup_key == "payment:pay-1:payment_failed"
    # No SMS version of this template: a buyer with a phone number only gets nothing.
    event.buyer_contact.email = ""
    assert payment_failed_message(event, str(uuid.uuid4())) is None


def test_a_sale_for_the_venues_books_adds_up_to_the_total() -> None:
    event = succeeded(WALLET)
    event.tickets.append(
        events_pb2.TicketLine(
            ticket_id="t-3",
            ticket_type_id="ga",
            description="General Admission",
            unit_price=usd(5_000),
        )
    )
    event.total.CopyFrom(usd(19_450))  # 17,500 of tickets + 1,950 of fees and taxes
    event.marketing_consent = True
    event.provider_payment_id = "pi_123"
    event.succeeded_at.FromDatetime(datetime(2026, 5, 1, 18, 0, tzinfo=UTC))
    key = str(uuid.uuid4())
    request = sale_transaction(event, key)
    assert VALIDATOR.violations(request) == []
    assert (request.idempotency_key, request.kind) == (key, integration_pb2.TRANSACTION_KIND_SALE)
    assert [
        (line.ticket_type_id, line.quantity, line.unit_price.amount_minor) for line in request.lines
    ] == [
        ("ga", 2, 5_000),
        ("orchestra", 1, 7_500),
        ("", 1, 1_950),
    ]
    assert request.lines[2].description == FEES_LINE
    total = sum(line.unit_price.amount_minor * line.quantity for line in request.lines)
    assert total == request.amount.amount_minor == 19_450
    assert request.fees.amount_minor == 1_950
    assert request.marketing_consent and request.buyer_contact.email == "ada@example.com"
    assert not request.buyer_contact.wallet_address  # integration needs no wallet
    assert (request.payment_id, request.provider_reference) == ("pay-1", "pi_123")
    assert sale_transaction(event, key).SerializeToString(deterministic=True) == (
        request.SerializeToString(deterministic=True)
    )


def test_a_refund_for_the_venues_books() -> None:
    event = refunded(venue_id="venue-1", provider_refund_id="re_1")
    event.refunded_at.FromDatetime(datetime(2026, 5, 2, 9, 0, tzinfo=UTC))
    request = refund_transaction(event, str(uuid.uuid4()))
    assert VALIDATOR.violations(request) == []
    assert request.kind == integration_pb2.TRANSACTION_KIND_REFUND
    assert (request.payment_id, request.refund_id, request.amount.amount_minor) == (
        "pay-1",
        "ref-1",
        5_000,
    )
    assert not request.marketing_consent and list(request.lines) == []
