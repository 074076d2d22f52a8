"""50 concurrent identical SendNotification calls deliver one message; a dedup key holds across
idempotency keys and callers."""

from __future__ import annotations

import asyncio
import uuid

from meshdev.standins.smtp import SmtpSink
from tests.notify.integration.support import Client, call_retrying, count, send_request
from tickettoken.notify.v1 import notify_pb2

SENT = notify_pb2.NOTIFICATION_STATUS_SENT


async def test_fifty_concurrent_identical_calls_deliver_one_message(
    client: Client, smtp: SmtpSink
) -> None:
    request = send_request(key=str(uuid.uuid4()), dedup_key="payment:pay-50:receipt")
    replies = await asyncio.gather(
        *(call_retrying(lambda: client.send(request)) for _ in range(50))
    )
    ids = {r.notification.id for r in replies}
    assert len(ids) == 1
    [notification_id] = ids
    await client.wait_status(notification_id, SENT)
    await asyncio.sleep(0.5)  # anything else queued would have gone out by now
    assert smtp.count() == 1
    assert await count(client.app, "notifications") == 1


async def test_the_dedup_key_holds_across_idempotency_keys(client: Client, smtp: SmtpSink) -> None:
    requests = [
        send_request(dedup_key="payment:pay-77:receipt", metadata={"attempt": str(i)})
        for i in range(50)
    ]
    replies = await asyncio.gather(*(client.send(r) for r in requests))
    ids = {r.notification.id for r in replies}
    assert len(ids) == 1
    assert sorted(r.duplicate for r in replies) == [False] + [True] * 49
    await client.wait_status(ids.pop(), SENT)
    await asyncio.sleep(0.5)
    assert smtp.count() == 1
    assert await count(client.app, "notifications") == 1
    # The same request again (same idempotency key) replays the first answer byte for byte.
    again = await client.send(requests[0])
    assert again == replies[0]
