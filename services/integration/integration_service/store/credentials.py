"""Sealed credentials (one row per connection). Writes are conditional: a refresh writes only
with a fence above every fence accepted before; a re-wrap only over the version it read."""

from __future__ import annotations

import uuid

import asyncpg

from integration_service.domain.sealing import Sealed

_COLUMNS = "connection_id, provider, kek_version, wrapped_key, nonce, ciphertext, version, fence"


def _row(row: asyncpg.Record) -> Sealed:
    return Sealed(
        connection_id=row["connection_id"],
        provider=row["provider"],
        kek_version=row["kek_version"],
        wrapped_key=bytes(row["wrapped_key"]),
        nonce=bytes(row["nonce"]),
        ciphertext=bytes(row["ciphertext"]),
        version=row["version"],
        fence=row["fence"],
    )


async def get(conn: asyncpg.Connection, connection_id: uuid.UUID) -> Sealed | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM credentials WHERE connection_id = $1", connection_id
    )
    return _row(row) if row else None


async def put(conn: asyncpg.Connection, sealed: Sealed) -> None:
    """Insert or replace (a new authorization of the connection)."""
    await conn.execute(
        "INSERT INTO credentials (connection_id, provider, kek_version, wrapped_key, nonce, "
        "ciphertext) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (connection_id) DO UPDATE SET "
        "kek_version = EXCLUDED.kek_version, wrapped_key = EXCLUDED.wrapped_key, "
        "nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext, "
        "version = credentials.version + 1, updated_at = now()",
        sealed.connection_id,
        sealed.provider,
        sealed.kek_version,
        sealed.wrapped_key,
        sealed.nonce,
        sealed.ciphertext,
    )


async def put_fenced(conn: asyncpg.Connection, sealed: Sealed, fence: int) -> bool:
    """Replace with a refreshed credential; False when a write with this fence or a newer one
    was accepted already (this writer's lock had expired)."""
    updated = await conn.fetchval(
        "UPDATE credentials SET kek_version = $2, wrapped_key = $3, nonce = $4, ciphertext = $5, "
        "version = version + 1, fence = $6, updated_at = now() "
        "WHERE connection_id = $1 AND fence < $6 RETURNING true",
        sealed.connection_id,
        sealed.kek_version,
        sealed.wrapped_key,
        sealed.nonce,
        sealed.ciphertext,
        fence,
    )
    return bool(updated)


async def fence_write(conn: asyncpg.Connection, connection_id: uuid.UUID, fence: int) -> bool:
    """Take the fence without changing the credential (a refresh that ended the grant)."""
    updated = await conn.fetchval(
        "UPDATE credentials SET fence = $2 WHERE connection_id = $1 AND fence < $2 RETURNING true",
        connection_id,
        fence,
    )
    return bool(updated)


async def rewrap(conn: asyncpg.Connection, sealed: Sealed, *, read_version: int) -> bool:
    """Store a re-wrapped credential if nobody wrote it since it was read at `read_version`."""
    updated = await conn.fetchval(
        "UPDATE credentials SET kek_version = $2, wrapped_key = $3, nonce = $4, ciphertext = $5, "
        "version = version + 1, updated_at = now() WHERE connection_id = $1 AND version = $6 "
        "RETURNING true",
        sealed.connection_id,
        sealed.kek_version,
        sealed.wrapped_key,
        sealed.nonce,
        sealed.ciphertext,
        read_version,
    )
    return bool(updated)


async def not_under(conn: asyncpg.Connection, kek_version: str, *, limit: int) -> list[Sealed]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM credentials WHERE kek_version <> $1 ORDER BY connection_id "
        "LIMIT $2",
        kek_version,
        limit,
    )
    return [_row(r) for r in rows]


async def count_under(conn: asyncpg.Connection, kek_version: str) -> int:
    value = await conn.fetchval(
        "SELECT count(*) FROM credentials WHERE kek_version = $1", kek_version
    )
    return int(value)


async def destroy(conn: asyncpg.Connection, connection_id: uuid.UUID) -> bool:
    """Delete the wrapped data key and the ciphertext: the credential is gone for good."""
    tag: str = await conn.execute("DELETE FROM credentials WHERE connection_id = $1", connection_id)
    return tag.endswith(" 1")


async def audit(
    conn: asyncpg.Connection, connection_id: uuid.UUID, actor: str, request_id: str, purpose: str
) -> None:
    await conn.execute(
        "INSERT INTO credential_audit (connection_id, actor, request_id, purpose) "
        "VALUES ($1, $2, $3, $4)",
        connection_id,
        actor[:200],
        request_id[:200],
        purpose[:100],
    )
