"""Business deduplication keys: one notification per key within the window (taken together
with the notification's insert, store/notifications.py); expired keys are purged."""

from __future__ import annotations

import asyncpg


async def purge_expired(conn: asyncpg.Connection) -> int:
    tag: str = await conn.execute("DELETE FROM dedup_keys WHERE expires_at < now()")
    return int(tag.rsplit(" ", 1)[-1])
