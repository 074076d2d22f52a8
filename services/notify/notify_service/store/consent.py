"""What consent needs to know about one destination, in one round trip: its strongest
suppression and its user's preferences (a read across two aggregates, written by their own
modules)."""

from __future__ import annotations

import asyncpg

from notify_service.domain.model import Channel, Preferences, Suppression, SuppressionReason
from notify_service.store import preferences, suppressions


async def of(
    conn: asyncpg.Connection, channel: Channel, destination: str, user_id: str
) -> tuple[Suppression | None, Preferences | None]:
    row = await conn.fetchrow(
        """
        SELECT
            (SELECT reason FROM suppressions
             WHERE channel = $1 AND destination = $2
             ORDER BY array_position($4::text[], reason) LIMIT 1) AS reason,
            p.user_id, p.channels, p.categories, p.quiet_hours, p.updated_at
        FROM (SELECT 1) AS one
        LEFT JOIN preferences p ON p.user_id = $3
        """,
        channel.value,
        suppressions.key(channel, destination),
        user_id or "",
        suppressions.STRONGEST_FIRST,
    )
    assert row is not None
    found = (
        Suppression(channel, destination, SuppressionReason(row["reason"]))
        if row["reason"]
        else None
    )
    prefs = preferences.from_row(row) if row["user_id"] is not None else None
    return found, prefs
