"""The events this service announces: `tickettoken.notify.v1.{NotificationSent,
NotificationDelivered, NotificationFailed}` (events.proto), each staged in the outbox inside the
transaction of the state change it announces (meshkit.events), aggregate = the notification.

Event ids are derived from what happened, so a change applied twice by racing paths cannot be
announced twice (the outbox refuses the second copy): sent and delivered once per notification;
failed once per notification and failure (its failed_at), since an operator may retry a dead
letter that then fails again.

Each event continues the trace of the SendNotification request that queued its notification
(kept with it), whoever stages it — a delivery worker, a provider's receipt webhook, an
operator — so a purchase's email stays in the purchase's trace; a notification queued without
one (before traces were kept) is announced in the current span's trace.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence

import asyncpg

from meshkit.convert import optional_timestamp
from meshkit.events import EventPublisher, Staged, TraceContext
from meshkit.tracing import continue_trace
from notify_service.domain.model import Notification, Status
from tickettoken.notify.v1 import events_pb2, notify_pb2

AGGREGATE = "notification"
_NAMESPACE = uuid.UUID("8a3e7c1e-51b4-4d7e-9f3f-2d6b1c0a9e44")


def event_id(kind: str, *parts: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, "\x00".join(["notify", kind, *parts]))


def trace_of(n: Notification) -> TraceContext | None:
    """The trace `n`'s events continue (None: the current span's)."""
    return TraceContext(n.traceparent, n.tracestate) if n.traceparent else None


@contextlib.contextmanager
def traced(n: Notification, name: str, worker: str = "") -> Iterator[None]:
    """Run the block in a span of the trace of the request that queued `n` (in the current
    span when it was queued without one)."""
    if not n.traceparent:
        yield
        return
    attributes = {"notify.notification_id": str(n.id), "notify.channel": n.channel.value}
    if worker:
        attributes["notify.worker"] = worker
    with continue_trace(n.traceparent, n.tracestate or None, name=name, attributes=attributes):
        yield


def channel_proto(n: Notification) -> notify_pb2.Channel.ValueType:
    return notify_pb2.Channel.Value(f"CHANNEL_{n.channel.value}")


def category_proto(n: Notification) -> notify_pb2.NotificationCategory.ValueType:
    return notify_pb2.NotificationCategory.Value(f"NOTIFICATION_CATEGORY_{n.category.value}")


class NotifyEvents:
    """Builds and stages the notification events (built once)."""

    def __init__(self, publisher: EventPublisher) -> None:
        self._publisher = publisher

    async def stage(self, conn: asyncpg.Connection, events: Sequence[Staged]) -> None:
        if events:
            await self._publisher.publish_many(conn, events)

    def sent(self, n: Notification) -> Staged:
        event = events_pb2.NotificationSent(
            notification_id=str(n.id),
            channel=channel_proto(n),
            category=category_proto(n),
            provider=n.provider,
            provider_message_id=n.provider_message_id,
            template_id=n.template.template_id if n.template else "",
            template_version=n.template.version if n.template else 0,
            template_locale=n.template.locale if n.template else "",
            user_id=n.user_id,
            destination_masked=n.destination_masked,
            dedup_key=n.dedup_key,
            attempts=n.attempts,
            metadata=dict(n.metadata),
            created_at=optional_timestamp(n.created_at),
            sent_at=optional_timestamp(n.sent_at),
        )
        eid = event_id("sent", str(n.id))
        return Staged(event, AGGREGATE, str(n.id), eid, trace=trace_of(n))

    def delivered(self, n: Notification) -> Staged:
        event = events_pb2.NotificationDelivered(
            notification_id=str(n.id),
            channel=channel_proto(n),
            category=category_proto(n),
            provider=n.provider,
            provider_message_id=n.provider_message_id,
            template_id=n.template.template_id if n.template else "",
            template_version=n.template.version if n.template else 0,
            user_id=n.user_id,
            destination_masked=n.destination_masked,
            dedup_key=n.dedup_key,
            metadata=dict(n.metadata),
            sent_at=optional_timestamp(n.sent_at),
            delivered_at=optional_timestamp(n.delivered_at),
        )
        eid = event_id("delivered", str(n.id))
        return Staged(event, AGGREGATE, str(n.id), eid, trace=trace_of(n))

    def failed(self, n: Notification) -> Staged:
        status = (
            notify_pb2.NOTIFICATION_STATUS_BOUNCED
            if n.status is Status.BOUNCED
            else notify_pb2.NOTIFICATION_STATUS_FAILED
        )
        when = n.failed_at or n.updated_at
        event = events_pb2.NotificationFailed(
            notification_id=str(n.id),
            channel=channel_proto(n),
            category=category_proto(n),
            status=status,
            dead_lettered=n.dead_lettered,
            provider=n.provider,
            error_code=n.error_code,
            error_message=n.error_message,
            attempts=n.attempts,
            template_id=n.template.template_id if n.template else "",
            template_version=n.template.version if n.template else 0,
            user_id=n.user_id,
            destination_masked=n.destination_masked,
            dedup_key=n.dedup_key,
            metadata=dict(n.metadata),
            failed_at=optional_timestamp(when),
        )
        eid = event_id("failed", str(n.id), when.isoformat())
        return Staged(event, AGGREGATE, str(n.id), eid, trace=trace_of(n))

    def for_status(self, n: Notification) -> Staged | None:
        """The event a notification's new status announces, if any."""
        if n.status is Status.SENT:
            return self.sent(n)
        if n.status is Status.DELIVERED:
            return self.delivered(n)
        if n.status in (Status.FAILED, Status.BOUNCED, Status.DEAD_LETTERED):
            return self.failed(n)
        return None
