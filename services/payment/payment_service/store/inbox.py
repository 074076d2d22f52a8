"""The provider webhook inbox, keyed by event id: an event is processed exactly once."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg


async def claim(
    conn: asyncpg.Connection,
    event_id: str,
    event_type: str,
    payload: bytes,
    *,
    lock_timeout_ms: int,
) -> datetime | None:
    """Record (or lock) the event's inbox row inside the caller's transaction.

    Returns its processed_at: not None means an earlier delivery already processed it. The row
    lock serialises concurrent deliveries of the same event. The same statement sets the
    transaction's lock_timeout (set_config(..., true) is SET LOCAL; evaluated before the row is
    inserted, so it already bounds this statement's own wait).
    """
    row = await conn.fetchrow(
        """
        WITH cfg AS (SELECT set_config('lock_timeout', $4, true))
        INSERT INTO webhook_inbox (event_id, provider, event_type, payload, attempts)
        SELECT $1, 'stripe', $2, $3, 1 FROM cfg
        ON CONFLICT (event_id) DO UPDATE SET attempts = webhook_inbox.attempts + 1
        RETURNING processed_at
        """,
        event_id,
        event_type,
        payload,
        f"{int(lock_timeout_ms)}ms",
    )
    assert row is not None
    processed: datetime | None = row["processed_at"]
    return processed


async def mark_processed(
    conn: asyncpg.Connection, event_id: str, outcome: str, payment_id: uuid.UUID | None
) -> None:
    await conn.execute(
        "UPDATE webhook_inbox SET processed_at = now(), outcome = $2, payment_id = $3, "
        "last_error = NULL WHERE event_id = $1",
        event_id,
        outcome,
        payment_id,
    )


async def record_failure(
    conn: asyncpg.Connection, event_id: str, event_type: str, payload: bytes, error: str
) -> None:
    """Outside the failed transaction: keep the event and its error for operators."""
    await conn.execute(
        """
        INSERT INTO webhook_inbox (event_id, provider, event_type, payload, attempts, last_error)
        VALUES ($1, 'stripe', $2, $3, 1, $4)
        ON CONFLICT (event_id) DO UPDATE SET last_error = EXCLUDED.last_error
        """,
        event_id,
        event_type,
        payload,
        error[:2000],
    )
