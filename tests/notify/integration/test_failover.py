"""Provider failover: the primary answers 5xx (after the guard's retries) or its breaker is open
→ the message is sent once, by the secondary, which is recorded."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid

from meshdev.standins.sendgrid import SendGridServer
from meshdev.standins.smtp import SmtpSink
from tests.notify.integration.support import Start, events_of, send_request
from tickettoken.notify.v1 import notify_pb2

SENT = notify_pb2.NOTIFICATION_STATUS_SENT


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_primary_5xx_is_sent_once_by_the_secondary(
    start_notify: Start, connect: object, smtp: SmtpSink, sendgrid: SendGridServer
) -> None:
    app = await start_notify(
        notify_email_providers="sendgrid,smtp",
        provider_policies=json.dumps({"sendgrid": {"breaker": False, "backoff_base_s": 0.01}}),
    )
    sendgrid.fail_next(3, status=503)  # every one of the guard's 3 attempts
    async with connect(app) as client:  # type: ignore[operator]
        reply = await client.send(send_request())
        sent = await client.wait_status(reply.notification.id, SENT)
        assert sent.provider == "smtp" and sent.attempts == 1
        [kept] = await smtp.wait_for(1)
        assert kept.message["X-Notification-Id"] == sent.id
        assert sendgrid.calls == 3 and sendgrid.messages == []
        [(_, event)] = await events_of(app)
        assert event.provider == "smtp"

        # With SendGrid healthy again it is the primary once more.
        second = await client.send(send_request())
        sent2 = await client.wait_status(second.notification.id, SENT)
        assert sent2.provider == "sendgrid"
        [message] = sendgrid.messages
        assert message.custom_args == {"notification_id": sent2.id}
        assert message.headers["X-Notification-Id"] == sent2.id
        assert message.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message.headers["Message-ID"] == f"<{uuid.UUID(sent2.id).hex}@tickettoken.test>"
        assert sent2.provider_message_id == message.message_id  # SendGrid's X-Message-Id
        assert smtp.count() == 1


async def test_an_open_breaker_hands_every_message_to_the_secondary(
    start_notify: Start, connect: object, sendgrid: SendGridServer
) -> None:
    app = await start_notify(
        notify_email_providers="smtp,sendgrid",
        smtp_port=closed_port(),  # nothing listens: every SMTP call fails to connect
        provider_policies=json.dumps(
            {"smtp": {"fail_max": 2, "max_attempts": 1, "reset_timeout_s": 300}}
        ),
    )
    assert app.kit is not None
    breaker = app.kit.guards["smtp"].breaker
    assert breaker is not None
    async with connect(app) as client:  # type: ignore[operator]
        ids = []
        for _ in range(4):
            reply = await client.send(send_request())
            ids.append(reply.notification.id)
            sent = await client.wait_status(reply.notification.id, SENT)
            assert sent.provider == "sendgrid"
        assert breaker.state == "open"
    # Each message sent exactly once, by SendGrid.
    assert sorted(m.custom_args["notification_id"] for m in sendgrid.messages) == sorted(ids)
    metrics = app.registry.get_sample_value(
        "notify_failovers_total", {"from_provider": "smtp", "to_provider": "sendgrid"}
    )
    assert metrics == 4
    # Once open, SMTP was not even tried: the guard refused at once.
    refused = app.registry.get_sample_value(
        "provider_requests_total",
        {"provider": "smtp", "operation": "send", "outcome": "circuit_open"},
    )
    assert refused is not None and refused >= 2
    await asyncio.sleep(0)
