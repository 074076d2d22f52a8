"""nft's relay without I/O: the notify requests TicketMinted and MintFailed become, checked
against notify's contract rules (the same validator its server runs)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from meshkit.validation import RequestValidator
from nft_service.jobs.relay import confirmation_message, delayed_message
from tickettoken.common.v1 import common_pb2
from tickettoken.nft.v1 import events_pb2
from tickettoken.notify.v1 import notify_pb2

VALIDATOR = RequestValidator()
MINT = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"


def minted(contact: common_pb2.ContactInfo) -> events_pb2.TicketMinted:
    event = events_pb2.TicketMinted(
        ticket_id="pay-1-t0",
        mint_address=MINT,
        payment_id="pay-1",
        event_id="event-1",
        venue_id="venue-1",
        buyer_id="buyer-1",
        buyer_contact=contact,
        event_name="The Band: Fall Tour",
        venue_name="Ryman Auditorium",
        section="A",
        row="12",
        seat="7",
        ticket_type="VIP",
        metadata_uri="https://tkt.example/m/abc",
        cluster="devnet",
    )
    event.event_starts_at.FromDatetime(datetime(2026, 10, 2, 1, 0, tzinfo=UTC))
    return event


def test_the_confirmation_carries_the_mint_and_its_links_by_email() -> None:
    contact = common_pb2.ContactInfo(
        name="Ada", email="ada@example.com", phone="+16155550100", time_zone="America/Chicago"
    )
    key = str(uuid.uuid4())
    request = confirmation_message(minted(contact), key)
    assert request is not None
    assert VALIDATOR.violations(request) == []
    assert request.idempotency_key == key
    assert (request.channel, request.template_id) == (
        notify_pb2.CHANNEL_EMAIL,
        "ticket_confirmation",
    )
    assert request.variables["mint_address"] == MINT
    assert request.variables["cluster"] == "devnet"
    assert request.variables["metadata_uri"] == "https://tkt.example/m/abc"
    assert request.variables["event_starts_at"] == "Thu 1 Oct 2026, 20:00 CDT"
    assert (request.variables["section"], request.variables["seat"]) == ("A", "7")
    assert request.dedup_key == "ticket:pay-1-t0:confirmation"
    assert request.priority == notify_pb2.NOTIFICATION_PRIORITY_HIGH
    assert request.category == notify_pb2.NOTIFICATION_CATEGORY_TRANSACTIONAL


def test_the_confirmation_goes_by_sms_without_email_and_nowhere_without_either() -> None:
    by_sms = confirmation_message(
        minted(common_pb2.ContactInfo(phone="+16155550100")), str(uuid.uuid4())
    )
    assert by_sms is not None
    assert VALIDATOR.violations(by_sms) == []
    assert (by_sms.channel, by_sms.template_id) == (
        notify_pb2.CHANNEL_SMS,
        "ticket_confirmation_sms",
    )
    assert by_sms.dedup_key == "ticket:pay-1-t0:confirmation"  # one confirmation, any channel
    assert confirmation_message(minted(common_pb2.ContactInfo()), str(uuid.uuid4())) is None


def test_a_failed_mint_tells_the_buyer_the_ticket_is_delayed() -> None:
    event = events_pb2.MintFailed(
        ticket_id="pay-1-t0",
        payment_id="pay-1",
        event_id="event-1",
        buyer_id="buyer-1",
        buyer_contact=common_pb2.ContactInfo(name="Ada", email="ada@example.com"),
        error_code="insufficient_funds",
        dead_lettered=False,
    )
    request = delayed_message(event, str(uuid.uuid4()))
    assert request is not None
    assert VALIDATOR.violations(request) == []
    assert request.template_id == "ticket_delayed"
    assert request.variables["ticket_id"] == "pay-1-t0"
    assert request.dedup_key == "ticket:pay-1-t0:delayed"
    event.buyer_contact.email = ""
    assert delayed_message(event, str(uuid.uuid4())) is None
