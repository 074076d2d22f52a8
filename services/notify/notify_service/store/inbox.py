"""The receipt inbox, keyed by (provider, provider event id): each receipt is applied once."""

from __future__ import annotations

import uuid

import asyncpg


async def claim(conn: asyncpg.Connection, provider: str, event_id: str, event_type: str) -> bool:
    """Record the event inside the caller's transaction; False when it was seen before (a
    replay: the caller changes nothing). Concurrent deliveries of one event serialise on the
    primary key."""
    inserted = await conn.fetchval(
        "INSERT INTO webhook_inbox (provider, event_id, event_type, outcome) "
        "VALUES ($1, $2, $3, 'PROCESSING') ON CONFLICT DO NOTHING RETURNING true",
        provider,
        event_id,
        event_type[:100],
    )
    return bool(inserted)


async def record(
    conn: asyncpg.Connection,
    provider: str,
    event_id: str,
    outcome: str,
    notification_id: uuid.UUID | None,
) -> None:
    await conn.execute(
        "UPDATE webhook_inbox SET outcome = $3, notification_id = $4 "
        "WHERE provider = $1 AND event_id = $2",
        provider,
        event_id,
        outcome,
        notification_id,
    )


async def purge(conn: asyncpg.Connection, older_than_s: float) -> int:
    tag: str = await conn.execute(
        "DELETE FROM webhook_inbox WHERE received_at < now() - make_interval(secs => $1)",
        older_than_s,
    )
    return int(tag.rsplit(" ", 1)[-1])
