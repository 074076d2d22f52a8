"""Requeue stuck outbox events: failed deliveries sitting in backoff past a threshold.

An event whose delivery failed waits `available_at` (exponential backoff) before its next try;
after a consumer outage has been fixed, an operator or a reconciliation job can make the events
that have been stuck longer than a threshold due at once instead of waiting out their backoff.
Events never attempted are only waiting for a relay, so they are not "stuck" and are left alone;
dead letters are `meshkit.outbox.replay_dead_letters`' business.

    ids = await requeue_stuck(db, older_than_s=900, limit=100)           # due now
    ids = await requeue_stuck(db, older_than_s=900, limit=100, dry_run=True)  # just list them
"""

from __future__ import annotations

import uuid

from meshkit.db import Database

__all__ = ["requeue_stuck"]

_STUCK = """
    SELECT id FROM outbox
    WHERE delivered_at IS NULL AND attempts > 0 AND available_at > now()
      AND created_at < now() - make_interval(secs => $1)
    ORDER BY created_at LIMIT $2
"""


async def requeue_stuck(
    db: Database, *, older_than_s: float, limit: int, dry_run: bool = False
) -> list[uuid.UUID]:
    """Make failed events created more than `older_than_s` ago due now (at most `limit`, oldest
    first); return their ids. With `dry_run`, only list them. Rows a relay holds are skipped."""
    if dry_run:
        rows = await db.fetch(_STUCK, float(older_than_s), limit)
    else:
        rows = await db.fetch(
            f"""
            UPDATE outbox SET available_at = now()
            WHERE id IN ({_STUCK} FOR UPDATE SKIP LOCKED)
            RETURNING id
            """,
            float(older_than_s),
            limit,
        )
    return [row["id"] for row in rows]
