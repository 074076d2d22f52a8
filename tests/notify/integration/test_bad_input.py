"""Bad input is INVALID_ARGUMENT with field violations, and nothing is queued: a missing
template variable, a bad address, an unknown template. A channel without provider is
FAILED_PRECONDITION (CHANNEL_NOT_CONFIGURED), never a silent success."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from meshdev.standins.smtp import SmtpSink
from meshdev.testing.rpc import reason, violations
from tests.notify.integration.support import TICKET_VARS, Client, count, send_request
from tickettoken.notify.v1 import notify_pb2 as pb


async def refused(client: Client, request: pb.SendNotificationRequest) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.send(request)
    return info.value


async def test_bad_requests_queue_nothing(client: Client, smtp: SmtpSink) -> None:
    missing = dict(TICKET_VARS)
    del missing["mint_address"], missing["venue_name"]
    err = await refused(client, send_request(variables=missing))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert reason(err) == "TEMPLATE_VARIABLES_MISSING"
    assert sorted(f for f, _ in violations(err)) == [
        'variables["mint_address"]',
        'variables["venue_name"]',
    ]

    err = await refused(client, send_request(template_id="no_such_template"))
    assert (err.code(), reason(err)) == (grpc.StatusCode.INVALID_ARGUMENT, "TEMPLATE_NOT_FOUND")
    assert violations(err)[0][0] == "template_id"

    # Passes the contract's pattern, fails email-validator (a reserved domain).
    err = await refused(client, send_request(email="ada@example.invalid"))
    assert (err.code(), reason(err)) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_DESTINATION")
    assert violations(err)[0][0] == "recipient.email"

    # Refused by the contract's own rule before the handler: still field violations.
    err = await refused(client, send_request(email="not-an-email"))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert violations(err)[0][0] == "recipient.email"

    sms = pb.Recipient(user_id="u", phone="+1555")  # E.164-shaped, not a number
    err = await refused(
        client,
        send_request(channel=pb.CHANNEL_SMS, template_id="ticket_confirmation_sms", recipient=sms),
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert violations(err)[0][0] in ("recipient.phone",)

    # An email template on the SMS channel, and an SMS without a phone.
    err = await refused(
        client,
        send_request(
            channel=pb.CHANNEL_SMS, recipient=pb.Recipient(user_id="u", phone="+16155550100")
        ),
    )
    assert violations(err)[0][0] == "channel"
    err = await refused(
        client, send_request(channel=pb.CHANNEL_SMS, template_id="ticket_confirmation_sms")
    )
    assert violations(err) == [("recipient.phone", "required for CHANNEL_SMS")]

    # A template that uses an undeclared variable it was not given fails the render.
    err = await refused(
        client,
        send_request(
            inline=pb.InlineContent(subject="Hi {{ nobody }}", body_text="x"),
            category=pb.NOTIFICATION_CATEGORY_ACCOUNT,
            variables={},
        ),
    )
    assert (err.code(), reason(err)) == (grpc.StatusCode.INVALID_ARGUMENT, "TEMPLATE_INVALID")

    # Inline content needs a category: consent depends on it.
    err = await refused(
        client, send_request(inline=pb.InlineContent(subject="Hi", body_text="x"), variables={})
    )
    assert violations(err)[0][0] == "category"

    await asyncio.sleep(0.2)
    assert await count(client.app, "notifications") == 0
    assert await count(client.app, "outbox") == 0
    assert smtp.count() == 0


async def test_push_without_a_provider_is_channel_not_configured(client: Client) -> None:
    err = await refused(
        client,
        send_request(
            channel=pb.CHANNEL_PUSH,
            inline=pb.InlineContent(subject="t", body_text="b"),
            category=pb.NOTIFICATION_CATEGORY_ACCOUNT,
            recipient=pb.Recipient(user_id="u", push_token="tok-123"),
        ),
    )
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert reason(err) == "CHANNEL_NOT_CONFIGURED"
    assert await count(client.app, "notifications") == 0
