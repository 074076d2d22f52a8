"""Events leave a service as contract messages in an `EventEnvelope`, through its outbox.

A use case changes its state and, in the same transaction, calls

    await events.publish(conn, PaymentSucceeded(...), aggregate_type="payment",
                         aggregate_id=str(payment.id), event_id=...)

which wraps the event (a message of its own in the contracts, never an RPC response) in
`tickettoken.common.v1.EventEnvelope` — event id, type, producer, aggregate, occurred_at, schema
version, trace context (the current span's W3C `traceparent`/`tracestate`: inside an RPC, this
service's server span, so the trace goes on from here), request id — and stages the envelope in
the outbox (the trace context also in the outbox row's headers). The relay hands it
to consumers at least once; they deduplicate on the event id (their idempotency key).

Work a service queues for its own workers (a mint, a notification) is announced later, outside
the request: the request's `TraceContext.current()` is stored with the queued row, and the
worker stages the outcome's event with that context (`Staged(..., trace=...)`), so the event
continues the trace of the request that queued the work rather than the worker's.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import asyncpg
from google.protobuf.message import Message

from meshkit.context import current_request_id
from meshkit.outbox import OutboxEvent, Outgoing, publish_many
from meshkit.tracing import TRACEPARENT, TRACESTATE, trace_headers
from tickettoken.common.v1 import common_pb2

__all__ = [
    "EventPublisher",
    "Staged",
    "TraceContext",
    "envelope_of",
    "schema_version_of",
    "unpack_event",
]

E = TypeVar("E", bound=Message)

_VERSION = re.compile(r"\.v(\d+)\.")


def schema_version_of(event: Message) -> int:
    """The major version of the event's schema: its package's `vN` (1 for `tickettoken.x.v1`)."""
    found = _VERSION.search(event.DESCRIPTOR.full_name)
    return int(found.group(1)) if found else 1


@dataclass(frozen=True, slots=True)
class TraceContext:
    """A W3C trace context (`traceparent`, `tracestate`; empty strings when absent, and then
    falsy) kept with queued work, so what the work announces later continues the trace that
    queued it."""

    traceparent: str = ""
    tracestate: str = ""

    @classmethod
    def current(cls) -> TraceContext:
        """The current span's context (empty outside any trace)."""
        headers = dict(trace_headers())
        return cls(headers.get(TRACEPARENT, ""), headers.get(TRACESTATE, ""))

    @classmethod
    def of(cls, traceparent: str | None, tracestate: str | None = None) -> TraceContext:
        """From stored values (NULL columns: empty)."""
        return cls(traceparent or "", tracestate or "")

    def __bool__(self) -> bool:
        return bool(self.traceparent)


@dataclass(frozen=True, slots=True)
class Staged:
    """One event for `EventPublisher.publish_many` (fields as `publish` takes them)."""

    event: Message
    aggregate_type: str
    aggregate_id: str
    event_id: uuid.UUID | None = None
    occurred_at: datetime | None = None
    trace: TraceContext | None = None
    """The trace the event continues: None for the current span's; a queued item's stored
    context for an event its worker stages (an empty one: the event starts no trace)."""


class EventPublisher:
    """Stages a service's events in its outbox (build once per service; the kit does)."""

    def __init__(self, producer: str) -> None:
        self.producer = producer

    def envelope(
        self,
        event: Message,
        *,
        aggregate_type: str,
        aggregate_id: str,
        event_id: uuid.UUID,
        occurred_at: datetime | None = None,
        trace: TraceContext | None = None,
    ) -> common_pb2.EventEnvelope:
        """The envelope of `event`, with `trace` as its trace context (None: the current
        span's)."""
        envelope = common_pb2.EventEnvelope(
            event_id=str(event_id),
            event_type=event.DESCRIPTOR.full_name,
            producer=self.producer,
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            schema_version=schema_version_of(event),
            request_id=current_request_id() or "",
        )
        envelope.occurred_at.FromDatetime(occurred_at or datetime.now(UTC))
        if trace is None:
            trace = TraceContext.current()
        if trace.traceparent:
            envelope.trace.traceparent = trace.traceparent
            if trace.tracestate:
                envelope.trace.tracestate = trace.tracestate
        envelope.payload.Pack(event)
        return envelope

    async def publish(
        self,
        conn: asyncpg.Connection,
        event: Message,
        *,
        aggregate_type: str,
        aggregate_id: str,
        event_id: uuid.UUID | None = None,
        occurred_at: datetime | None = None,
        trace: TraceContext | None = None,
    ) -> uuid.UUID:
        """Stage `event` in the outbox inside the caller's open transaction; return its id.

        Pass a deterministic `event_id` (derived from the aggregate and what happened) when the
        same state change could be applied twice by racing paths: the outbox refuses a
        second copy (the transaction fails) instead of announcing it twice. `trace`: as
        `Staged.trace`."""
        [staged] = await self.publish_many(
            conn, [Staged(event, aggregate_type, aggregate_id, event_id, occurred_at, trace)]
        )
        return staged

    async def publish_many(
        self, conn: asyncpg.Connection, events: Sequence[Staged]
    ) -> list[uuid.UUID]:
        """`publish` for several events in one INSERT (e.g. a worker's round); ids in order.
        Each event carries its own `trace` when it has one (a worker's round announces the
        outcomes of work queued by different requests), else the current span's."""
        outgoing = []
        current: TraceContext | None = None
        for item in events:
            trace = item.trace
            if trace is None:
                if current is None:
                    current = TraceContext.current()
                trace = current
            envelope = self.envelope(
                item.event,
                aggregate_type=item.aggregate_type,
                aggregate_id=item.aggregate_id,
                event_id=item.event_id or uuid.uuid4(),
                occurred_at=item.occurred_at,
                trace=trace,
            )
            headers = {TRACEPARENT: trace.traceparent} if trace.traceparent else None
            if headers and trace.tracestate:
                headers[TRACESTATE] = trace.tracestate
            outgoing.append(
                Outgoing(
                    envelope.event_type,
                    envelope,
                    key=item.aggregate_id,
                    headers=headers,
                    event_id=uuid.UUID(envelope.event_id),
                )
            )
        return await publish_many(conn, outgoing)


def envelope_of(event: OutboxEvent) -> common_pb2.EventEnvelope:
    """The envelope an outbox event carries."""
    return event.unpack(common_pb2.EventEnvelope)


def unpack_event(envelope: common_pb2.EventEnvelope, event_cls: type[E]) -> E:
    """The envelope's payload as `event_cls`, refusing an event of another type."""
    event = event_cls()
    if not envelope.payload.Unpack(event):
        raise TypeError(
            f"event {envelope.event_id} holds {envelope.event_type}, "
            f"not {event_cls.DESCRIPTOR.full_name}"
        )
    return event
