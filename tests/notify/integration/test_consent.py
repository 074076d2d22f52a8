"""Preferences and consent: opt-outs suppress (recorded with the reason, nothing sent), marketing
needs an opt-in, quiet hours in the recipient's time zone defer (the message goes out when they
end), transactional HIGH priority goes through them, the suppression list blocks."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import grpc
import pytest

from meshdev.standins.smtp import SmtpSink
from meshdev.testing.rpc import reason, violations
from tests.notify.integration.support import BUYER, Client, send_request
from tickettoken.notify.v1 import notify_pb2 as pb

SENT = pb.NOTIFICATION_STATUS_SENT
ZONE = "Asia/Kathmandu"  # UTC+05:45: a window computed in UTC would be visibly wrong


def inline(category: int, **fields: object) -> pb.SendNotificationRequest:
    return send_request(
        inline=pb.InlineContent(subject="Hello {{ x }}", body_text="Body {{ x }}"),
        variables={"x": "1"},
        category=category,  # type: ignore[arg-type]
        **fields,
    )


async def test_opt_outs_suppress_and_marketing_needs_an_opt_in(
    client: Client, smtp: SmtpSink
) -> None:
    marketing = await client.send(inline(pb.NOTIFICATION_CATEGORY_MARKETING))
    n = marketing.notification
    assert n.status == pb.NOTIFICATION_STATUS_SUPPRESSED and n.error_code == "not_opted_in"

    await client.set_preferences(
        pb.Preferences(
            user_id=BUYER,
            categories=[
                pb.CategoryPreference(category=pb.NOTIFICATION_CATEGORY_MARKETING, enabled=True),
                pb.CategoryPreference(
                    category=pb.NOTIFICATION_CATEGORY_EVENT_UPDATES,
                    channel=pb.CHANNEL_EMAIL,
                    enabled=False,
                ),
            ],
        )
    )
    opted_in = await client.send(inline(pb.NOTIFICATION_CATEGORY_MARKETING))
    await client.wait_status(opted_in.notification.id, SENT)
    updates = await client.send(inline(pb.NOTIFICATION_CATEGORY_EVENT_UPDATES))
    assert updates.notification.status == pb.NOTIFICATION_STATUS_SUPPRESSED
    assert updates.notification.error_code == "opted_out"

    # The whole email channel off: nothing but transactional.
    await client.set_preferences(
        pb.Preferences(
            user_id=BUYER, channels=[pb.ChannelPreference(channel=pb.CHANNEL_EMAIL, enabled=False)]
        )
    )
    account = await client.send(inline(pb.NOTIFICATION_CATEGORY_ACCOUNT))
    assert account.notification.error_code == "opted_out"
    receipt = await client.send(inline(pb.NOTIFICATION_CATEGORY_TRANSACTIONAL))
    await client.wait_status(receipt.notification.id, SENT)
    await asyncio.sleep(0.3)
    assert smtp.count() == 2  # the opted-in marketing message and the receipt

    # Transactional cannot be turned off.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.set_preferences(
            pb.Preferences(
                user_id=BUYER,
                categories=[
                    pb.CategoryPreference(
                        category=pb.NOTIFICATION_CATEGORY_TRANSACTIONAL, enabled=False
                    )
                ],
            )
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert violations(info.value)[0][0] == "preferences.categories[0].enabled"


async def test_a_buyer_reads_and_sets_only_their_own_preferences(client: Client) -> None:
    mine = await client.stub.GetPreferences(
        pb.GetPreferencesRequest(user_id=BUYER), metadata=client.buyer_md()
    )
    assert mine.preferences.user_id == BUYER
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.GetPreferences(
            pb.GetPreferencesRequest(user_id="someone-else"), metadata=client.buyer_md()
        )
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason(info.value) == "NOT_YOURS"


async def test_quiet_hours_defer_until_they_end_and_high_transactional_goes_through(
    client: Client, smtp: SmtpSink
) -> None:
    # A window that began a minute ago and ends at the next local minute but one: keep at
    # least 10 s of it left for the checks below.
    now = datetime.now(UTC)
    if now.second > 48:
        await asyncio.sleep(61 - now.second)
        now = datetime.now(UTC)
    local = now.astimezone(ZoneInfo(ZONE))
    minute = local.hour * 60 + local.minute
    start, end = (minute - 1) % 1440, (minute + 1) % 1440
    await client.set_preferences(
        pb.Preferences(
            user_id=BUYER,
            quiet_hours=pb.QuietHours(
                enabled=True, start_minute=start, end_minute=end, time_zone=ZONE
            ),
        )
    )
    deferred = await client.send(inline(pb.NOTIFICATION_CATEGORY_EVENT_UPDATES))
    n = deferred.notification
    assert n.status == pb.NOTIFICATION_STATUS_QUEUED and n.deferred_reason == "quiet_hours"
    due = n.next_attempt_at.ToDatetime(tzinfo=UTC)
    local_due = due.astimezone(ZoneInfo(ZONE))
    assert (local_due.hour * 60 + local_due.minute, local_due.second) == (end, 0)

    urgent = await client.send(
        inline(pb.NOTIFICATION_CATEGORY_TRANSACTIONAL, priority=pb.NOTIFICATION_PRIORITY_HIGH)
    )
    await client.wait_status(urgent.notification.id, SENT)
    normal = await client.send(inline(pb.NOTIFICATION_CATEGORY_TRANSACTIONAL))
    assert normal.notification.deferred_reason == "quiet_hours"
    await asyncio.sleep(0.5)
    assert smtp.count() == 1  # only the urgent one, during the quiet hours
    assert (await client.get(n.id)).status == pb.NOTIFICATION_STATUS_QUEUED

    left = (due - datetime.now(UTC)).total_seconds()
    sent = await client.wait_status(n.id, SENT, timeout=left + 15)
    assert sent.sent_at.ToDatetime(tzinfo=UTC) >= due  # never dropped, never early
    await client.wait_status(normal.notification.id, SENT)
    assert smtp.count() == 3


async def test_the_suppression_list_blocks_a_hard_bounced_address(
    client: Client, smtp: SmtpSink
) -> None:
    smtp.refuse_recipients("gone@example.com")
    first = await client.send(send_request(email="gone@example.com", user_id=""))
    bounced = await client.wait_status(first.notification.id, pb.NOTIFICATION_STATUS_BOUNCED)
    assert bounced.error_code == "smtp_550"
    again = await client.send(send_request(email="Gone@Example.com", user_id=""))
    assert again.notification.status == pb.NOTIFICATION_STATUS_SUPPRESSED
    assert again.notification.error_code == "hard_bounce"
    assert smtp.count() == 0
    assert uuid.UUID(again.notification.id)
