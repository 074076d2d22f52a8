"""Delivery receipts, as the providers send them (signed POSTs to the HTTP port) and through
HandleProviderWebhook: valid ones move the notification and publish its event; a bad signature,
a stale timestamp or a replay changes nothing."""

from __future__ import annotations

import time

import grpc
import pytest

from meshdev.standins.sendgrid import SendGridServer
from meshdev.standins.twilio import TwilioServer
from meshdev.testing.rpc import reason, violations
from tests.notify.integration.support import (
    PHONE,
    Client,
    Start,
    count,
    events_of,
    rows,
    send_request,
)
from tickettoken.common.v1 import common_pb2
from tickettoken.notify.v1 import events_pb2
from tickettoken.notify.v1 import notify_pb2 as pb

DELIVERED = pb.NOTIFICATION_STATUS_DELIVERED


async def fingerprint(client: Client) -> list[object]:
    return [
        await rows(client.app, "SELECT id, status, updated_at FROM notifications ORDER BY id"),
        await count(client.app, "webhook_inbox"),
        await count(client.app, "outbox"),
        await count(client.app, "suppressions"),
    ]


@pytest.fixture
async def sg_client(start_notify: Start, connect: object) -> Client:
    app = await start_notify(notify_email_providers="sendgrid")
    async with connect(app) as client:  # type: ignore[operator]
        yield client


async def test_sendgrid_receipts_valid_forged_stale_and_replayed(
    sg_client: Client, sendgrid: SendGridServer
) -> None:
    client = sg_client
    reply = await client.send(send_request())
    sent = await client.wait_status(reply.notification.id, pb.NOTIFICATION_STATUS_SENT)
    assert sent.provider == "sendgrid"
    message_id = sent.provider_message_id

    # Forged (signed with another key): refused at the HTTP port, nothing changes.
    before = await fingerprint(client)
    forged = await sendgrid.emit(message_id, "delivered", forge=True)
    assert forged.status == 403
    # Stale: a genuine signature over an old timestamp.
    stale = await sendgrid.emit(message_id, "delivered", signed_at=int(time.time()) - 3600)
    assert stale.status == 400
    assert await fingerprint(client) == before
    assert (await client.get(sent.id)).status == pb.NOTIFICATION_STATUS_SENT

    # Valid: DELIVERED, with its event.
    ok = await sendgrid.emit(message_id, "delivered")
    assert ok.status == 200
    delivered = await client.get(sent.id)
    assert delivered.status == DELIVERED and delivered.HasField("delivered_at")
    kinds = [k for k, _ in await events_of(client.app)]
    assert kinds == [
        events_pb2.NotificationSent.DESCRIPTOR.full_name,
        events_pb2.NotificationDelivered.DESCRIPTOR.full_name,
    ]

    # Replayed: the same signed bytes again, over gRPC this time: acknowledged, nothing changes.
    after = await fingerprint(client)
    replay = await client.webhook("sendgrid", ok.body, ok.headers)
    assert replay.status == common_pb2.WEBHOOK_STATUS_DUPLICATE
    assert replay.event_count == 1 and not replay.notification_ids
    assert await fingerprint(client) == after

    # A bad signature over gRPC: INVALID_ARGUMENT naming the header; nothing changes.
    tampered = ok.body.replace(b'"delivered"', b'"bounce"')
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.webhook("sendgrid", tampered, ok.headers)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert reason(info.value) == "WEBHOOK_SIGNATURE_INVALID"
    assert violations(info.value)[0][0] == (
        'webhook.headers["x-twilio-email-event-webhook-signature"]'
    )
    assert await fingerprint(client) == after


async def test_sendgrid_bounce_suppresses_and_an_out_of_order_receipt_is_ignored(
    sg_client: Client, sendgrid: SendGridServer
) -> None:
    client = sg_client
    reply = await client.send(send_request(email="bouncy@example.com", user_id=""))
    sent = await client.wait_status(reply.notification.id, pb.NOTIFICATION_STATUS_SENT)
    bounce = await sendgrid.emit(sent.provider_message_id, "bounce")
    assert bounce.status == 200
    bounced = await client.get(sent.id)
    assert (bounced.status, bounced.error_code) == (pb.NOTIFICATION_STATUS_BOUNCED, "hard_bounce")
    [(_, failed)] = [(k, e) for k, e in await events_of(client.app) if "Failed" in k]
    assert failed.status == pb.NOTIFICATION_STATUS_BOUNCED and not failed.dead_lettered
    # A late "delivered" cannot move it back.
    late = await sendgrid.emit(sent.provider_message_id, "delivered")
    assert late.status == 200
    [outcome] = await rows(
        client.app, "SELECT outcome FROM webhook_inbox WHERE event_type = 'delivered'"
    )
    assert outcome["outcome"] == "WEBHOOK_STATUS_IGNORED"
    assert (await client.get(sent.id)).status == pb.NOTIFICATION_STATUS_BOUNCED
    # The address is suppressed now.
    again = await client.send(send_request(email="bouncy@example.com", user_id=""))
    assert again.notification.status == pb.NOTIFICATION_STATUS_SUPPRESSED


async def test_twilio_callbacks_valid_forged_replayed_and_stop(
    client: Client, twilio: TwilioServer
) -> None:
    reply = await client.send(sms_request())
    # The stand-in posts `sent` then `delivered`, signed, to the StatusCallback we gave it.
    delivered = await client.wait_status(reply.notification.id, DELIVERED)
    assert delivered.provider == "twilio" and delivered.provider_message_id.startswith("SM")
    await twilio.idle()
    assert [d.status for d in twilio.deliveries] == [200, 200]
    [sent_cb, delivered_cb] = twilio.deliveries

    before = await fingerprint(client)
    forged = await twilio.emit_status(delivered.provider_message_id, "failed", 30008, forge=True)
    assert forged.status == 403
    # Replayed through gRPC with the exact URL, body and signature: a duplicate.
    replay = await client.webhook(
        "twilio", delivered_cb.body, delivered_cb.headers, url=delivered_cb.url
    )
    assert replay.status == common_pb2.WEBHOOK_STATUS_DUPLICATE
    # The same signature on another URL (someone else's notification) does not verify.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.webhook(
            "twilio", sent_cb.body, sent_cb.headers, url=sent_cb.url.replace("=", "=0")
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert await fingerprint(client) == before
    assert (await client.get(reply.notification.id)).status == DELIVERED

    # The handset texts STOP: the number is suppressed, and Twilio refuses it too (21610).
    stop = await twilio.inbound(PHONE, body="STOP")
    assert stop.status == 200
    blocked = await client.send(sms_request())
    assert blocked.notification.status == pb.NOTIFICATION_STATUS_SUPPRESSED
    assert blocked.notification.error_code == "sms_stop"
    # START lifts it.
    await twilio.inbound(PHONE, body="START")
    again = await client.send(sms_request())
    await client.wait_status(again.notification.id, pb.NOTIFICATION_STATUS_SENT, DELIVERED)


def sms_request() -> pb.SendNotificationRequest:
    return send_request(
        channel=pb.CHANNEL_SMS,
        template_id="ticket_confirmation_sms",
        recipient=pb.Recipient(user_id="buyer-1", phone=PHONE),
    )


async def test_receipts_of_a_provider_not_configured_here_are_refused(client: Client) -> None:
    # This app sends email through smtp alone: it holds no SendGrid key to verify with.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.webhook("sendgrid", b"[]", {})
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert reason(info.value) == "PROVIDER_NOT_CONFIGURED"
