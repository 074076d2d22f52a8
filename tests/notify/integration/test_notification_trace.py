"""A notification keeps the trace of the SendNotification request that queued it: delivery — in
another process, after a restart — logs the send and announces NotificationSent in that trace,
and a provider's receipt (its own HTTP request, a trace of its own) announces
NotificationDelivered and logs the receipt in it too."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from meshdev.standins.sendgrid import SendGridServer
from tests.notify.integration.support import Client, Start, rows, send_request
from tickettoken.common.v1 import common_pb2
from tickettoken.notify.v1 import notify_pb2 as pb

TRACE_A = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_B = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "00f067aa0ba902b7"


def traceparent(trace_id: str, flags: str = "01") -> str:
    return f"00-{trace_id}-{CALLER_SPAN}-{flags}"


def trace_id_of(value: str) -> str:
    version, trace_id, span_id, _ = value.split("-")
    assert version == "00" and span_id != CALLER_SPAN  # a span of notify's own, in that trace
    return trace_id


async def envelopes(client: Client) -> dict[str, list[common_pb2.EventEnvelope]]:
    """The outbox's envelopes by notification id, oldest first."""
    found: dict[str, list[common_pb2.EventEnvelope]] = {}
    for row in await rows(client.app, "SELECT payload FROM outbox ORDER BY seq"):
        envelope = common_pb2.EventEnvelope.FromString(bytes(row["payload"]))
        found.setdefault(envelope.aggregate_id, []).append(envelope)
    return found


def traced(trace_id: str, flags: str = "01", state: str = "") -> tuple[tuple[str, str], ...]:
    md = (("traceparent", traceparent(trace_id, flags)),)
    return (*md, ("tracestate", state)) if state else md


async def test_queued_notifications_are_sent_and_announced_in_their_requests_traces(
    start_notify: Start, connect: Any, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    first = await start_notify(db_schema=schema, notify_workers=0)  # nothing is sent yet
    async with connect(first) as client:
        a = await client.stub.SendNotification(
            send_request(email="a@example.com"),
            metadata=(*client.service_md, *traced(TRACE_A, state="v=1")),
        )
        b = await client.stub.SendNotification(
            send_request(email="b@example.com"),
            metadata=(*client.service_md, *traced(TRACE_B, "00")),
        )
        assert a.notification.status == b.notification.status == pb.NOTIFICATION_STATUS_QUEUED
    await first.stop()

    second = await start_notify(db_schema=schema)  # delivery workers, in another process
    async with connect(second) as client:
        for reply in (a, b):
            await client.wait_status(reply.notification.id, pb.NOTIFICATION_STATUS_SENT)
        found = await envelopes(client)

    [sent_a] = found[a.notification.id]
    assert sent_a.event_type == "tickettoken.notify.v1.NotificationSent"
    assert trace_id_of(sent_a.trace.traceparent) == TRACE_A
    assert sent_a.trace.traceparent.endswith("-01") and sent_a.trace.tracestate == "v=1"
    [sent_b] = found[b.notification.id]
    assert trace_id_of(sent_b.trace.traceparent) == TRACE_B
    assert sent_b.trace.traceparent.endswith("-00")  # the caller's sampling decision kept

    lines = log_lines()
    for message in ("notification accepted", "notification sent"):
        logged = {
            line["notification_id"]: line["trace_id"]
            for line in lines
            if line["message"] == message
        }
        assert logged == {a.notification.id: TRACE_A, b.notification.id: TRACE_B}, message


async def test_a_receipt_announces_delivery_in_the_notifications_trace(
    start_notify: Start,
    connect: Any,
    sendgrid: SendGridServer,
    log_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    app = await start_notify(notify_email_providers="sendgrid")
    async with connect(app) as client:
        reply = await client.stub.SendNotification(
            send_request(), metadata=(*client.service_md, *traced(TRACE_A))
        )
        sent = await client.wait_status(reply.notification.id, pb.NOTIFICATION_STATUS_SENT)
        # The provider's POST arrives without our trace: a trace of its own.
        ok = await sendgrid.emit(sent.provider_message_id, "delivered")
        assert ok.status == 200
        await client.wait_status(sent.id, pb.NOTIFICATION_STATUS_DELIVERED)
        found = await envelopes(client)

    kinds = [
        (e.event_type.rsplit(".", 1)[1], trace_id_of(e.trace.traceparent)) for e in found[sent.id]
    ]
    assert kinds == [("NotificationSent", TRACE_A), ("NotificationDelivered", TRACE_A)]
    [receipt] = [line for line in log_lines() if line["message"] == "receipt"]
    assert receipt["notification_id"] == sent.id and receipt["trace_id"] == TRACE_A
