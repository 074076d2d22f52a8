"""Field mappings: a connection's whole set in one versioned row (SetFieldMappings replaces it);
typed `FieldMapping`s out. No row = the provider's defaults (version 0)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import asyncpg

from integration_service.domain.mappings import FieldMapping, from_json, to_json


@dataclass(frozen=True, slots=True)
class StoredMappings:
    mappings: tuple[FieldMapping, ...]
    version: int
    """0 when none was ever stored."""


async def get(
    conn: asyncpg.Connection, connection_id: uuid.UUID, *, lock: bool = False
) -> StoredMappings:
    row = await conn.fetchrow(
        "SELECT version, mappings FROM field_mappings WHERE connection_id = $1"
        + (" FOR UPDATE" if lock else ""),
        connection_id,
    )
    if row is None:
        return StoredMappings((), 0)
    raw = row["mappings"]
    items = json.loads(raw) if isinstance(raw, str) else raw
    return StoredMappings(tuple(from_json(m) for m in items), int(row["version"]))


async def load(conn: asyncpg.Connection, connection_id: uuid.UUID) -> tuple[FieldMapping, ...]:
    """The stored set (empty: the defaults apply), for the sync engine."""
    return (await get(conn, connection_id)).mappings


async def put(
    conn: asyncpg.Connection,
    connection_id: uuid.UUID,
    mappings: tuple[FieldMapping, ...],
    *,
    version: int,
    updated_by: str,
) -> None:
    """Store the set as `version` (the caller read the previous one under lock)."""
    await conn.execute(
        "INSERT INTO field_mappings (connection_id, version, mappings, updated_by) "
        "VALUES ($1, $2, $3::jsonb, $4) ON CONFLICT (connection_id) DO UPDATE SET "
        "version = EXCLUDED.version, mappings = EXCLUDED.mappings, "
        "updated_by = EXCLUDED.updated_by, updated_at = now()",
        connection_id,
        version,
        json.dumps([to_json(m) for m in mappings]),
        updated_by,
    )
