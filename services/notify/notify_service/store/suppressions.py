"""The suppression list: addresses fed by bounces, complaints, SMS STOP and guests' unsubscribes."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from notify_service.domain.model import Channel, Suppression, SuppressionReason

# Strongest first: a reason that blocks transactional messages wins over one that does not.
STRONGEST_FIRST = [r.value for r in SuppressionReason if r.blocks_transactional] + [
    r.value for r in SuppressionReason if not r.blocks_transactional
]


def key(channel: Channel, destination: str) -> str:
    """How an address is keyed: email addresses case-insensitively (mailbox providers treat
    `Ada@` and `ada@` as one; a bounce for one must block the other)."""
    return destination.lower() if channel is Channel.EMAIL else destination


def _from(row: asyncpg.Record) -> Suppression:
    return Suppression(
        Channel(row["channel"]), row["destination"], SuppressionReason(row["reason"]),
        row["created_at"],
    )  # fmt: skip


async def find(
    conn: asyncpg.Connection, channel: Channel, destinations: Sequence[str]
) -> dict[str, Suppression]:
    """The strongest suppression of each listed destination that has one, by `key()`."""
    if not destinations:
        return {}
    keys = {key(channel, d) for d in destinations}
    rows = await conn.fetch(
        """
        SELECT DISTINCT ON (destination) channel, destination, reason, created_at
        FROM suppressions
        WHERE channel = $1 AND destination = ANY($2::text[])
        ORDER BY destination, array_position($3::text[], reason)
        """,
        channel.value,
        sorted(keys),
        STRONGEST_FIRST,
    )
    return {r["destination"]: _from(r) for r in rows}


async def add(
    conn: asyncpg.Connection,
    channel: Channel,
    destination: str,
    reason: SuppressionReason,
    source: str,
) -> bool:
    """Add an entry; False when it was there already."""
    tag: str = await conn.execute(
        "INSERT INTO suppressions (channel, destination, reason, source) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT DO NOTHING",
        channel.value,
        key(channel, destination),
        reason.value,
        source,
    )
    return tag.endswith(" 1")


async def remove(
    conn: asyncpg.Connection, channel: Channel, destination: str, reason: SuppressionReason
) -> bool:
    tag: str = await conn.execute(
        "DELETE FROM suppressions WHERE channel = $1 AND destination = $2 AND reason = $3",
        channel.value,
        key(channel, destination),
        reason.value,
    )
    return tag.endswith(" 1")
