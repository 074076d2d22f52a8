"""Connections: rows in, typed `Connection`s out. State changes are conditional UPDATEs that say
whether they applied, so racing replicas decide once."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from integration_service.domain.model import (
    AuthKind,
    Connection,
    ConnectionFilter,
    ConnectionStatus,
    Provider,
)

_COLUMNS = (
    "id, venue_id, provider, auth_kind, status, scopes, external_account_id, "
    "external_account_name, credential_hint, api_base, settings, last_error_code, last_error, "
    "token_expires_at, refresh_expires_at, last_tested_at, last_synced_at, created_by, "
    "created_at, updated_at"
)


def _row(row: asyncpg.Record) -> Connection:
    settings = row["settings"]
    return Connection(
        id=row["id"],
        venue_id=row["venue_id"],
        provider=Provider(row["provider"]),
        auth_kind=AuthKind(row["auth_kind"]),
        status=ConnectionStatus(row["status"]),
        scopes=tuple(row["scopes"]),
        external_account_id=row["external_account_id"],
        external_account_name=row["external_account_name"],
        credential_hint=row["credential_hint"],
        api_base=row["api_base"],
        settings=json.loads(settings) if isinstance(settings, str) else dict(settings or {}),
        last_error_code=row["last_error_code"],
        last_error=row["last_error"],
        token_expires_at=row["token_expires_at"],
        refresh_expires_at=row["refresh_expires_at"],
        last_tested_at=row["last_tested_at"],
        last_synced_at=row["last_synced_at"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def get(
    conn: asyncpg.Connection, connection_id: uuid.UUID, *, lock: bool = False
) -> Connection | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM connections WHERE id = $1" + (" FOR UPDATE" if lock else ""),
        connection_id,
    )
    return _row(row) if row else None


async def find_live(
    conn: asyncpg.Connection, venue_id: str, provider: Provider, account_id: str
) -> Connection | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM connections WHERE venue_id = $1 AND provider = $2 "
        "AND external_account_id = $3 AND status <> 'DISCONNECTED' FOR UPDATE",
        venue_id,
        provider.value,
        account_id,
    )
    return _row(row) if row else None


async def by_account(
    conn: asyncpg.Connection, provider: Provider, account_id: str
) -> list[Connection]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM connections WHERE provider = $1 AND external_account_id = $2 "
        "AND status <> 'DISCONNECTED' ORDER BY created_at, id",
        provider.value,
        account_id,
    )
    return [_row(r) for r in rows]


async def webhook_digest(conn: asyncpg.Connection, connection_id: uuid.UUID) -> bytes | None:
    value = await conn.fetchval(
        "SELECT webhook_secret_digest FROM connections WHERE id = $1 AND status <> 'DISCONNECTED'",
        connection_id,
    )
    return bytes(value) if value is not None else None


async def insert(
    conn: asyncpg.Connection,
    *,
    connection_id: uuid.UUID,
    venue_id: str,
    provider: Provider,
    auth_kind: AuthKind,
    scopes: Sequence[str],
    account_id: str,
    account_name: str,
    credential_hint: str,
    api_base: str,
    settings: dict[str, Any],
    webhook_secret_digest: bytes | None,
    token_expires_at: datetime | None,
    refresh_expires_at: datetime | None,
    refresh_due_at: datetime | None,
    created_by: str,
) -> Connection:
    row = await conn.fetchrow(
        "INSERT INTO connections (id, venue_id, provider, auth_kind, status, scopes, "
        "external_account_id, external_account_name, credential_hint, api_base, settings, "
        "webhook_secret_digest, token_expires_at, refresh_expires_at, refresh_due_at, "
        "created_by) VALUES ($1, $2, $3, $4, 'CONNECTED', $5, $6, $7, $8, $9, $10::jsonb, $11, "
        f"$12, $13, $14, $15) RETURNING {_COLUMNS}",
        connection_id,
        venue_id,
        provider.value,
        auth_kind.value,
        list(scopes),
        account_id,
        account_name,
        credential_hint,
        api_base,
        json.dumps(settings),
        webhook_secret_digest,
        token_expires_at,
        refresh_expires_at,
        refresh_due_at,
        created_by,
    )
    return _row(row)


async def reconnect(
    conn: asyncpg.Connection,
    connection_id: uuid.UUID,
    *,
    scopes: Sequence[str],
    account_name: str,
    credential_hint: str,
    api_base: str,
    token_expires_at: datetime | None,
    refresh_expires_at: datetime | None,
    refresh_due_at: datetime | None,
    webhook_secret_digest: bytes | None = None,
) -> Connection:
    """New credentials for a live connection (authorized again); its state is changed by the
    caller (ConnectionStates.recover)."""
    row = await conn.fetchrow(
        "UPDATE connections SET scopes = $2, external_account_name = $3, "
        "credential_hint = $4, api_base = $5, token_expires_at = $6, refresh_expires_at = $7, "
        "refresh_due_at = $8, webhook_secret_digest = coalesce($9, webhook_secret_digest), "
        f"updated_at = now() WHERE id = $1 RETURNING {_COLUMNS}",
        connection_id,
        list(scopes),
        account_name,
        credential_hint,
        api_base,
        token_expires_at,
        refresh_expires_at,
        refresh_due_at,
        webhook_secret_digest,
    )
    return _row(row)


async def tokens_refreshed(
    conn: asyncpg.Connection,
    connection_id: uuid.UUID,
    *,
    token_expires_at: datetime | None,
    refresh_expires_at: datetime | None,
    refresh_due_at: datetime | None,
) -> Connection:
    row = await conn.fetchrow(
        "UPDATE connections SET token_expires_at = $2, refresh_expires_at = $3, "
        "refresh_due_at = $4, updated_at = now() WHERE id = $1 "
        f"RETURNING {_COLUMNS}",
        connection_id,
        token_expires_at,
        refresh_expires_at,
        refresh_due_at,
    )
    return _row(row)


async def set_status(
    conn: asyncpg.Connection,
    connection_id: uuid.UUID,
    status: ConnectionStatus,
    *,
    from_statuses: Sequence[ConnectionStatus],
    error_code: str = "",
    error: str = "",
    tested: bool = False,
) -> Connection | None:
    """Move to `status` from one of `from_statuses`; None when the row was in none of them."""
    row = await conn.fetchrow(
        "UPDATE connections SET status = $2, last_error_code = $3, last_error = $4, "
        "refresh_due_at = CASE WHEN $2 = 'CONNECTED' THEN refresh_due_at ELSE NULL END, "
        "last_tested_at = CASE WHEN $6 THEN now() ELSE last_tested_at END, updated_at = now() "
        f"WHERE id = $1 AND status = ANY($5::text[]) RETURNING {_COLUMNS}",
        connection_id,
        status.value,
        error_code[:100],
        error[:500],
        [s.value for s in from_statuses],
        tested,
    )
    return _row(row) if row else None


async def touch_tested(conn: asyncpg.Connection, connection_id: uuid.UUID) -> Connection:
    row = await conn.fetchrow(
        f"UPDATE connections SET last_tested_at = now() WHERE id = $1 RETURNING {_COLUMNS}",
        connection_id,
    )
    return _row(row)


async def find(
    conn: asyncpg.Connection,
    flt: ConnectionFilter,
    *,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[Connection]:
    """Oldest first, keyset-paged on (created_at, id)."""
    clauses: list[str] = []
    args: list[Any] = []
    if flt.venue_ids:
        args.append(list(flt.venue_ids))
        clauses.append(f"venue_id = ANY(${len(args)}::text[])")
    if flt.provider is not None:
        args.append(flt.provider.value)
        clauses.append(f"provider = ${len(args)}")
    if flt.statuses:
        args.append([s.value for s in flt.statuses])
        clauses.append(f"status = ANY(${len(args)}::text[])")
    if after is not None:
        args += [after[0], after[1]]
        clauses.append(f"(created_at, id) > (${len(args) - 1}, ${len(args)})")
    args.append(limit)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM connections {where} ORDER BY created_at, id LIMIT ${len(args)}",
        *args,
    )
    return [_row(r) for r in rows]


async def due_for_refresh(conn: asyncpg.Connection, *, limit: int) -> list[uuid.UUID]:
    rows = await conn.fetch(
        "SELECT id FROM connections WHERE status = 'CONNECTED' AND refresh_due_at <= now() "
        "ORDER BY refresh_due_at LIMIT $1",
        limit,
    )
    return [r["id"] for r in rows]
