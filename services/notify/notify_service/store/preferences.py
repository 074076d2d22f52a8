"""Users' notification preferences, one row per user (absent = the defaults)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg

from notify_service.domain.model import (
    Category,
    CategoryPreference,
    Channel,
    ChannelPreference,
    Preferences,
    QuietHours,
)


def _load(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def from_row(row: asyncpg.Record) -> Preferences:
    quiet = _load(row["quiet_hours"]) or {}
    return Preferences(
        user_id=row["user_id"],
        channels=tuple(
            ChannelPreference(Channel(c["channel"]), bool(c["enabled"]))
            for c in _load(row["channels"])
        ),
        categories=tuple(
            CategoryPreference(
                Category(c["category"]),
                Channel(c["channel"]) if c.get("channel") else None,
                bool(c["enabled"]),
            )
            for c in _load(row["categories"])
        ),
        quiet_hours=QuietHours(
            enabled=bool(quiet.get("enabled", False)),
            start_minute=int(quiet.get("start_minute", 0)),
            end_minute=int(quiet.get("end_minute", 0)),
            time_zone=str(quiet.get("time_zone", "")),
        ),
        updated_at=row["updated_at"],
    )


async def get(conn: asyncpg.Connection, user_id: str) -> Preferences | None:
    row = await conn.fetchrow("SELECT * FROM preferences WHERE user_id = $1", user_id)
    return None if row is None else from_row(row)


async def get_many(conn: asyncpg.Connection, user_ids: Sequence[str]) -> dict[str, Preferences]:
    ids = sorted({u for u in user_ids if u})
    if not ids:
        return {}
    rows = await conn.fetch("SELECT * FROM preferences WHERE user_id = ANY($1::text[])", ids)
    return {r["user_id"]: from_row(r) for r in rows}


async def put(conn: asyncpg.Connection, p: Preferences) -> Preferences:
    row = await conn.fetchrow(
        """
        INSERT INTO preferences (user_id, channels, categories, quiet_hours, updated_at)
        VALUES ($1, $2::jsonb, $3::jsonb, $4::jsonb, now())
        ON CONFLICT (user_id) DO UPDATE SET channels = EXCLUDED.channels,
            categories = EXCLUDED.categories, quiet_hours = EXCLUDED.quiet_hours,
            updated_at = now()
        RETURNING *
        """,
        p.user_id,
        json.dumps([{"channel": c.channel.value, "enabled": c.enabled} for c in p.channels]),
        json.dumps(
            [
                {
                    "category": c.category.value,
                    "channel": c.channel.value if c.channel else "",
                    "enabled": c.enabled,
                }
                for c in p.categories
            ]
        ),
        json.dumps(
            {
                "enabled": p.quiet_hours.enabled,
                "start_minute": p.quiet_hours.start_minute,
                "end_minute": p.quiet_hours.end_minute,
                "time_zone": p.quiet_hours.time_zone,
            }
        ),
    )
    assert row is not None
    return from_row(row)
