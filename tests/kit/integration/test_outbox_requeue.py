"""meshkit.outbox.requeue_stuck: failed events stuck in backoff are made due; others are not."""

from __future__ import annotations

import uuid

from google.protobuf import wrappers_pb2

from meshkit.db import Database
from meshkit.outbox import publish, requeue_stuck


async def _events(db: Database, n: int) -> list[uuid.UUID]:
    async with db.transaction() as conn:
        return [
            await publish(conn, "kit.test", wrappers_pb2.StringValue(value=str(i)))
            for i in range(n)
        ]


async def test_only_failed_events_in_backoff_past_the_threshold_are_requeued(
    database: Database,
) -> None:
    stuck, fresh_failure, never_tried, delivered = await _events(database, 4)
    await database.execute(
        "UPDATE outbox SET attempts = 3, available_at = now() + interval '1 hour', "
        "created_at = now() - interval '2 hours' WHERE id = $1",
        stuck,
    )
    await database.execute(
        "UPDATE outbox SET attempts = 1, available_at = now() + interval '1 hour' WHERE id = $1",
        fresh_failure,
    )
    await database.execute(
        "UPDATE outbox SET created_at = now() - interval '2 hours' WHERE id = $1", never_tried
    )
    await database.execute(
        "UPDATE outbox SET attempts = 1, delivered_at = now(), "
        "created_at = now() - interval '2 hours', available_at = now() + interval '1 hour' "
        "WHERE id = $1",
        delivered,
    )

    assert await requeue_stuck(database, older_than_s=60, limit=10, dry_run=True) == [stuck]
    due = await database.fetch("SELECT id FROM outbox WHERE available_at <= now()")
    assert stuck not in {r["id"] for r in due}  # a dry run changes nothing

    assert await requeue_stuck(database, older_than_s=60, limit=10) == [stuck]
    due = {
        r["id"] for r in await database.fetch("SELECT id FROM outbox WHERE available_at <= now()")
    }
    assert stuck in due and fresh_failure not in due
    assert await requeue_stuck(database, older_than_s=60, limit=10) == []  # nothing left
