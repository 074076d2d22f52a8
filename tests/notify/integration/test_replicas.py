"""Several workers in several replicas share one queue (SKIP LOCKED claims with leases): every
notification is sent exactly once."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

from meshdev.standins.smtp import SmtpSink
from tests.notify.integration.support import Start, count, rows, send_request


async def test_two_replicas_with_four_workers_send_each_notification_once(
    start_notify: Start, connect: object, smtp: SmtpSink
) -> None:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    first = await start_notify(db_schema=schema, notify_workers=2, notify_worker_batch=7)
    second = await start_notify(db_schema=schema, notify_workers=2, notify_worker_batch=7)
    async with connect(first) as a, connect(second) as b:  # type: ignore[operator]
        clients = [a, b]
        replies = await asyncio.gather(
            *(clients[i % 2].send(send_request(user_id=f"u-{i}")) for i in range(120))
        )
    ids = {r.notification.id for r in replies}
    kept = await smtp.wait_for(120, timeout=30)
    await asyncio.sleep(0.5)
    per_notification = Counter(str(m.message["X-Notification-Id"]) for m in smtp.messages())
    assert set(per_notification) == ids
    assert set(per_notification.values()) == {1} and len(kept) == 120
    sent = await rows(first, "SELECT count(*) AS n FROM notifications WHERE status = 'SENT'")
    assert sent[0]["n"] == 120 and await count(first, "outbox") == 120
