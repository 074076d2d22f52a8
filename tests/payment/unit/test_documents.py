"""The payment's JSONB documents and its contract shapes: what is written is what is read back,
and a payment shows the same in the API and in its events."""

from __future__ import annotations

import json
from typing import Any

from payment_service.api import convert
from payment_service.store.payments import (
    contact_from_json,
    contact_to_json,
    event_from_json,
    event_to_json,
    fees_from_json,
    fees_to_json,
    line_from_json,
    line_to_json,
)
from payment_service.usecases import events
from tests.payment.unit.factories import payment


def roundtrip(value: object) -> Any:
    return json.loads(json.dumps(value))


def test_documents_read_back_what_was_written() -> None:
    p = payment()
    assert p.fees is not None
    assert [line_from_json(roundtrip(line_to_json(i))) for i in p.line_items] == list(p.line_items)
    assert fees_from_json(roundtrip(fees_to_json(p.fees))) == p.fees
    assert contact_from_json(roundtrip(contact_to_json(p.buyer_contact))) == p.buyer_contact
    assert event_from_json(roundtrip(event_to_json(p.event))) == p.event


def test_api_and_events_show_the_same_payment() -> None:
    p = payment()
    shown = convert.payment_proto(p)
    announced = events.payment_succeeded(p)
    assert announced.buyer_contact == shown.buyer_contact
    assert announced.event == shown.event
    assert announced.fees == shown.fees
    assert announced.metadata == shown.metadata
    assert [t.ticket_id for t in announced.tickets] == list(shown.line_items[0].ticket_ids)
    assert {(t.section, t.row, t.seat, t.unit_price.amount_minor) for t in announced.tickets} == {
        ("A", "3", "7", 5_000)
    }
    assert shown.client_secret == "pi_1_secret"  # only while REQUIRES_ACTION
    assert shown.fees.total.amount_minor == p.total == shown.total.amount_minor
