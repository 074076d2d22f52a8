"""The webhook inbox, keyed by (provider, provider event id): each event is handled once, and
recorded only in the transaction that handled it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg


async def claim(
    conn: asyncpg.Connection,
    provider: str,
    event_id: str,
    event_type: str,
    outcome: str,
    connection_ids: Sequence[uuid.UUID],
) -> bool:
    """Record the event inside the caller's transaction; False when it was handled before (a
    replay). Concurrent deliveries of one event serialise on the primary key."""
    inserted = await conn.fetchval(
        "INSERT INTO webhook_inbox (provider, event_id, event_type, outcome, connection_ids) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING true",
        provider,
        event_id[:200],
        event_type[:100],
        outcome,
        list(connection_ids),
    )
    return bool(inserted)


async def purge(conn: asyncpg.Connection, older_than_s: float) -> int:
    tag: str = await conn.execute(
        "DELETE FROM webhook_inbox WHERE received_at < now() - make_interval(secs => $1)",
        older_than_s,
    )
    return int(tag.rsplit(" ", 1)[-1])
