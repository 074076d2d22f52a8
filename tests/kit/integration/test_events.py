"""Events as contract messages in envelopes, through the outbox (meshkit.events)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from meshkit.context import request_id_var, traceparent_var
from meshkit.db import Database
from meshkit.events import EventPublisher, envelope_of, schema_version_of, unpack_event
from meshkit.outbox import OutboxEvent, OutboxRelay
from tickettoken.common.v1 import common_pb2
from tickettoken.nft.v1 import events_pb2 as nft_events
from tickettoken.payment.v1 import events_pb2 as payment_events

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_an_event_travels_in_its_envelope_with_ids_and_trace(database: Database) -> None:
    publisher = EventPublisher("payment")
    event = payment_events.PaymentSucceeded(payment_id="p1", order_id="o1", venue_id="v1")
    event_id = uuid.uuid4()
    when = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    request_id_var.set("req-42")
    traceparent_var.set(TRACEPARENT)
    try:
        async with database.transaction() as conn:
            returned = await publisher.publish(
                conn,
                event,
                aggregate_type="payment",
                aggregate_id="p1",
                event_id=event_id,
                occurred_at=when,
            )
    finally:
        request_id_var.set(None)
        traceparent_var.set(None)
    assert returned == event_id

    delivered: list[OutboxEvent] = []

    async def handler(item: OutboxEvent) -> None:
        delivered.append(item)

    relay = OutboxRelay(database, handler, registry=CollectorRegistry())
    assert await relay.run_once() == 1
    [item] = delivered
    assert item.id == event_id and item.topic == "tickettoken.payment.v1.PaymentSucceeded"
    assert item.key == "p1" and item.headers["traceparent"] == TRACEPARENT
    envelope = envelope_of(item)
    assert envelope.event_id == str(event_id)
    assert envelope.event_type == "tickettoken.payment.v1.PaymentSucceeded"
    assert envelope.producer == "payment"
    assert (envelope.aggregate_type, envelope.aggregate_id) == ("payment", "p1")
    assert envelope.occurred_at.ToDatetime(tzinfo=UTC) == when
    assert envelope.schema_version == 1
    assert envelope.trace.traceparent == TRACEPARENT and envelope.request_id == "req-42"
    assert unpack_event(envelope, payment_events.PaymentSucceeded) == event
    with pytest.raises(TypeError, match="PaymentSucceeded"):
        unpack_event(envelope, nft_events.TicketMinted)


async def test_an_event_is_staged_only_with_its_transaction(database: Database) -> None:
    publisher = EventPublisher("nft")
    with pytest.raises(RuntimeError, match="boom"):
        async with database.transaction() as conn:
            await publisher.publish(
                conn,
                nft_events.TicketMinted(ticket_id="t1"),
                aggregate_type="ticket",
                aggregate_id="t1",
            )
            raise RuntimeError("boom")
    assert await database.fetch("SELECT id FROM outbox") == []
    async with database.acquire() as conn:
        with pytest.raises(RuntimeError, match="inside the transaction"):
            await publisher.publish(
                conn, nft_events.TicketMinted(), aggregate_type="ticket", aggregate_id="t1"
            )


def test_schema_version_is_the_package_major_version() -> None:
    assert schema_version_of(payment_events.PaymentRefunded()) == 1
    assert schema_version_of(common_pb2.Money()) == 1


async def test_many_events_are_staged_in_one_insert_in_their_order(database: Database) -> None:
    from meshkit.events import Staged

    publisher = EventPublisher("nft")
    events = [
        Staged(nft_events.TicketMinted(ticket_id=f"t{i}"), "ticket", f"t{i}") for i in range(5)
    ]
    async with database.transaction() as conn:
        ids = await publisher.publish_many(conn, events)
    rows = await database.fetch("SELECT id, key FROM outbox ORDER BY seq")
    assert [r["id"] for r in rows] == ids
    assert [r["key"] for r in rows] == [f"t{i}" for i in range(5)]
    async with database.transaction() as conn:
        assert await publisher.publish_many(conn, []) == []
